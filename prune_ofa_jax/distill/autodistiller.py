"""`python -m prune_ofa_jax.distill.autodistiller`: an old spelling of `python -m
prune_ofa_jax.kdsearch.autodistiller` (AutoDistiller); it forwards there."""

import sys

from prune_ofa_jax import cli
from prune_ofa_jax.kdsearch import autodistiller


def main(argv=None) -> int:
    cli.deprecated("python -m prune_ofa_jax.distill.autodistiller",
                   "python -m prune_ofa_jax.kdsearch.autodistiller")
    return autodistiller.main(argv)


if __name__ == "__main__":
    sys.exit(main())
