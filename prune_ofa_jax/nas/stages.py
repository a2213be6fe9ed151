"""AutoTinyBERT end to end, stages like the demo's, each in its own sub-workdir:

  1_supernet  one-shot KD training of the elastic supernet (an ordinary train/loop.py run)
  2_latency   real latency of sampled sub-models (the exported HF PyTorch model, batch 1 and
              32, timed by runtime/latency.py in groups beside the teacher) -> table.jsonl;
              the MLP predictor and its held-out error
  3_search    per speedup: evolutionary search in the predicted-latency window; fitness on
              rows held out of the training split (nas/fitness.py), never the dev set
  4_extract   the found archs -> plain HF BERT dirs; the uniform baselines (the first k
              layers at full width) likewise, cut from the same supernet
  5_finetune  each extracted model on each task, once per seed of nas.finetune.seeds
              (ordinary runs, pattern locked)
and WORKDIR/report.json ("found", "extracted", ...), table.md, autotinybert.png.

A finished stage is skipped on rerun (its report.json, a finished run, a written dir, a
measured arch, an evaluated fitness), and an interrupted training run resumes.
"""

from __future__ import annotations

import copy
import json
import logging
import pathlib
import re
import tempfile
import time

import jax
import numpy as np

from prune_ofa_jax import config_base, jsonio, logs, paths, recipes
from prune_ofa_jax.convert import hf, pack_ckpt, params_ckpt
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config_lib
from prune_ofa_jax.nas import defaults as nas_config
from prune_ofa_jax.nas import evolution
from prune_ofa_jax.nas import extract as extract_lib
from prune_ofa_jax.nas import fitness as fitness_lib
from prune_ofa_jax.nas import latency_table, predictor
from prune_ofa_jax.nas import report as report_lib
from prune_ofa_jax.nas import space as space_lib
from prune_ofa_jax.nas import supernet
from prune_ofa_jax.runtime import latency
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.study import harness, stats
from prune_ofa_jax.train import inputs, loop

log = logging.getLogger(__name__)


def _say(msg: str) -> None:
    print(f"[autotinybert] {msg}", flush=True)


def _run_once(cfg, wd: pathlib.Path, name: str, **kw) -> dict:
    done = wd / "report.json"
    if done.exists():
        _say(f"{name}: done before ({done}), skipping")
        return json.loads(done.read_text())
    _say(f"{name}: {cfg.train.steps} steps -> {wd}")
    rep = loop.run(cfg, wd, **kw)
    _say(f"{name}: done in {rep['wall_time_s']:.0f} s")
    return rep


# What each stage's result depends on beyond the stages before it: a finished stage is
# reused only when these match the config (else the one-line error says what to delete).
METHOD = {"2_latency": "runtime/latency.py workers", "3_search": "fitness on held-out rows"}


def _stage_key(c, stage: str) -> dict:
    n = c.nas
    key = {"2_latency": {"latency": n.latency.to_dict(), "space": n.space.to_dict()},
           "3_search": {"fitness": n.fitness.to_dict(), "search": n.search.to_dict(),
                        "predictor": n.predictor.to_dict(), "split_seed": c.data.split_seed,
                        "seed": c.seed}}[stage]
    return json.loads(jsonio.dumps({"method": METHOD[stage], **key}))


def _check_done(c, stage: str, wd: pathlib.Path) -> None:
    """A finished stage run with other settings (or by another method) is an error."""
    path = wd / "settings.json"
    if not path.exists() or json.loads(path.read_text()) != _stage_key(c, stage):
        later = {"2_latency": "2_latency, 3_search, 4_extract and 5_finetune",
                 "3_search": "3_search, 4_extract and 5_finetune"}[stage]
        raise ValueError(f"{wd}: finished with other settings than config.nas's (see "
                         f"{path.name}); delete {later} under {wd.parent} to rerun them")


def _mark_done(c, stage: str, wd: pathlib.Path) -> None:
    (wd / "settings.json").write_text(json.dumps(_stage_key(c, stage), indent=1))


def stage_latency(c, space, tcfg, wd: pathlib.Path, pool: latency.Pool) -> tuple:
    """(table, predictor, report) of stage 2 (`pool`: the latency worker processes)."""
    if (wd / "report.json").exists() and (wd / "predictor.json").exists():
        _check_done(c, "2_latency", wd)
        _say(f"2_latency: done before ({wd / 'report.json'}), skipping")
        return (latency_table.read_table(wd / "table.jsonl"),
                predictor.Predictor.load(wd / "predictor.json"),
                json.loads((wd / "report.json").read_text()))
    wd.mkdir(parents=True, exist_ok=True)
    lat = c.nas.latency
    top = space.top()
    uniform = [space_lib.Arch(k, top.hidden, top.ffn, top.qkv) for k in space.layers]
    rng = np.random.default_rng([c.seed, 31])
    sampled = [space.sample(rng) for _ in range(lat.num_archs)]
    table = latency_table.measure_table(tcfg, [top] + uniform + sampled, lat,
                                        wd / "table.jsonl", say=_say, pool=pool)
    sparse = _sparse_teacher_ms(c, lat, pool) if lat.runtime == "hf_torch" else None
    archs, feats, ms = latency_table.table_arrays(table, lat.batch_sizes)
    pred, rep = predictor.fit(archs, feats, ms, space, lat.batch_sizes, c.nas.predictor,
                              lat.holdout, c.seed)
    pred.save(wd / "predictor.json")
    rep.update(runtime=lat.runtime, threads=lat.threads, seq_len=lat.seq_len,
               n_archs=len(table), teacher_ms=table[top], warmup=lat.warmup,
               repeats=lat.repeats,
               teacher_ms_groups=latency_table.read_teacher_ms(wd / "table.jsonl"))
    if sparse:
        rep["prune_ofa_sparse_ms"] = sparse
    (wd / "report.json").write_text(jsonio.dumps(rep, indent=2))
    _mark_done(c, "2_latency", wd)
    _say("latency predictor, held-out mean relative error: " + ", ".join(
        f"batch {b} {100 * e:.1f} %" for b, e in rep["heldout_mean_relative_error"].items()))
    return table, pred, rep


def _sparse_teacher_ms(c, lat, pool) -> dict:
    """The teacher with 80 % of each encoder kernel zeroed (Prune OFA's sparsity, by
    magnitude per tensor) timed side by side with the dense teacher in the same runtime:
    dense kernels take as long as ever."""
    params, tcfg = supernet.load_teacher(c.teacher.path)
    flat = pack_ckpt.flat_numpy(params)
    for path, w in flat.items():
        if w.ndim == 2 and any(re.search(p, path) for p in masks_lib.DEFAULT_INCLUDE):
            w[np.abs(w) < np.quantile(np.abs(w), 0.8)] = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        variants = [latency.torch_variant(n, p, tcfg, "base", pathlib.Path(tmp) / n)
                    for n, p in (("dense", params), ("sparse", hf.unflatten(flat)))]
        res = latency.measure(variants, lat.batch_sizes, lat.seq_len,
                              latency_table.settings(lat), log=lambda *_: None, pool=pool)
    per = res["batches"]
    return {"sparsity": 0.8,
            "measured_ms": {b: r["sparse"]["median_ms"] for b, r in per.items()},
            "dense_ms": {b: r["dense"]["median_ms"] for b, r in per.items()},
            "time_ratio": {b: latency.ratio(r, "sparse", "dense") for b, r in per.items()}}


def stage_search(c, space, supernet_params, tcfg, table, pred, wd: pathlib.Path) -> dict:
    done = wd / "report.json"
    if done.exists():
        _check_done(c, "3_search", wd)
        _say(f"3_search: done before ({done}), skipping")
        return json.loads(done.read_text())
    wd.mkdir(parents=True, exist_ok=True)
    lat, s_cfg = c.nas.latency, c.nas.search
    b = int(lat.search_batch)
    teacher_ms = table[space.top()][str(b)]
    cache = _read_cache(wd / "fitness.jsonl")
    evaluator = []

    def fitness(arch):
        if not evaluator:  # tokenise the tasks only when something needs evaluating
            evaluator.append(fitness_lib.Fitness(supernet_params, tcfg, c.nas.fitness, c))
        t0 = time.time()
        result = {**evaluator[0](arch), "wall_s": round(time.time() - t0, 2)}
        with (wd / "fitness.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps({"arch": arch.to_dict(), **result}) + "\n")
        return result

    out = {}
    for s in s_cfg.speedups:
        window = evolution.Window.for_speedup(teacher_ms, s, s_cfg.window)
        bi = list(lat.batch_sizes).index(b)
        pool = evolution.candidates(space, lambda archs: pred.predict(archs)[:, bi], window)
        _say(f"3_search {s:g}x: window [{window.lo:.2f}, {window.hi:.2f}] ms at batch {b}, "
             f"{len(pool)} candidates")
        res = evolution.evolve(space, pool, lambda a: pred.predict_one(a, b), window, fitness,
                            s_cfg, c.seed, cache, say=lambda m, s=s: _say(f"{s:g}x {m}"))
        best = res["best"]
        out[f"{s:g}x"] = {"speedup": s, "arch": best.to_dict(), "fitness": cache[best],
                          "window_ms": [window.lo, window.hi], "batch": b,
                          "candidates": len(pool), "evaluated": len(res["evaluated"]),
                          "generations": res["generations"],
                          "predicted_ms": dict(zip(map(str, lat.batch_sizes),
                                                   map(float, pred.predict([best])[0]))),
                          "history": [{"arch": a.to_dict(), **r} for a, r in res["evaluated"]]}
    done.write_text(jsonio.dumps(out, indent=2))
    _mark_done(c, "3_search", wd)
    return out


def _read_cache(path: pathlib.Path) -> dict:
    if not path.exists():
        return {}
    rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    return {space_lib.Arch.from_dict(r.pop("arch")): r for r in rows}


def stage_extract(c, space, supernet_dir, found, wd: pathlib.Path) -> dict:
    """name -> HF dir: searched_<s>x and uniform_L<k> (the first k layers at full width),
    all cut from the same supernet, so the table compares architectures, not weights."""
    top = space.top()
    jobs = {f"searched_{k}": (supernet_dir, space_lib.Arch.from_dict(v["arch"]))
            for k, v in found.items()}
    jobs.update({f"uniform_L{k}": (supernet_dir, space_lib.Arch(k, top.hidden, top.ffn,
                                                                   top.qkv))
                 for k in c.nas.finetune.uniform_layers})
    loaded, out = {}, {}
    for name, (src, arch) in jobs.items():
        path = wd / name
        made = path / "autotinybert.json"
        old = json.loads(made.read_text()) if made.exists() else {}
        if (old.get("supernet"), old.get("arch")) != (str(src), arch.to_dict()):
            if src not in loaded:
                loaded[src] = supernet.load_teacher(str(src))
            params, tcfg = loaded[src]
            extract_lib.extract(params, tcfg, arch, path, tokenizer_dir=_tokenizer_dir(c),
                                overwrite=True, source=str(src))
            _say(f"4_extract {name}: {arch.key()} -> {path}")
        out[name] = str(path)
    return out


def _tokenizer_dir(c):
    return c.data.tokenizer or str(paths.minilm_dir())


def finetune_config(c, hf_dir: str, task: str, seed: int = 0):
    """An ordinary GLUE fine-tune of an extracted model, pattern locked (padding stays 0)."""
    f = c.nas.finetune
    ft = recipes.finetune("glue", task)
    ft.preset = ""
    ft.seed = seed
    ft.data.split_seed = c.data.split_seed
    ft.init.path, ft.init.init_missing_heads = hf_dir, True
    if task not in f.seq_len:
        raise ValueError(f"config.nas.finetune.seq_len has no entry for task {task!r}")
    ft.data.root, ft.data.seq_len, ft.data.train_subset = c.data.root, f.seq_len[task], \
        f.train_subset
    ft.data.eval_subset = f.eval_subset
    ft.train.steps, ft.train.epochs, ft.train.batch_size = f.steps, 0, f.batch_size
    ft.train.eval_batch_size, ft.train.log_every = 128, max(1, min(50, f.steps))
    ft.train.progress = False
    ft.optim.lr, ft.optim.warmup_steps, ft.optim.warmup_fraction = f.lr, f.steps // 10, 0.0
    ft.checkpoint.every, ft.checkpoint.keep = max(1, f.steps // 2), 1
    ft.mesh = c.mesh
    return ft


def stage_finetune(c, extracted: dict, wd: pathlib.Path) -> dict:
    """name -> task -> [eval of each seed of nas.finetune.seeds]. Seed-major order, so an
    interrupted stage has every model at the first seeds rather than some models at all."""
    out = {name: {t: [] for t in c.nas.finetune.tasks} for name in extracted}
    for seed in c.nas.finetune.seeds:
        for name, hf_dir in extracted.items():
            for task in c.nas.finetune.tasks:
                rep = _run_once(finetune_config(c, hf_dir, task, seed),
                                wd / f"{name}_{task}_s{seed}",
                                f"5_finetune {name} {task} seed {seed}")
                out[name][task].append(rep["eval"])
    return out


def run(c, workdir) -> dict:
    root = pathlib.Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    harness.use_compile_cache(root)
    # One set of latency worker processes for the run (started when first needed; idle,
    # blocked on a read, while the other stages run).
    with logs.to_file(root), latency.Pool(c.nas.latency.threads) as pool:
        return _run(c, root, pool)


def _teacher(c, root: pathlib.Path):
    """A copy of c with teacher.path set (config.teacher.path "" = a seeded random teacher of
    config.model, written once to WORKDIR/0_teacher: the smoke test's) and init.path = it
    when the supernet starts from the teacher (config.nas.init_from_teacher)."""
    c = copy.deepcopy(c)
    if not c.teacher.path:
        path = root / "0_teacher" / "model"
        if not (path / "model.json").exists():

            cfg = model_config_lib.by_name(c.model.name, **dict(c.model.overrides))
            params = bert.init_params(bert.BertFamily(cfg, "base"), jax.random.key(c.seed))
            params_ckpt.save_params(path, params, cfg, "base", overwrite=True)
            _say(f"0_teacher: a random {cfg.num_layers}-layer, {cfg.hidden_size}-wide teacher "
                 f"(config.teacher.path is empty) -> {path}")
        c.teacher.path = str(path)
    c.init.path = c.teacher.path if c.nas.init_from_teacher else ""
    return c


class _Walls:
    """Wall seconds per stage summed over every invocation (a resumed pipeline's cost is all
    of it, not the last command's), kept in WORKDIR/stage_wall_s.json."""

    def __init__(self, path: pathlib.Path):
        self.path, self.t = path, time.time()
        self.total = json.loads(path.read_text()) if path.exists() else {}

    def done(self, stage: str) -> None:
        now = time.time()
        self.total[stage] = round(self.total.get(stage, 0.0) + now - self.t, 1)
        self.t = now
        self.path.write_text(json.dumps(self.total, indent=1))


def _run(c, root: pathlib.Path, pool: latency.Pool) -> dict:
    walls = _Walls(root / "stage_wall_s.json")
    c = _teacher(c, root)
    d = {k: root / k for k in ("1_supernet", "2_latency", "3_search", "4_extract",
                               "5_finetune")}
    sn = _run_once(c, d["1_supernet"], "1_supernet", build_fn=supernet.build)
    sn_params, tcfg = supernet.load_teacher(str(d["1_supernet"] / "model"))
    space = space_lib.Space.from_config(c.nas.space, tcfg.num_heads)
    walls.done("1_supernet")
    table, pred, lat_rep = stage_latency(c, space, tcfg, d["2_latency"], pool)
    walls.done("2_latency")
    found = stage_search(c, space, sn_params, tcfg, table, pred, d["3_search"])
    walls.done("3_search")
    # the found archs' measured latency (most are new to the table)
    table = latency_table.measure_table(tcfg, [space_lib.Arch.from_dict(v["arch"])
                                               for v in found.values()], c.nas.latency,
                                        d["2_latency"] / "table.jsonl", say=_say,
                                        pool=pool)
    extracted = stage_extract(c, space, d["1_supernet"] / "model", found, d["4_extract"])
    walls.done("4_extract")
    tuned = stage_finetune(c, extracted, d["5_finetune"])
    walls.done("5_finetune")
    extra = {"group_teacher_ms": latency_table.read_group_teacher(d["2_latency"] /
                                                                  "table.jsonl"),
             "baselines": _baselines(c)}
    summary = report_lib.summarise(c, space, table, lat_rep, found, extracted, tuned, sn,
                                   extra)
    summary["stage_wall_s"] = walls.total
    summary["wall_time_s"] = round(sum(walls.total.values()), 1)
    (root / "report.json").write_text(jsonio.dumps(summary, indent=2))
    (root / "table.md").write_text(report_lib.markdown(summary))
    report_lib.plot(summary, root / "autotinybert.png")
    print(report_lib.markdown(summary), flush=True)
    return summary


def _baselines(c) -> dict:
    """Majority class and uniform random on each final task's dev rows."""
    out = {}
    for task in c.nas.finetune.tasks:
        labels = inputs.classification_examples(finetune_config(c, "", task))[1].labels
        out[task] = {"majority": stats.majority(labels), "random": stats.uniform_random(labels),
                     "rows": len(labels)}
    return out


def base_config():
    """config_base's keys + the nas section (configs/autotinybert.py starts here)."""
    c = config_base.base()
    c.nas = nas_config.defaults()
    return c
