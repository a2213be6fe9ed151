"""Train from a recipe: `python -m prune_ofa_jax.main --config configs/<recipe>.py[:arg]
--workdir DIR [--config.key=value ...] [--verbose]` (also `python -m prune_ofa_jax train`).

A config with a `pipeline` runs its stages in order (the demo); any other config is one
training run. Rerunning the same command resumes an interrupted run. The console shows our
own lines, warnings and the progress bar; the full log (library INFO too) is WORKDIR/log.txt.
A bad config value is one `error: config.<key>: ...` line (exit status 2), also written to
WORKDIR/log.txt with its traceback; a preempted run (SIGTERM) exits with status 143.
"""

import sys

from prune_ofa_jax import cli, demo, logs
from prune_ofa_jax.data import common, records
from prune_ofa_jax.train import loop

MODULE = "prune_ofa_jax.main"


def parser() -> cli.Parser:
    p = cli.Parser(MODULE, description=__doc__)
    p.add_config(required=True, help="the recipe, e.g. configs/demo.py or "
                 "configs/finetune_glue.py:sst2 (the text after ':' is its argument).")
    p.add_workdir("output dir: checkpoints, metrics.jsonl, report.json, model/, log.txt.")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)

    def body():
        logs.setup_console(verbose=args.verbose)
        if "pipeline" in args.config:
            demo.run(args.config, args.workdir)
        else:
            loop.run(args.config, args.workdir,
                     explicit=cli.override_keys(args.config_overrides))

    return cli.run(body, workdir=args.workdir, verbose=args.verbose,
                   user_errors=(common.DataError, records.PreparedDataError, FileNotFoundError),
                   exits={loop.Preempted: cli.EXIT_PREEMPTED})


if __name__ == "__main__":
    sys.exit(main())
