"""`python -m prune_ofa_jax.bench --config.suite=input`: the pre-training input figures.

  prepare_tokens_per_s          Beam prepare (DirectRunner, 2 worker processes) of the shared
                                corpus, tokens per wall second, start-up included
  prepare_speedup_vs_in_memory  that over the in-memory tokenisation of the same text (one
                                process, TokenizedCorpus.from_sources), same run
  first_batch_s_200m            a fresh process: PreparedDataset + Grain iterator (2 workers)
                                + first batch of 256 x 128, on a 200M-token prepared corpus
  first_batch_ratio_200m_vs_20m the same over the 20M-token corpus (peak RSS of both beside)
  input_seq_per_s_128 / _512    steady-state rows/s of the Grain stream, batch 256, 2 workers
  loop_overlap_ratio            wall time per step of the loop's input pattern (train/feed.py:
                                take, dispatch, read metrics one step late, prefetch) over T,
                                with a step that sleeps T on the device and input <= T

The big corpora are synthetic (random ids, realistic sentence/document lengths), written
straight to shards in the prepared format; the figures measure reading, not tokenising.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from prune_ofa_jax.bench import core, machine
from prune_ofa_jax.data import prepare, pretraining, records, stream, text, tokenization
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.train import feed as feed_lib

SHARED_SOURCE = "text:wikitext2/*.txt,text_gutenberg_nltk/*.txt,text_state_union/*.txt"
FIGURES = ("prepare_tokens_per_s", "prepare_speedup_vs_in_memory", "first_batch_s_200m",
           "first_batch_ratio_200m_vs_20m", "input_seq_per_s_128", "input_seq_per_s_512",
           "loop_overlap_ratio")


def _figure(value, target, direction, note, **extra) -> dict:
    met = value >= target if direction == ">=" else value <= target
    return {"value": value, "target": target, "direction": direction, "met": bool(met),
            "note": note, **extra}


def _prepare_figures(tmp: pathlib.Path, log) -> dict:
    tok = tokenization.load_tokenizer(None)
    t0 = time.perf_counter()
    corpus = pretraining.TokenizedCorpus.from_sources(text.shared_corpus(), tok, progress=False)
    mem_s = time.perf_counter() - t0
    base = corpus.num_tokens / mem_s
    log(f"in-memory tokenisation: {corpus.num_tokens:,} tokens in {mem_s:.1f} s")
    wall, tokens = _prepare(SHARED_SOURCE, tmp / "shared")
    log(f"Beam prepare: {tokens:,} tokens in {wall:.1f} s")
    wall4, tokens4 = _prepare(",".join([SHARED_SOURCE] + [SHARED_SOURCE[5:]] * 3), tmp / "x4")
    marginal = (tokens4 - tokens) / max(wall4 - wall, 1e-9)
    log(f"Beam prepare x4: {tokens4:,} tokens in {wall4:.1f} s; {marginal:,.0f} tokens/s "
        "past the fixed start-up")
    rate = tokens / wall
    return {
        "prepare_tokens_per_s": _figure(
            rate, 1.7 * 0.69e6, ">=", "Beam DirectRunner, 2 worker processes, wall time of "
            "the whole command (Beam and worker start-up included) on the shared corpus; "
            "target 1.7 x the issue's 0.69M tokens/s. marginal_tokens_per_s: the same text "
            "4 times over, (tokens_x4 - tokens) / (wall_x4 - wall), i.e. past the start-up",
            wall_s=wall, tokens=tokens, wall_x4_s=wall4, tokens_x4=tokens4,
            marginal_tokens_per_s=marginal),
        "prepare_speedup_vs_in_memory": _figure(
            rate / base, 1.7, ">=", "over TokenizedCorpus.from_sources of the same text in "
            "one process, this run", in_memory_tokens_per_s=base, in_memory_s=mem_s,
            marginal_speedup=marginal / base),
    }


def _prepare(source: str, out: pathlib.Path):
    """(wall seconds, tokens) of the prepare command in a fresh process."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "prune_ofa_jax.data.prepare", "--source", source,
                    "--out", str(out), "--seq_len", "128"], check=True, capture_output=True)
    return time.perf_counter() - t0, records.load_manifest(out)["num_tokens"]


def write_synthetic(out: pathlib.Path, num_tokens: int, seq_len: int, shards: int = 8,
                    seed: int = 0) -> dict:
    """A prepared corpus of random ids (sentences of 4-40 tokens, documents of 2-60)."""
    import array_record.python.array_record_module as ar  # pylint: disable=import-outside-toplevel
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_shard, infos, doc = num_tokens // shards, [], 0
    for s in range(shards):
        name = records.shard_name("train", s, shards)
        writer = ar.ArrayRecordWriter(str(out / name), records.WRITER_OPTIONS)
        n_rec = n_tok = 0
        while n_tok < per_shard:
            lengths = rng.integers(4, 41, rng.integers(2, 61)).astype(np.int32)
            ids = rng.integers(1000, 30000, int(lengths.sum())).astype(np.int32)
            starts = np.concatenate([[0], np.cumsum(lengths)])
            for k, (a, b) in enumerate(prepare.chunk_document(lengths, seq_len - 3)):
                writer.write(records.encode(doc, k, lengths[a:b], ids[starts[a]:starts[b]]))
                n_rec += 1
            n_tok += int(lengths.sum())
            doc += 1
        writer.close()
        infos.append({"name": name, "split": "train", "records": n_rec, "documents": 0,
                      "sentences": 0, "tokens": n_tok})
    tok = tokenization.load_tokenizer(None)
    manifest = {"format": records.FORMAT, "tokenizer": "default (MiniLM)", "seq_len": seq_len,
                "tokenizer_sha256": records.tokenizer_sha256(tok), "source": "synthetic",
                "num_tokens": sum(i["tokens"] for i in infos),
                "num_records": sum(i["records"] for i in infos), "shards": infos}
    (out / records.MANIFEST).write_text(json.dumps(manifest))
    return manifest


_FIRST_BATCH = """
import json, resource, sys, time
from prune_ofa_jax.data import stream, tokenization
tok = tokenization.load_tokenizer(None)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
ds = stream.PreparedDataset(sys.argv[1], tok, max_len=128, batch_size=256, seed=0)
it = ds.iterator(worker_count=int(sys.argv[2]))
batch = next(it)
t = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
it.close()
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"first_batch_s": t, "rss_mb": rss / 1024, "rss_before_mb": rss0 / 1024,
                  "worker_rss_mb": kids / 1024, "rows": int(batch["input_ids"].shape[0])}))
"""


def _first_batch(directory: pathlib.Path, workers: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
        str(pathlib.Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", _FIRST_BATCH, str(directory), str(workers)],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _first_batch_figures(bc, tmp: pathlib.Path, log) -> dict:
    small = tmp / "syn_small"
    large = tmp / "syn_large"
    t0 = time.perf_counter()
    write_synthetic(small, int(bc.input.small_tokens), 128)
    write_synthetic(large, int(bc.input.large_tokens), 128)
    log(f"synthetic corpora written in {time.perf_counter() - t0:.0f} s")
    a = _first_batch(small, bc.input.worker_count)
    b = _first_batch(large, bc.input.worker_count)
    log(f"first batch: {a['first_batch_s']:.2f} s (20M), {b['first_batch_s']:.2f} s (200M)")
    growth = b["rss_mb"] - a["rss_mb"]
    return {
        "first_batch_s_200m": _figure(
            b["first_batch_s"], 10.0, "<=", "fresh process, after imports: dataset + Grain "
            "iterator (worker start included) + first batch of 256 x 128",
            tokens=int(bc.input.large_tokens), rss_mb=b["rss_mb"],
            worker_rss_mb=b["worker_rss_mb"]),
        "first_batch_ratio_200m_vs_20m": _figure(
            b["first_batch_s"] / a["first_batch_s"], 1.2, "<=",
            "time to first batch, 200M over 20M tokens; peak RSS growth (main process) "
            "target <= 200 MB", first_batch_s_20m=a["first_batch_s"],
            rss_growth_mb=growth, rss_growth_met=bool(growth <= 200),
            worker_rss_growth_mb=b["worker_rss_mb"] - a["worker_rss_mb"]),
    }


def _throughput(directory: pathlib.Path, seq_len: int, bc) -> float:
    ds = stream.PreparedDataset(directory, tokenization.load_tokenizer(None), max_len=seq_len,
                                batch_size=bc.input.batch_size, seed=0)
    it = ds.iterator(worker_count=bc.input.worker_count, prefetch=4)
    for _ in range(bc.input.warmup_batches):
        next(it)
    t0 = time.perf_counter()
    for _ in range(bc.input.batches):
        next(it)
    rate = bc.input.batches * bc.input.batch_size / (time.perf_counter() - t0)
    it.close()
    return rate


def _throughput_figures(bc, tmp: pathlib.Path, log) -> dict:
    long = tmp / "syn_512"
    write_synthetic(long, int(bc.input.small_tokens), 512)
    r128 = _throughput(tmp / "syn_small", 128, bc)
    r512 = _throughput(long, 512, bc)
    log(f"input: {r128:,.0f} rows/s at 128, {r512:,.0f} at 512")
    note = (f"Grain stream, batch {bc.input.batch_size}, {bc.input.worker_count} worker "
            "processes, after warm-up; NSP pairing + packing + masking per batch")
    return {"input_seq_per_s_128": _figure(r128, 25000.0, ">=", note),
            "input_seq_per_s_512": _figure(r512, 7000.0, ">=", note), "_r128": r128}


def _overlap_figure(bc, tmp: pathlib.Path, r128: float, log) -> dict:
    """The loop's input pattern against a step that holds the device for T."""
    input_s = bc.input.batch_size / r128
    T = max(bc.input.overlap_factor * input_s, bc.input.min_step_s)

    def device_time(x):
        time.sleep(T)
        return x

    @jax.jit
    def step(state, batch):
        s = state + batch["input_ids"][0, 0].astype(jnp.float32) * 0
        s = jax.pure_callback(device_time, jax.ShapeDtypeStruct((), jnp.float32), s)
        return s, {"loss": s * 0.0}

    mesh = mesh_lib.make_mesh(1, 1, 1, devices=jax.devices("cpu")[:1])
    ds = stream.PreparedDataset(tmp / "syn_small", tokenization.load_tokenizer(None),
                                max_len=128, batch_size=bc.input.batch_size, seed=1)
    feed = feed_lib.Feed(ds.iterator(worker_count=bc.input.worker_count), mesh, accum=None)
    state, pending = jnp.zeros(()), None
    for k in range(bc.input.overlap_steps + 3):
        if k == 3:  # after compilation and the workers' start
            float(pending["loss"])
            t0 = time.perf_counter()
        batch = feed.take()
        state, metrics = step(state, batch)
        if pending is not None:
            float(pending["loss"])  # the previous step's metrics, as loop._LateCheck
        pending = metrics
        feed.prefetch()
    float(pending["loss"])
    per_step = (time.perf_counter() - t0) / bc.input.overlap_steps
    feed.close()
    log(f"loop: {per_step * 1e3:.1f} ms per step with T = {T * 1e3:.1f} ms, "
        f"input {input_s * 1e3:.1f} ms")
    return _figure(per_step / T, 1.1, "<=", "wall per step / T; T = device time emulated by "
                   "a jitted step that sleeps in a host callback, input = the Grain stream at "
                   "256 x 128 (its measured time per batch <= T)", step_s=T, input_s=input_s,
                   wall_per_step_s=per_step)


def table(figs: dict) -> str:
    rows = [("figure", "value", "target", "met")]
    rows += [(k, f"{f['value']:,.3f}", f"{f['direction']} {f['target']:,}", str(f["met"]))
             for k, f in figs.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def run(bc, out_dir: str, log=print) -> dict:
    """The input suite; writes `<out_dir>/bench.json` and returns its content."""
    t_start = time.perf_counter()
    info = machine.info()
    with tempfile.TemporaryDirectory(dir=bc.input.tmp_dir or None) as tmp:
        tmp = pathlib.Path(tmp)
        figs = _prepare_figures(tmp, log)
        figs.update(_first_batch_figures(bc, tmp, log))
        figs.update(_throughput_figures(bc, tmp, log))
        figs["loop_overlap_ratio"] = _overlap_figure(bc, tmp, figs.pop("_r128"), log)
    info["load_avg_end"] = list(os.getloadavg())
    result = {"machine": info, "config": bc.to_dict(), "warnings": core.busy_warnings(info),
              "figures": {k: figs[k] for k in FIGURES}, "steps": {},
              "wall_s": {"total": time.perf_counter() - t_start}}
    return machine.write(out_dir, "bench.json", result, table(result["figures"]) + "".join(
        "\nWARNING: " + w for w in result["warnings"]), result["wall_s"]["total"], log)
