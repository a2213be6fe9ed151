"""What compression costs beyond accuracy, measured on the demo's models:

  python -m prune_ofa_jax.study --models dense,sparse,sparse_int8 --tasks sst2,mrpc,tweets \
      --out DIR [--demo runs/demo] [--size test]

Per model and task (training runs: study/compress_plan.py): the headline metric, per-class
precision/recall/F1 and the confusion matrix, ECE (15 bins) and a reliability diagram, the
metric under seeded typos in 5/10/20 % of words, the size on disk of the .pofa file, latency
(batch 1 and 32, seq 128), and a sparsity sweep (pruning before vs after fine-tuning) on
--sweep_task. Every model is evaluated as deployed: ONNX in onnxruntime, int8 for the QAT
models. Writes DIR/report.md, DIR/*.png, DIR/results.json and Kaggle predictions for the
tweets models (DIR/kaggle/). Rerunning skips finished runs and evaluations.
`--size test`: the demo's `:test` settings (tiny steps), for the suite.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys
import time

from absl import logging as absl_logging

from prune_ofa_jax.study import compress_report, compress_study, harness

REPO = pathlib.Path(__file__).resolve().parents[2]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m prune_ofa_jax.study", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="dense,sparse,sparse_int8")
    ap.add_argument("--tasks", default="sst2,mrpc,tweets")
    ap.add_argument("--out", required=True)
    ap.add_argument("--demo", default="runs/demo", help="the demo's workdir (its models)")
    ap.add_argument("--size", default="", choices=("", "test"))
    ap.add_argument("--sweep_task", default="sst2")
    ap.add_argument("--sweep_levels", default="0,0.5,0.7,0.8,0.9,0.95")
    ap.add_argument("--latency_batches", default="1,32")
    ap.add_argument("--latency_seq_len", type=int, default=128)
    ap.add_argument("--latency_budget_s", type=float, default=25.0,
                    help="timed seconds per model and batch size")
    ap.add_argument("--readme", default="", help="rewrite this README's section (markers)")
    return ap


def demo_pipeline(size: str):
    """configs/demo.py's pipeline settings (the study trains like the demo)."""
    spec = importlib.util.spec_from_file_location("demo_config", REPO / "configs" / "demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(size).pipeline


def _check(args) -> None:
    demo = pathlib.Path(args.demo)
    for need in ("1_teacher/model/model.json", "2_prune/model/model.json"):
        if not (demo / need).is_file():
            arg = ":test" if args.size else ""
            raise SystemExit(f"error: --demo {demo}: no {need}; run the demo first: python -m "
                             f"prune_ofa_jax.main --config configs/demo.py{arg} --workdir {demo}")
    for task in args.tasks.split(","):
        if task not in ("sst2", "mrpc", "tweets"):
            raise SystemExit(f"error: --tasks: unknown task {task!r} (sst2, mrpc, tweets)")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    _check(args)
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every save/load at INFO
    t0 = time.time()
    models = [m for m in args.models.split(",") if m]
    tasks = [t for t in args.tasks.split(",") if t]
    levels = [float(x) for x in args.sweep_levels.split(",") if x]
    batches = [int(b) for b in args.latency_batches.split(",") if b]
    res = compress_study.run(demo_pipeline(args.size), pathlib.Path(args.demo),
                             pathlib.Path(args.out), models, tasks, args.sweep_task, levels,
                             batches, args.latency_seq_len, args.latency_budget_s,
                             test=args.size == "test")
    print(f"[study] done in {time.time() - t0:.0f} s: {res['report']}")
    if args.readme:
        table = (compress_report.headline(res["summary"]) + "\nThe rest (per class, robustness, "
                 "latency, calibration and three more plots): the study's report.md.\n")
        harness.write(args.readme, "compress", table, pathlib.Path(args.out) / "size_latency.png",
                     "size and latency", f"python -m prune_ofa_jax.study --models {args.models} "
                     f"--tasks {args.tasks} --demo DEMO --out DIR --readme README.md")
        print(f"[study] wrote the table and plot into {args.readme}")
    print(json.dumps(res["table"], indent=1)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
