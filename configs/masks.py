"""The learned-masks study (prune_ofa_jax/study/mask_methods.py, docs/studies/masks.md):

  python -m prune_ofa_jax.study masks --config configs/masks.py --workdir runs/masks
Args: "" (the study on its page: SST-2, 3 seeds, 50 %) or "test" (a few steps per run: the
suite's).
"""

from prune_ofa_jax.study import mask_methods


def get_config(arg: str = ""):
    return mask_methods.get_config(arg)
