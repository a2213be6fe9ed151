"""`python -m prune_ofa_jax.distill.search`: an old spelling of `python -m
prune_ofa_jax.kdsearch.random_search` (the KD-pipeline search); it forwards there."""

import sys

from prune_ofa_jax import cli
from prune_ofa_jax.kdsearch import random_search


def main(argv=None) -> int:
    cli.deprecated("python -m prune_ofa_jax.distill.search",
                   "python -m prune_ofa_jax.kdsearch.random_search")
    return random_search.main(argv)


if __name__ == "__main__":
    sys.exit(main())
