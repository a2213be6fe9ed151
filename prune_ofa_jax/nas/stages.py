"""AutoTinyBERT end to end, stages like the demo's, each in its own sub-workdir:

  1_supernet  one-shot KD training of the elastic supernet (an ordinary train/loop.py run)
  2_latency   real latency of sampled sub-models (the exported HF PyTorch model, batch 1 and
              32) -> table.jsonl; the MLP predictor and its held-out error
  3_search    per speedup: evolutionary search in the predicted-latency window
  4_extract   the found archs -> plain HF BERT dirs; the uniform baselines (the teacher's
              first k layers) likewise
  5_finetune  each extracted model on each task (ordinary runs, pattern locked)
and WORKDIR/report.json ("found", "extracted", ...), table.md, autotinybert.png.

A finished stage is skipped on rerun (its report.json, a finished run, a written dir, a
measured arch, an evaluated fitness), and an interrupted training run resumes.
"""

from __future__ import annotations

import copy
import json
import logging
import pathlib
import time

import jax
import numpy as np

from prune_ofa_jax import config_base, jsonio, logs, paths, recipes
from prune_ofa_jax.convert import hf, params_ckpt
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config_lib
from prune_ofa_jax.nas import defaults as nas_config
from prune_ofa_jax.nas import evolution
from prune_ofa_jax.nas import extract as extract_lib
from prune_ofa_jax.nas import fitness as fitness_lib
from prune_ofa_jax.nas import latency, predictor
from prune_ofa_jax.nas import report as report_lib
from prune_ofa_jax.nas import space as space_lib
from prune_ofa_jax.nas import supernet
from prune_ofa_jax.study import harness
from prune_ofa_jax.train import loop

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


def stage_latency(c, space, tcfg, wd: pathlib.Path) -> tuple:
    """(table, predictor, report) of stage 2."""
    if (wd / "report.json").exists() and (wd / "predictor.json").exists():
        _say(f"2_latency: done before ({wd / 'report.json'}), skipping")
        return (latency.read_table(wd / "table.jsonl"),
                predictor.Predictor.load(wd / "predictor.json"),
                json.loads((wd / "report.json").read_text()))
    wd.mkdir(parents=True, exist_ok=True)
    lat = c.nas.latency
    top = space.top()
    uniform = [space_lib.Arch(k, top.hidden, top.ffn, top.qkv) for k in space.layers]
    rng = np.random.default_rng([c.seed, 31])
    sampled = [space.sample(rng) for _ in range(lat.num_archs)]
    table = latency.measure_table(tcfg, [top] + uniform + sampled, lat, wd / "table.jsonl",
                                  say=_say)
    archs, feats, ms = latency.table_arrays(table, lat.batch_sizes)
    pred, rep = predictor.fit(archs, feats, ms, space, lat.batch_sizes, c.nas.predictor,
                              lat.holdout, c.seed)
    pred.save(wd / "predictor.json")
    rep.update(runtime=lat.runtime, threads=lat.threads, seq_len=lat.seq_len,
               n_archs=len(table), teacher_ms=table[top])
    if lat.runtime == "hf_torch":
        rep["prune_ofa_sparse_ms"] = _sparse_teacher_ms(c, lat)
    (wd / "report.json").write_text(jsonio.dumps(rep, indent=2))
    _say("latency predictor, held-out mean relative error: " + ", ".join(
        f"batch {b} {100 * e:.1f} %" for b, e in rep["heldout_mean_relative_error"].items()))
    return table, pred, rep


def _sparse_teacher_ms(c, lat) -> dict:
    """The teacher with 80 % of its encoder weights zeroed (Prune OFA's sparsity, by magnitude
    per tensor) in the same runtime: dense kernels take as long as ever."""
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
    params, tcfg = supernet.load_teacher(c.teacher.path)
    model = transformers.BertModel(hf.hf_config(tcfg, "base"))
    state = hf.to_hf_state_dict(params, tcfg, "base")
    model.load_state_dict({k: torch.tensor(v) for k, v in state.items()}, strict=False)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and ".encoder." in f".{name}.":
                w = mod.weight
                cut = w.abs().flatten().kthvalue(int(0.8 * w.numel())).values
                w.mul_((w.abs() > cut).float())
    with latency.torch_threads(lat.threads):
        return {"sparsity": 0.8, **{str(b): round(latency.torch_model_latency(
            model, int(b), lat.seq_len, lat.warmup, lat.repeats), 4) for b in lat.batch_sizes}}


def stage_search(c, space, supernet_params, tcfg, table, pred, wd: pathlib.Path) -> dict:
    done = wd / "report.json"
    if done.exists():
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
    return out


def _read_cache(path: pathlib.Path) -> dict:
    if not path.exists():
        return {}
    rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    return {space_lib.Arch.from_dict(r.pop("arch")): r for r in rows}


def stage_extract(c, space, supernet_dir, found, wd: pathlib.Path) -> dict:
    """name -> HF dir: searched_<s>x (from the supernet), uniform_L<k> (the teacher's)."""
    top = space.top()
    jobs = {f"searched_{k}": (supernet_dir, space_lib.Arch.from_dict(v["arch"]))
            for k, v in found.items()}
    jobs.update({f"uniform_L{k}": (c.teacher.path, space_lib.Arch(k, top.hidden, top.ffn,
                                                                     top.qkv))
                 for k in c.nas.finetune.uniform_layers})
    loaded, out = {}, {}
    for name, (src, arch) in jobs.items():
        path = wd / name
        if not (path / "autotinybert.json").exists():
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


def finetune_config(c, hf_dir: str, task: str):
    """An ordinary GLUE fine-tune of an extracted model, pattern locked (padding stays 0)."""
    f = c.nas.finetune
    ft = recipes.finetune("glue", task)
    ft.preset = ""
    ft.seed = c.seed
    ft.init.path, ft.init.init_missing_heads = hf_dir, True
    if task not in f.seq_len:
        raise ValueError(f"config.nas.finetune.seq_len has no entry for task {task!r}")
    ft.data.root, ft.data.seq_len, ft.data.train_subset = c.data.root, f.seq_len[task], \
        f.train_subset
    ft.train.steps, ft.train.epochs, ft.train.batch_size = f.steps, 0, f.batch_size
    ft.train.eval_batch_size, ft.train.log_every = 128, max(1, min(50, f.steps))
    ft.train.progress = False
    ft.optim.lr, ft.optim.warmup_steps, ft.optim.warmup_fraction = f.lr, f.steps // 10, 0.0
    ft.checkpoint.every, ft.checkpoint.keep = max(1, f.steps // 2), 1
    ft.mesh = c.mesh
    return ft


def stage_finetune(c, extracted: dict, wd: pathlib.Path) -> dict:
    out = {}
    for name, hf_dir in extracted.items():
        for task in c.nas.finetune.tasks:
            rep = _run_once(finetune_config(c, hf_dir, task), wd / f"{name}_{task}",
                            f"5_finetune {name} {task}")
            out.setdefault(name, {})[task] = rep["eval"]
    return out


def run(c, workdir) -> dict:
    root = pathlib.Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    harness.use_compile_cache(root)
    with logs.to_file(root):
        return _run(c, root)


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


def _run(c, root: pathlib.Path) -> dict:
    walls = _Walls(root / "stage_wall_s.json")
    c = _teacher(c, root)
    d = {k: root / k for k in ("1_supernet", "2_latency", "3_search", "4_extract",
                               "5_finetune")}
    sn = _run_once(c, d["1_supernet"], "1_supernet", build_fn=supernet.build)
    sn_params, tcfg = supernet.load_teacher(str(d["1_supernet"] / "model"))
    space = space_lib.Space.from_config(c.nas.space, tcfg.num_heads)
    walls.done("1_supernet")
    table, pred, lat_rep = stage_latency(c, space, tcfg, d["2_latency"])
    walls.done("2_latency")
    found = stage_search(c, space, sn_params, tcfg, table, pred, d["3_search"])
    walls.done("3_search")
    # the found archs' measured latency (most are new to the table)
    table = latency.measure_table(tcfg, [space_lib.Arch.from_dict(v["arch"])
                                         for v in found.values()], c.nas.latency,
                                  d["2_latency"] / "table.jsonl", say=_say)
    extracted = stage_extract(c, space, d["1_supernet"] / "model", found, d["4_extract"])
    walls.done("4_extract")
    tuned = stage_finetune(c, extracted, d["5_finetune"])
    walls.done("5_finetune")
    summary = report_lib.summarise(c, space, table, lat_rep, found, extracted, tuned, sn)
    summary["stage_wall_s"] = walls.total
    summary["wall_time_s"] = round(sum(walls.total.values()), 1)
    (root / "report.json").write_text(jsonio.dumps(summary, indent=2))
    (root / "table.md").write_text(report_lib.markdown(summary))
    report_lib.plot(summary, root / "autotinybert.png")
    print(report_lib.markdown(summary), flush=True)
    return summary


def base_config():
    """config_base's keys + the nas section (configs/autotinybert.py starts here)."""
    c = config_base.base()
    c.nas = nas_config.defaults()
    return c
