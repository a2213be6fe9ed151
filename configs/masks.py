"""The mask-method comparison (prune_ofa_jax/study/mask_methods.py):

  python -m prune_ofa_jax.study.mask_methods --config configs/masks.py --workdir runs/masks
Args: "" (the study measured in the README) or "test" (a few steps per run: the suite's).
"""

from prune_ofa_jax.study import mask_methods


def get_config(arg: str = ""):
    return mask_methods.get_config(arg)
