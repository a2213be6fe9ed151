"""The small-scale reproduction of Prune OFA's claims (prune_ofa_jax/study/reproduce.py):

  python -m prune_ofa_jax.study.reproduce --config configs/reproduce.py --workdir runs/reproduce
Args: "" (the study measured in the README) or "test" (a few steps per run: the suite's).
"""

from prune_ofa_jax.study import reproduce


def get_config(arg: str = ""):
    return reproduce.get_config(arg)
