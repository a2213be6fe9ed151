"""Latency, measured one way everywhere: the inference bench (`bench --config.suite=inference`),
the compression study and AutoTinyBERT's latency table all call `measure`.

How it measures. Every model variant gets its own worker process
(runtime/latency_worker.py: one runtime, one model, nothing else imported), started with the
same intra-op thread count, 1 inter-op thread and OMP/MKL threads set to match. The workers
load concurrently; then, per batch size, each worker makes `warmup` untimed calls, and the
parent runs `repeats` rounds: in each round every worker times one call (`calls` calls),
one worker at a time, in a fixed order that is reversed every other round (A B C, C B A, ...),
so slow drifts of a shared machine hit every variant alike and no variant always follows the
same neighbour. The inputs are the same for every worker (random token ids seeded by
`seed`, a full attention mask, token type 0).

Interface (for a new bench row or study: build the variants, then one call):

    variants = [latency.onnx_variant("ort_fp32", params, mcfg, tmp / "fp32.onnx"),
                latency.onnx_variant("ort_int8", params, mcfg, tmp / "int8.onnx",
                                     int8=True, quant=quant),
                latency.torch_variant("torch_fp32", params, mcfg, "cls", tmp / "hf"),
                latency.Variant("compact_fp32", "ort", "/any/model.onnx")]
    res = latency.measure(variants, batch_sizes=(1, 32), seq_len=128,
                          settings=latency.Settings(threads=2, warmup=2, repeats=20))
    res["batches"]["32"]["ort_int8"]["median_ms"]
    latency.speedup(res["batches"]["32"], fast="ort_int8", slow="ort_fp32")["ratio"]

`Variant(name, runtime, path)`: runtime "ort" (an .onnx file with inputs among input_ids,
attention_mask, token_type_ids) or "torch" (a Hugging Face model dir; the class is
config.json's `architectures[0]`; a dir with config.json and no weights is timed with a
seeded random init, which costs the same as trained weights).

`measure(...)` returns {"settings": the Settings as a dict, "seq_len",
"workers": {name: {"pid", "runtime", "path", "load_s", "threads"}},
"batches": {str(batch): {name: stats}}}, each stats: median_ms (= p50_ms), p10_ms, p90_ms,
p95_ms, mean_ms, min_ms, max_ms, median_ci95_ms ([lo, hi], the distribution-free 95 %
interval of the median from order statistics; None under 6 calls), cpu_median_ms (the
worker's process CPU time per call), seq_per_s (batch / median), calls, rounds, times_ms
(per timed call, in round order).
`Pool(threads)`: worker processes reused across `measure` calls (`pool=`), for a table of
many models (AutoTinyBERT's): each call still runs each variant in a process of its own.
`ratio(batch_result, num, den)`: median(num) / median(den), the median and p10/p90 of the
per-round ratios (each round's two calls ran back to back) and the number of rounds;
`speedup(batch_result, fast, slow)` = ratio(slow, fast).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
from typing import Optional, Sequence

import numpy as np

from prune_ofa_jax.convert import hf
from prune_ofa_jax.runtime import onnx_export

RUNTIMES = ("ort", "torch")
WORKER = "prune_ofa_jax.runtime.latency_worker"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One model in one runtime: `path` is an .onnx file (ort) or an HF model dir (torch)."""
    name: str
    runtime: str
    path: str

    def __post_init__(self):
        if self.runtime not in RUNTIMES:
            raise ValueError(f"latency variant {self.name!r}: runtime {self.runtime!r} is not "
                             f"one of {RUNTIMES}")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The same for every variant of a measurement."""
    threads: int = 0          # intra-op threads of every runtime; 0 = all cores
    warmup: int = 2           # untimed calls per variant and batch size
    repeats: int = 20         # timed rounds per batch size (one call per variant each)
    calls: int = 1            # timed calls per variant and round
    min_repeats: int = 5      # with budget_s: at least this many rounds (at most `repeats`)
    budget_s: float = 0.0     # > 0: fewer rounds (>= min_repeats) when `repeats` would take
    #                           longer than this per batch size (estimated from the warm-up)
    seed: int = 0             # the inputs' token ids
    vocab_hi: int = 20000     # token ids drawn from [1000, vocab_hi)

    def resolved_threads(self) -> int:
        return self.threads or os.cpu_count() or 1


# --- variants -------------------------------------------------------------------------------

def onnx_variant(name: str, params, model_config, path, int8: bool = False,
                 quant: Optional[dict] = None) -> Variant:
    """The classifier exported to ONNX at `path` (runtime/onnx_export.py), as a variant."""
    return Variant(name, "ort", str(onnx_export.export(params, model_config, path, int8=int8,
                                                       quant=quant)))


def torch_variant(name: str, params, model_config, task: str, out_dir) -> Variant:
    """The model exported as an HF PyTorch dir at `out_dir` (convert/hf.py), as a variant."""
    return Variant(name, "torch", str(hf.export_hf(params, model_config, task, out_dir,
                                                   overwrite=True)))


def torch_config_variant(name: str, hf_config, out_dir) -> Variant:
    """A transformers config alone (config.json in `out_dir`): timed with random weights."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_config.save_pretrained(str(out))
    return Variant(name, "torch", str(out))


# --- workers --------------------------------------------------------------------------------

class WorkerError(RuntimeError):
    """A worker failed or died; the message ends with its stderr's last lines."""


class Worker:
    """A worker process (runtime/latency_worker.py) serving one variant."""

    def __init__(self, threads: int):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   PYTHONPATH=os.pathsep.join(filter(None, [
                       str(pathlib.Path(__file__).resolve().parents[2]),
                       os.environ.get("PYTHONPATH", "")])))
        self.threads = threads
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, "-m", WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, env=env,
                                     text=True, bufsize=1)
        self.pid = self.read()["pid"]

    def read(self) -> dict:
        """The next reply (WorkerError when it failed or the worker died)."""
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"latency worker {self.proc.pid} exited "
                              f"({self.proc.poll()}): {self._tail()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise WorkerError(f"latency worker {self.proc.pid}: {reply.get('error')}; "
                              f"{self._tail()}")
        return reply

    def _tail(self) -> str:
        self.stderr.seek(0)
        return " | ".join(self.stderr.read().strip().splitlines()[-5:])

    def send(self, **req) -> None:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()

    def request(self, **req) -> dict:
        self.send(**req)
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(op="exit")
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


# --- statistics -----------------------------------------------------------------------------

def median_ci(values: Sequence[float], confidence: float = 0.95) -> Optional[list]:
    """[lo, hi]: the order statistics x_(j), x_(n+1-j) (1-based) with the largest j whose
    interval covers the median with probability >= `confidence` under any continuous
    distribution (Binomial(n, 1/2) tails); None when even [min, max] covers less."""
    x, n = sorted(values), len(values)
    tail, j, cdf = (1 - confidence) / 2, 0, 0.0
    for k in range(n):  # P(B <= k), B ~ Binomial(n, 1/2)
        cdf += math.comb(n, k) / 2 ** n
        if cdf > tail:
            break
        j = k + 1
    return None if j == 0 else [x[j - 1], x[n - j]]


def stats(times_s: Sequence[float], cpu_s: Sequence[float], batch: int, rounds: int) -> dict:
    ms = [1e3 * t for t in times_s]
    med = statistics.median(ms)
    ci = median_ci(ms)
    return {"median_ms": med, "p50_ms": med,
            **{f"p{q}_ms": float(np.percentile(ms, q)) for q in (10, 90, 95)},
            "mean_ms": statistics.mean(ms), "min_ms": min(ms), "max_ms": max(ms),
            "median_ci95_ms": ci, "cpu_median_ms": 1e3 * statistics.median(cpu_s),
            "seq_per_s": batch / (med / 1e3), "calls": len(ms), "rounds": rounds,
            "times_ms": [round(t, 4) for t in ms]}


def _per_round(res: dict) -> list:
    ms, rounds = res["times_ms"], res["rounds"]
    k = len(ms) // rounds
    return [statistics.median(ms[i * k:(i + 1) * k]) for i in range(rounds)]


def ratio(batch_result: dict, num: str, den: str) -> dict:
    """median(num) / median(den), and the per-round ratios' median and p10/p90."""
    a, b = batch_result[num], batch_result[den]
    per = [x / y for x, y in zip(_per_round(a), _per_round(b))]
    return {"ratio": a["median_ms"] / b["median_ms"], "paired_median": statistics.median(per),
            "paired_p10": float(np.percentile(per, 10)),
            "paired_p90": float(np.percentile(per, 90)), "rounds": len(per),
            "numerator": num, "denominator": den}


def speedup(batch_result: dict, fast: str, slow: str) -> dict:
    """How many times faster `fast` is than `slow` (time of slow / time of fast)."""
    return ratio(batch_result, slow, fast)


# --- the measurement ------------------------------------------------------------------------

def _rounds(s: Settings, warm_s: float) -> int:
    if s.budget_s <= 0:
        return s.repeats
    return int(min(s.repeats, max(s.min_repeats, s.budget_s / max(warm_s, 1e-4))))


class Pool:
    """Worker processes kept across measurements (`measure(..., pool=pool)`): each call
    loads its variants into the first workers (one variant per process, as always), so a
    table of many models pays the runtime's import once per worker, not once per model."""

    def __init__(self, threads: int = 0):
        self.threads = threads or os.cpu_count() or 1
        self.workers = []

    def take(self, n: int) -> list:
        while len(self.workers) < n:
            self.workers.append(Worker(self.threads))
        return self.workers[:n]

    def close(self) -> None:
        for w in self.workers:
            w.close()
        self.workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def measure(variants: Sequence[Variant], batch_sizes: Sequence[int], seq_len: int,
            settings: Settings = Settings(), log=print, pool: Optional[Pool] = None) -> dict:
    """Times every variant at every batch size (see the module docstring); `pool`: reuse
    its worker processes (its thread count must be the settings')."""
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"latency variants need distinct names, got {names}")
    threads = settings.resolved_threads()
    own = pool is None
    pool = Pool(threads) if own else pool
    if pool.threads != threads:
        raise ValueError(f"latency pool of {pool.threads} threads, settings ask {threads}")
    try:
        workers = dict(zip(names, pool.take(len(variants))))
        for v in variants:  # load concurrently: send every request, then read the replies
            workers[v.name].send(op="load", variant=dataclasses.asdict(v), threads=threads)
        loaded = {v.name: {"pid": workers[v.name].pid, "runtime": v.runtime, "path": v.path,
                           **workers[v.name].read()} for v in variants}
        out = {"settings": dataclasses.asdict(settings), "seq_len": seq_len,
               "workers": {k: {f: w[f] for f in ("pid", "runtime", "path", "load_s",
                                                  "threads")} for k, w in loaded.items()},
               "batches": {}}
        for b in batch_sizes:
            out["batches"][str(b)] = _time_batch(workers, names, int(b), seq_len, settings)
            log(f"  batch {b} x seq {seq_len}, {out['batches'][str(b)][names[0]]['rounds']} "
                "rounds: " + ", ".join(f"{n} {out['batches'][str(b)][n]['median_ms']:.1f} ms"
                                       for n in names))
        return out
    finally:
        if own:
            pool.close()


def _time_batch(workers: dict, names: list, b: int, seq_len: int, settings: Settings) -> dict:
    feed = {"batch": b, "seq_len": int(seq_len), "seed": settings.seed,
            "vocab_hi": settings.vocab_hi}
    warm = 0.0  # one round's time, from each worker's last warm-up call
    for name in names if settings.warmup else ():  # one at a time, never overlapping
        r = workers[name].request(op="time", feed=feed, warmup=settings.warmup - 1, calls=1)
        warm += r["times_s"][0]
    rounds = _rounds(settings, warm)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            r = workers[name].request(op="time", feed=feed, warmup=0, calls=settings.calls)
            wall[name] += r["times_s"]
            cpu[name] += r["cpu_s"]
    return {n: stats(wall[n], cpu[n], b, rounds) for n in names}
