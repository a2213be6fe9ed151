"""The Distiller study (He et al. 2021) at a scale two CPU cores can run:

  python -m prune_ofa_jax.study distiller --workdir runs/distiller [--doc]
  python -m prune_ofa_jax.study distiller --workdir DIR --config configs/distiller_study.py:test

Teacher: MiniLM-L6 fine-tuned per task. Student: 3 layers initialised from MiniLM's layers
{1, 3, 5}. Tasks: SST-2 (the full training set, the 872-row dev set) and the disaster tweets
(one fixed 90/10 split for every seed and the teacher: data.split_seed); no MRPC (it
separates nothing here). Rows, each for every seed, each adding one thing to the row before
(kdsearch/candidates.py FIXED):
  student     the student fine-tuned alone;
  logits_kd   + soft-CE KD on the logits (T = 2, 0.5 hard / 0.5 soft);
  hidden_mse  + hidden-state MSE over the skip map;
  mi_alpha    MI-alpha (alpha 0.9) instead of the MSE;
  augment     + contextual augmentation with our masked LM, at equal rows seen (half of each
              16-row batch is augmented rows);
  autodistiller  the pipeline AutoDistiller recommends for the task (fitted on the other
              task's rows only: the fixed rows and `search_budget` searched pipelines), run
              with every seed and measured.
Reported: per row the mean and 95 % t interval over seeds, the paired difference against the
student alone (same seed: same data order and head init), the majority-class and random
baselines, the verdicts of the rules stated in the config. Every run is an ordinary training
run (kdsearch/runs.py) in WORKDIR/<name>; rerunning the command skips finished runs.
WORKDIR/summary.json, table.md, distiller.png and meta_table.csv hold the result; --doc
writes them into docs/studies/distiller.md and ships the meta-table into the package
(kdsearch/meta_table.csv).
"""

from __future__ import annotations

import pathlib
import shutil
import sys
import time

from prune_ofa_jax import logs
from prune_ofa_jax.kdsearch import autodistiller, candidates, random_search, runs
from prune_ofa_jax.study import cost, distiller_report, harness


def _say(msg: str) -> None:
    print(f"[distiller] {msg}", flush=True)


def fixed_rows(p, root, prepared, metas) -> list:
    out = []
    for seed in p.seeds:
        for task in p.tasks:
            for row in p.rows:
                pipe = candidates.FIXED[row]
                name = f"{task}_{row}_s{seed}"
                cfg = runs.student_config(p, task, pipe, seed, prepared[task])
                rep = runs.run_once(cfg, root / name, name)
                out.append(random_search.row(task, row, name, seed, pipe, rep,
                                      prepared[task]["teacher_report"], metas[task]))
    return out


def searched_rows(p, root, prepared, metas) -> list:
    """`search_budget` pipelines per task (the search CLI's, tables in root/search_<task>)."""
    out = []
    for task in p.tasks:
        if p.search_budget:
            out += random_search.search(p, task, p.search_budget, root / f"search_{task}", p.seeds[0],
                                 dirs=prepared[task], meta=metas[task], runs_root=root)
    return out


def picked_rows(p, root, prepared, metas, table) -> tuple:
    """AutoDistiller's recommendation per task (fitted without the task's rows), run with
    every seed: the one pick the table reports, measured."""
    out, picks = [], {}
    for task in p.tasks:
        pred, pipe = autodistiller.recommend(table, task, metas[task], p.candidates)[0]
        picks[task] = {"predicted_ratio": pred, "pipeline": pipe, "reused": []}
        _say(f"AutoDistiller's pick for {task} (fitted on the other tasks): {pipe} "
             f"(predicted {pred:.3f} of the teacher)")
        for seed in p.seeds:
            same = [r for r in table if r["task"] == task and r["seed"] == seed
                    and candidates.key(autodistiller.pipe_of(r)) == candidates.key(pipe)]
            if same:  # the pick is a pipeline this seed already ran: that run measures it
                out.append({**same[0], "source": "autodistiller"})
                picks[task]["reused"].append(same[0]["run"])
                continue
            name = f"{task}_autodistiller_s{seed}"
            cfg = runs.student_config(p, task, pipe, seed, prepared[task])
            rep = runs.run_once(cfg, root / name, name)
            out.append(random_search.row(task, "autodistiller", name, seed, pipe, rep,
                                  prepared[task]["teacher_report"], metas[task]))
    return out, picks


def run(p, workdir) -> dict:
    root = harness.open_workdir(p, workdir)
    t0 = time.time()
    with logs.to_file(root):
        prepared = {t: runs.prepare(p, root, t) for t in p.tasks}
        metas = {t: autodistiller.task_meta(p, t, prepared[t], root) for t in p.tasks}
        rows = fixed_rows(p, root, prepared, metas) + searched_rows(p, root, prepared, metas)
        picks, loto = {}, {}
        if len(p.tasks) > 1:  # AutoDistiller is fitted on the other tasks' rows
            loto = autodistiller.leave_one_task_out(rows)
            picked, picks = picked_rows(p, root, prepared, metas, rows)
            rows += picked
        random_search.write_table(rows, root, "meta_table")
        baselines = {t: distiller_report.baselines(runs.teacher_config(p, t)) for t in p.tasks}
        summary = distiller_report.summarise(p, rows, picks, prepared, loto, baselines)
    summary["wall_time_s"] = round(time.time() - t0, 1)
    # every run of the study: masked LM, teachers, fixed, searched and picked rows
    summary.update(cost.cost_of_runs_under(root))
    return harness.save(root, summary, distiller_report, "distiller.png")


def _ship_meta_table(workdir) -> None:
    """With --doc, the meta-table AutoDistiller recommends from ships in the package."""
    shutil.copyfile(pathlib.Path(workdir) / "meta_table.csv", autodistiller.TABLE)
    _say(f"meta-table -> {autodistiller.TABLE}")


STUDY = harness.Study(name="distiller", marker="distiller", plot="distiller.png", run=run,
                      markdown=distiller_report.markdown, alt="Distiller study", doc=__doc__,
                      config="configs/distiller_study.py", on_doc=_ship_meta_table)


def main(argv=None) -> int:
    return harness.main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
