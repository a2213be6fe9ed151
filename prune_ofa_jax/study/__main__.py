"""Every study, one command (also `python -m prune_ofa_jax study`):

  python -m prune_ofa_jax.study <name> --workdir DIR [its flags] [--doc [PAGE]]

  compression  what compression costs beyond accuracy, on the demo's models
  masks        mask-learning methods compared on one protocol
  reproduce    the paper's claim (prune once upstream, with KD) as a comparison
  distiller    the Distiller study: KD pipelines, a search and AutoDistiller
  obs          second-order pruning (OBS / oBERT) vs magnitude, one-shot and gradual
  structured   score vs measured onnxruntime latency for every compression method

Each runs its training runs into DIR (rerunning the command continues it) and writes its
summary, table and plot there; --doc writes the table and plot into its page,
docs/studies/<name>.md. `python -m prune_ofa_jax.study <name> --help` lists a study's flags.
"""

import sys

from prune_ofa_jax import cli
from prune_ofa_jax.study import (compress_study, distiller, harness, mask_methods, obs_study,
                                 reproduce, structured_study)

STUDIES = {
    "compression": compress_study.STUDY,
    "masks": mask_methods.STUDY,
    "reproduce": reproduce.STUDY,
    "distiller": distiller.STUDY,
    "obs": obs_study.STUDY,
    "structured": structured_study.STUDY,
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = cli.usage_name(harness.MODULE)
    if argv and argv[0] in STUDIES:
        return harness.main(STUDIES[argv[0]], argv[1:])
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: {prog} {{{','.join(STUDIES)}}} --workdir DIR ...\n\n{__doc__}")
        return cli.EXIT_OK
    if argv and argv[0].startswith("-"):  # the compression study's flags, without its name
        return harness.main(STUDIES["compression"], argv, warning=(
            f"{prog} without a study name is deprecated; use {prog} compression"))
    got = f"unknown study {argv[0]!r}" if argv else "a study name is required"
    cli.say_error(f"{got}: one of {', '.join(STUDIES)} (see {prog} --help)")
    return cli.EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
