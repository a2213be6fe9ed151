"""The Distiller study (prune_ofa_jax/study/distiller.py):

  python -m prune_ofa_jax.study distiller --config configs/distiller_study.py --workdir DIR
Args: "" (the study on docs/studies/distiller.md) or "test" (a few steps per run: the suite's).

Stated before the runs (the page repeats them): every row is compared with the student alone,
paired by seed, and these rules give the verdicts (margin in points of the task's metric;
a - b on the 95 % t interval of the paired difference; margin 0: superiority, a > b):
  intermediate   hidden_mse  > logits_kd            (distilling hidden states helps)
  mi_alpha       mi_alpha   >= hidden_mse - 1       (MI-alpha at least as good as MSE)
  augmentation   augment     > mi_alpha             (augmentation helps, at equal rows seen)
  autodistiller  autodistiller >= best fixed row - 1   (its pick, run and measured)
"""

import ml_collections

from prune_ofa_jax.kdsearch import candidates, runs


def get_config(arg: str = ""):
    p = runs.settings(arg)
    # SST-2 (its full 67k-row training set) and the tweets (the fixed 90/10 split); no MRPC:
    # its dense model scores the majority class's F1 there, so it separates nothing.
    if arg == "test":
        tiny = p.tasks.tweets.to_dict()
        p.tasks = ml_collections.ConfigDict({"sst2": {**tiny, "kind": "glue"}, "tweets": tiny})
    else:
        del p.tasks["mrpc"]
    p.search_budget = 1   # searched pipelines per task, beside the fixed rows (meta-table)
    p.candidates = 16 if arg == "test" else 256   # pipelines AutoDistiller ranks per task
    # The fixed rows (kdsearch/candidates.py FIXED); the tiny test runs the last one (KD +
    # MI-alpha + contextual augmentation: every code path of the rows before it) beside the
    # student alone, the reference of every paired difference.
    p.rows = ("student", "augment") if arg == "test" else tuple(candidates.FIXED)
    # (name, a, b, margin in points, what it tests); "best_fixed" = the task's best fixed row
    p.rules = (("intermediate", "hidden_mse", "logits_kd", 0.0,
                "distilling hidden states helps"),
               ("mi_alpha", "mi_alpha", "hidden_mse", 1.0, "MI-alpha at least as good as MSE"),
               ("augmentation", "augment", "mi_alpha", 0.0,
                "augmentation helps, at equal rows seen"),
               ("autodistiller", "autodistiller", "best_fixed", 1.0,
                "AutoDistiller's pick at least as good as the best fixed row"))
    return p
