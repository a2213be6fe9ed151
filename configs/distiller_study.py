"""The Distiller study (prune_ofa_jax/study/distiller.py):

  python -m prune_ofa_jax.study.distiller --config configs/distiller_study.py --workdir DIR
Args: "" (the study measured in the README) or "test" (a few steps per run: the suite's).
"""

from prune_ofa_jax.kdsearch import candidates, runs


def get_config(arg: str = ""):
    p = runs.settings(arg)
    p.search_budget = 1   # searched pipelines per task, beside the fixed rows (meta-table)
    p.candidates = 16 if arg == "test" else 256   # pipelines AutoDistiller ranks per task
    # The fixed rows (distill/pipelines.py FIXED); the tiny test runs the last one (KD +
    # MI-alpha + contextual augmentation: every code path of the rows before it).
    p.rows = ("augment",) if arg == "test" else tuple(candidates.FIXED)
    return p
