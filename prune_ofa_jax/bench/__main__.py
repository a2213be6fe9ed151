"""Speed ratios of the Prune OFA steps, side by side in one run (also `python -m prune_ofa_jax
bench`):

  python -m prune_ofa_jax.bench [--config.model=minilm-l6|bert-base-uncased|bert-tiny ...]
      [--config.steps=5] [--config.suite=all|kd|presets|input|inference|obs] [--workdir DIR]

Writes DIR/bench.json (default bench_results/) and prints the figures as a table. The bench
settings are the config below (bench/settings.py), each overridden as --config.KEY=VALUE.
"""

import sys

from absl import logging as absl_logging

from prune_ofa_jax import cli
from prune_ofa_jax.bench import core, inference, obs_bench
from prune_ofa_jax.bench import input as input_bench
from prune_ofa_jax.bench import settings

MODULE = "prune_ofa_jax.bench"


def parser() -> cli.Parser:
    p = cli.Parser(MODULE, description=__doc__)
    p.add_config(config=settings.get_config(), lock=True)
    p.add_workdir("output dir for bench.json (default bench_results).", required=False,
                  default="bench_results")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)

    def body():
        absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs each save/load at INFO
        # Three suites are benches of their own: classifier latency, the pre-training input
        # and second-order pruning's cost.
        run = {"inference": inference.run, "input": input_bench.run,
               "obs": obs_bench.run}.get(args.config.suite, core.run)
        run(args.config, args.workdir)

    return cli.run(body, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
