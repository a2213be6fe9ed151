"""`python -m prune_ofa_jax.study.masks`: an old spelling of `python -m prune_ofa_jax.study
masks` (the mask-methods study, study/mask_methods.py); it forwards there."""

import sys

from prune_ofa_jax import cli
from prune_ofa_jax.study import mask_methods


def main(argv=None) -> int:
    cli.deprecated("python -m prune_ofa_jax.study.masks", "python -m prune_ofa_jax.study masks")
    return mask_methods.main(argv)


if __name__ == "__main__":
    sys.exit(main())
