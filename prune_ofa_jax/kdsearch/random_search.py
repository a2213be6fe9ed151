"""KD-pipeline search: N pipelines drawn from the space (kdsearch/candidates.py: logit loss,
intermediate objective, layer map, features, augmentation, weights), each a short student
run; every run goes to a results table and the best one to best_config.json.

  python -m prune_ofa_jax.kdsearch.random_search --task sst2 --budget N [--workdir DIR]
      [--seed 0] [--size test]

TASK: sst2, mrpc or tweets; `--size test` (a few steps per run, for the suite) has mrpc and
tweets only.

Before the first pipeline it prepares (or reuses, in DIR) the task teacher (MiniLM-L6
fine-tuned), the student's initialisation (MiniLM layers {1, 3, 5}) and the masked LM for
contextual augmentation (kdsearch/runs.py). Writes DIR/results.jsonl, DIR/results.csv (one row
per run: task, pipeline, score, teacher score, ratio, dataset meta-features) and
DIR/best_config.json (the best pipeline and the --config flags that rerun it). Rerunning the
command skips finished runs, resumes an interrupted one, and a larger N adds runs.
"""

from __future__ import annotations

import csv
import json
import logging
import pathlib
import sys
import time
import zlib

import numpy as np

from prune_ofa_jax import cli, config_base, errors, jsonio, logs
from prune_ofa_jax.kdsearch import autodistiller, candidates, runs

log = logging.getLogger(__name__)


def draw(budget: int, seed: int, task: str = "") -> list:
    """`budget` distinct pipelines, the same list (prefix) for the same seed and task (each
    task draws its own, so searches of several tasks cover more of the space)."""
    rng = np.random.default_rng([seed, 2021, zlib.crc32(task.encode())])
    out, seen = [], set()
    for _ in range(100 * budget):
        if len(out) == budget:
            break
        pipe = candidates.sample(rng)
        if candidates.key(pipe) not in seen:
            seen.add(candidates.key(pipe))
            out.append(pipe)
    return out


def row(task: str, source: str, name: str, seed: int, pipe: dict, report: dict,
        teacher_report: dict, meta: dict) -> dict:
    """One results-table row (also the meta-table's)."""
    s, t = runs.score(task, report), runs.score(task, teacher_report)
    return {"task": task, "source": source, "run": name, "seed": seed,
            **{f"pipe.{k}": v for k, v in candidates.canonical(pipe).items()},
            "score": s, "teacher_score": t, "ratio": s / t if t else float("nan"),
            "accuracy": report["eval"].get("accuracy"), "wall_s": report["wall_time_s"],
            **{f"meta.{k}": v for k, v in meta.items()}}


def write_table(rows: list, directory: pathlib.Path, name: str = "results") -> None:
    (directory / f"{name}.jsonl").write_text("".join(jsonio.dumps(r) + "\n" for r in rows))
    if not rows:
        return
    with open(directory / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def overrides(pipe: dict) -> list:
    """The --config flags that set `pipe` on a fine-tuning run (see candidates.apply)."""
    c = _probe()
    candidates.apply(c, pipe, "MLM_DIR")
    keys = ("distill.kd_weight", "distill.task_weight", "distill.temperature",
            "distill.logit_loss", "distill.intermediate", "distill.intermediate_weight",
            "distill.mi_alpha", "distill.layer_map", "distill.attention_weight",
            "augment.kinds", "augment.fraction", "augment.mlm_path")
    flat = {k: c[k.split(".")[0]][k.split(".")[1]] for k in keys}
    if not flat["augment.kinds"]:
        flat = {k: v for k, v in flat.items() if not k.startswith("augment.")}
    return [f"--config.{k}={v!r}" if isinstance(v, tuple) else f"--config.{k}={v}"
            for k, v in flat.items()]


def _probe():
    return config_base.base()


def search(p, task: str, budget: int, root: pathlib.Path, seed: int = 0, dirs=None,
           meta=None, runs_root=None) -> list:
    """Runs (or reuses) `budget` pipelines on `task`; returns the table rows. `dirs` / `meta`:
    the prepared teacher, student init and MLM and the task's meta-features (prepared in
    `root` when not given); the runs go to `runs_root` (default `root`)."""
    if task not in p.tasks:
        raise errors.UsageError(f"--task {task}: the search at this size knows "
                                f"{', '.join(sorted(p.tasks))} (kdsearch/runs.py)")
    root.mkdir(parents=True, exist_ok=True)
    runs_root = runs_root or root
    dirs = dirs or runs.prepare(p, root, task)
    meta = meta or autodistiller.task_meta(p, task, dirs, root)
    rows = []
    for i, pipe in enumerate(draw(budget, seed, task)):
        name = f"{task}_search{i:03d}_s{seed}"
        cfg = runs.student_config(p, task, pipe, seed, dirs)
        report = runs.run_once(cfg, runs_root / name, f"search {i + 1}/{budget} {task}")
        rows.append(row(task, "search", name, seed, pipe, report, dirs["teacher_report"], meta))
    write_table(rows, root)
    best = max(rows, key=lambda r: r["score"])
    pipe = {k[5:]: v for k, v in best.items() if k.startswith("pipe.")}
    (root / "best_config.json").write_text(jsonio.dumps(
        {"task": task, "run": best["run"], "score": best["score"], "ratio": best["ratio"],
         "teacher_score": best["teacher_score"], "pipeline": pipe,
         "flags": overrides(pipe)}, indent=2))
    return rows


MODULE = "prune_ofa_jax.kdsearch.random_search"
SIZES = ("", "test")


def main(argv=None) -> int:
    ap = cli.Parser(MODULE, description=__doc__)
    ap.add_argument("--task", required=True, choices=sorted(runs.METRIC),
                    help="the task to search (--size test: mrpc or tweets)")
    ap.add_argument("--budget", type=int, required=True, help="number of pipelines to run")
    ap.add_workdir("output dir: the prepared runs, one dir per pipeline, results.csv, "
                   "best_config.json, log.txt (default runs/search_TASK)", required=False,
                   old=())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="", choices=SIZES, metavar="SIZE",
                    help="'' (default: the study's sizes) or test (a few steps per run)")
    args = ap.parse_args(argv)
    if args.budget < 1:
        ap.error(f"--budget {args.budget}: must be >= 1")
    p = runs.settings(args.size)
    if args.task not in p.tasks:
        size = args.size or "''"
        ap.error(f"--task {args.task}: --size {size} has {', '.join(sorted(p.tasks))} only")
    root = pathlib.Path(args.workdir or f"runs/search_{args.task}")

    def body():
        logs.setup_console(verbose=args.verbose)
        t0 = time.time()
        with logs.to_file(root):
            rows = search(p, args.task, args.budget, root, args.seed)
        best = json.loads((root / "best_config.json").read_text())
        print(f"[search] {len(rows)} runs in {time.time() - t0:.0f} s; table {root}/results.csv;"
              f" best {best['run']}: {best['score']:.4f} ({best['ratio']:.3f} of the teacher)\n"
              f"  {' '.join(best['flags'])}", flush=True)

    return cli.run(body, workdir=root, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
