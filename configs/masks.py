"""The mask-method comparison (prune_ofa_jax/study/masks.py, issue 13):

  python -m prune_ofa_jax.study.masks --config configs/masks.py --workdir runs/masks
Args: "" (the study measured in the README) or "test" (a few steps per run: the suite's).
"""

from prune_ofa_jax.study import masks


def get_config(arg: str = ""):
    return masks.get_config(arg)
