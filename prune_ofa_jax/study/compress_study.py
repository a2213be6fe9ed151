"""What compression costs beyond accuracy, measured on the demo's models:

  python -m prune_ofa_jax.study compression --workdir DIR [--demo runs/demo] \
      [--models dense,sparse,sparse_int8] [--tasks sst2,tweets] [--size test] [--doc]

Per model and task (training runs: study/compress_plan.py): the headline metric with its 95 %
bootstrap interval over dev rows (one trained model per row: the interval is the dev
sample's, not the seeds'), the majority-class baseline, per-class precision/recall/F1 and
the confusion matrix, ECE (15 bins) and a reliability diagram, the metric under seeded typos
in 5/10/20 % of words, the size on disk of the .pofa file, latency (batch 1 and 32, seq 128;
every model side by side through runtime/latency.py, the bench's function), and a sparsity
sweep on --sweep_task: pruning before fine-tuning (Prune OFA upstream) vs after (task GMP,
step-matched, plus the compute-matched 2x arm). Every model is evaluated as deployed: ONNX in
onnxruntime, int8 for the QAT models. Writes DIR/report.md, DIR/*.png, DIR/results.json and
Kaggle predictions for the tweets models (DIR/kaggle/); the training runs, evaluations,
sizes and latencies are each cached in DIR as JSON, so a rerun skips them. --doc writes the
headline table and the size/latency plot into docs/studies/compression.md.
`--size test`: the demo's `:test` settings (tiny steps), for the suite.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pathlib
import time

from prune_ofa_jax import errors, jsonio, paths
from prune_ofa_jax.data import tokenization
from prune_ofa_jax.runtime import latency as latency_lib
from prune_ofa_jax.study import (compress_eval, compress_plan, compress_report, cost, harness,
                                 quality, stats, tweets)
from prune_ofa_jax.train import loop

TASKS = ("sst2", "tweets")
HEADLINE_KEY = {"sst2": "accuracy", "tweets": "f1"}


def _say(msg: str) -> None:
    print(f"[study] {msg}", flush=True)


def ensure_run(cfg, wd: pathlib.Path, label: str) -> dict:
    """report.json of the run in `wd`, training it first unless it is done."""
    done = wd / "report.json"
    if done.is_file():
        return json.loads(done.read_text())
    if cfg is None:
        raise FileNotFoundError(f"{wd}: expected a finished run (report.json)")
    t = time.time()
    _say(f"run {label}: {cfg.train.steps} steps -> {wd}")
    rep = loop.run(cfg, wd)
    _say(f"run {label} done in {time.time() - t:.0f} s: "
         + ", ".join(f"{k}={v:.4f}" for k, v in rep["eval"].items()))
    return rep


def _cached(path: pathlib.Path, fn):
    if path.is_file():
        return json.loads(path.read_text())
    value = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(jsonio.dumps(value, indent=1))
    return value


def _sweep(p, demo, root, sweep_task, levels, test, arms) -> list:
    rows = []
    for (when, s), chain in compress_plan.sweep_runs(p, demo, root, sweep_task, levels, test,
                                                     arms).items():
        for c, wd in chain:
            rep = ensure_run(c, wd, f"sweep {when} {s:g}")
        rows.append({"when": when, "sparsity": s, "metric": HEADLINE_KEY[sweep_task],
                     "value": rep["eval"][HEADLINE_KEY[sweep_task]],
                     "measured_sparsity": (rep.get("sparsity") or {}).get("global"),
                     "run": str(chain[-1][1])})
    return rows


def _baselines(p, tasks) -> dict:
    """Majority class and uniform random on each task's dev rows."""
    out = {}
    for task in tasks:
        labels = compress_eval.dev_examples(task, p.data_root).labels
        pos = float((labels == 1).mean())
        out[task] = {"majority": stats.majority(labels), "random": stats.uniform_random(labels),
                     "all_positive": {"accuracy": pos, "f1": 2 * pos / (1 + pos)},
                     "rows": len(labels)}
    return out


def _latency(out, runs, models, tasks, lat) -> dict:
    """Every model of the first task timed side by side (latency depends on shapes, not
    weights); cached in eval/latency.json, remeasured when the settings change."""
    key = {"models": list(models), "batches": list(lat["batches"]), "seq_len": lat["seq_len"],
           "settings": dataclasses.asdict(lat["settings"]), "runtimes": list(lat["runtimes"])}
    path = out / "eval" / "latency.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached
    _say(f"latency: {', '.join(models)} side by side ({', '.join(lat['runtimes'])})")
    res = compress_eval.latency({m: runs[(m, tasks[0])][1] / "model" for m in models},
                                out / "onnx" / "latency", lat["batches"], lat["seq_len"],
                                lat["settings"], lat["runtimes"])
    res["key"] = key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(jsonio.dumps(res, indent=1))
    return res


def run(p, demo: pathlib.Path, out: pathlib.Path, models, tasks, sweep_task: str, levels,
        lat: dict, test: bool = False, arms=compress_plan.ARMS) -> dict:
    """`lat`: {"batches", "seq_len", "settings" (latency.Settings), "runtimes"}."""
    t0 = time.time()
    root = out / "runs"
    runs = compress_plan.model_runs(p, demo, root, models, tasks, test)
    reports = {k: ensure_run(c, wd, f"{k[1]}/{k[0]}") for k, (c, wd) in runs.items()}
    sweep_rows = _sweep(p, demo, root, sweep_task, levels, test, arms)
    train_s = time.time() - t0
    tok = tokenization.load_tokenizer(p.tokenizer or None)
    results = {}
    for (model, task), (_, wd) in runs.items():
        seq = p.seq_len if test else compress_plan.SEQ_LEN[task]
        key = f"{task}_{model}"
        mdir = wd / "model"

        def evaluate(mdir=mdir, task=task, seq=seq, key=key):
            ex = compress_eval.dev_examples(task, p.data_root)
            sess, int8 = compress_eval.session_for(mdir, out / "onnx" / f"{key}.onnx")
            r = compress_eval.evaluate(sess, task, ex, tok, seq, p.seed)
            r["int8_runtime"] = int8
            r["train_eval"] = reports[(model, task)]["eval"]  # Flax (fake-quant for QAT)
            r["size"] = compress_eval.size_on_disk(mdir, out / "packed" / f"{key}.pofa", int8)
            if task == "tweets":
                r["kaggle"] = tweets.write_predictions(
                    mdir, out / "kaggle" / f"{key}.csv", seq, p.data_root, tok)
            return r
        _say(f"evaluate {key}")
        results[key] = _cached(out / "eval" / f"{key}.json", evaluate)
    baselines = _baselines(p, tasks)
    paired = {}
    for task in tasks:  # each compressed model against the dense one, on the same dev rows
        labels = compress_eval.dev_examples(task, p.data_root).labels
        dense = results.get(f"{task}_dense")
        for model in models:
            if dense is not None and model != "dense":
                paired[f"{task}_{model}"] = quality.paired_rows(
                    task, results[f"{task}_{model}"]["pred"], dense["pred"], labels,
                    p.seed).to_dict()
    lat_res = _latency(out, runs, models, tasks, lat)
    summary = {"results": results, "latency": lat_res["models"],
               "latency_speedups": lat_res["speedups"],
               "latency_settings": {**lat_res["settings"], "seq_len": lat_res["seq_len"],
                                    "workers": lat_res["workers"]},
               "baselines": baselines, "paired_vs_dense": paired,
               "sweep": sweep_rows, "sweep_task": sweep_task, "sweep_arms": list(arms),
               "sweep_steps": {"finetune": p.finetune_steps, "upstream": p.prune_steps},
               "models": models, "tasks": tasks, "train_wall_s": round(train_s, 1),
               "wall_s": round(time.time() - t0, 1), "test": test}
    summary.update(cost.cost_of_runs_under(root))  # every run the study trained
    (out / "results.json").write_text(jsonio.dumps(summary, indent=1))
    report = compress_report.write(summary, out)
    return {"report": str(report), "table": compress_report.table_rows(summary),
            "summary": summary}


# --- the command line (python -m prune_ofa_jax.study compression) ---------------------------

def add_flags(ap) -> None:
    ap.add_argument("--models", default="dense,sparse,sparse_int8",
                    help="the demo's rows to measure (default dense,sparse,sparse_int8)")
    ap.add_argument("--tasks", default=",".join(TASKS), help="of sst2, tweets")
    ap.add_argument("--demo", default="runs/demo", help="the demo's workdir (its models)")
    ap.add_argument("--size", default="", choices=("", "test"),
                    help="'test': the demo's :test settings (tiny steps)")
    ap.add_argument("--sweep_task", default="sst2", choices=TASKS)
    ap.add_argument("--sweep_levels", default="0,0.5,0.7,0.8,0.9,0.95")
    ap.add_argument("--sweep_arms", default=",".join(compress_plan.ARMS),
                    help=f"of {', '.join(compress_plan.ARMS)} (study/compress_plan.py)")
    ap.add_argument("--latency_batches", default="1,32")
    ap.add_argument("--latency_seq_len", type=int, default=128)
    ap.add_argument("--latency_budget_s", type=float, default=60.0,
                    help="timed seconds per batch size, every model side by side (fewer "
                    "rounds, >= 5, when --latency_repeats would take longer)")
    ap.add_argument("--latency_repeats", type=int, default=40, help="timed rounds at most")
    ap.add_argument("--latency_warmup", type=int, default=2, help="untimed calls per model")
    ap.add_argument("--latency_threads", type=int, default=0,
                    help="intra-op threads of every runtime (0: all cores)")
    ap.add_argument("--latency_runtimes", default="ort,torch",
                    help="ort (the deployed model), torch (PyTorch fp32 beside fp32 models)")


def settings(args):
    """The flags, checked before anything runs (errors.UsageError)."""
    demo = pathlib.Path(args.demo)
    for need in ("1_teacher/model/model.json", "2_prune/model/model.json"):
        if not (demo / need).is_file():
            arg = ":test" if args.size else ""
            raise errors.UsageError(
                f"--demo {demo}: no {need}; run the demo first: python -m prune_ofa_jax.main "
                f"--config configs/demo.py{arg} --workdir {demo}")
    for task in args.tasks.split(","):
        if task not in TASKS:
            raise errors.UsageError(f"--tasks: unknown task {task!r} ({', '.join(TASKS)}; "
                                    "MRPC separates nothing at this scale)")
    for arm in args.sweep_arms.split(","):
        if arm not in compress_plan.ARMS:
            raise errors.UsageError(f"--sweep_arms: unknown arm {arm!r} "
                                    f"({', '.join(compress_plan.ARMS)})")
    for rt in args.latency_runtimes.split(","):
        if rt not in latency_lib.RUNTIMES:
            raise errors.UsageError(f"--latency_runtimes: unknown runtime {rt!r} "
                                    f"({', '.join(latency_lib.RUNTIMES)})")
    return args


def demo_pipeline(size: str):
    """configs/demo.py's pipeline settings (the study trains like the demo)."""
    spec = importlib.util.spec_from_file_location("demo_config", paths.recipe("demo"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(size).pipeline


def run_study(args, workdir) -> dict:
    t0 = time.time()
    lat = {"batches": [int(b) for b in args.latency_batches.split(",") if b],
           "seq_len": args.latency_seq_len,
           "runtimes": tuple(r for r in args.latency_runtimes.split(",") if r),
           "settings": latency_lib.Settings(threads=args.latency_threads,
                                            warmup=args.latency_warmup,
                                            repeats=args.latency_repeats,
                                            budget_s=args.latency_budget_s)}
    res = run(demo_pipeline(args.size), pathlib.Path(args.demo), pathlib.Path(workdir),
              [m for m in args.models.split(",") if m], [t for t in args.tasks.split(",") if t],
              args.sweep_task, [float(x) for x in args.sweep_levels.split(",") if x],
              lat, test=args.size == "test",
              arms=tuple(a for a in args.sweep_arms.split(",") if a))
    _say(f"done in {time.time() - t0:.0f} s: {res['report']}")
    print(json.dumps(res["table"], indent=1)[:4000])
    return res


def markdown(res: dict) -> str:
    return (compress_report.headline(res["summary"]) + "\nThe rest (per class, robustness, "
            "latency, calibration and three more plots): the study's report.md.\n")


def describe(args) -> str:
    size = " --size test" if args.size else ""
    return f"--models {args.models} --tasks {args.tasks} --demo DEMO{size}"


STUDY = harness.Study(name="compression", marker="compress", plot="size_latency.png",
                      run=run_study, markdown=markdown, alt="size and latency", doc=__doc__,
                      add_flags=add_flags, settings=settings, describe=describe)
