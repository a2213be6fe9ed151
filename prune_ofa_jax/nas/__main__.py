"""AutoTinyBERT end to end (also `python -m prune_ofa_jax nas`):

  python -m prune_ofa_jax.nas --workdir DIR [--config configs/autotinybert.py[:test]]
      [--config.nas.search.budget=50 ...] [--doc [PAGE]]

Stages (nas/stages.py): the supernet, latency measurements and the latency predictor, the
evolutionary search, the extracted sub-models and their fine-tunes, the table. Rerunning the
command skips finished stages and resumes an interrupted one. --doc writes the table and the
accuracy/latency plot into PAGE (default docs/studies/autotinybert.md).
"""

import pathlib
import shlex
import sys

from prune_ofa_jax import cli, errors, logs
from prune_ofa_jax.nas import report, stages
from prune_ofa_jax.study import harness
from prune_ofa_jax.train import loop

MODULE = "prune_ofa_jax.nas"
PAGE = "docs/studies/autotinybert.md"


def parser() -> cli.Parser:
    p = cli.Parser(MODULE, description=__doc__)
    p.add_config("configs/autotinybert.py", help="the pipeline's settings (:test: the "
                 "suite's tiny size).")
    p.add_workdir("output dir: one sub-dir per stage, report.json, table.md, autotinybert.png.")
    harness.add_doc(p, PAGE)
    return p


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.doc:
        try:
            harness.check_page(args.doc, "autotinybert")
        except errors.UserError as e:
            p.error(str(e))

    def body():
        logs.setup_console(verbose=args.verbose)
        summary = stages.run(args.config, args.workdir)
        if args.doc:
            given = ["--config", args.config_file] if args.config_file else []
            line = " ".join([f"python -m {MODULE}", *map(shlex.quote, given),
                             *map(shlex.quote, args.config_overrides), "--workdir DIR --doc",
                             shlex.quote(args.doc)])
            harness.write(args.doc, "autotinybert", report.markdown(summary),
                          pathlib.Path(args.workdir) / "autotinybert.png",
                          "accuracy vs measured latency", line)
            print(f"[autotinybert] wrote the table and plot into {args.doc}", flush=True)

    return cli.run(body, workdir=args.workdir, verbose=args.verbose,
                   exits={loop.Preempted: cli.EXIT_PREEMPTED})


if __name__ == "__main__":
    sys.exit(main())
