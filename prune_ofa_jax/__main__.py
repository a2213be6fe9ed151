"""Every command of the package, by name (the `prune-ofa` console script too).

  python -m prune_ofa_jax <command> [flags]
  python -m prune_ofa_jax <command> --help      (the command's flags)

The registry maps a command to its module; only the chosen one is imported, so `--help` here
stays fast and one command's imports never slow another.
"""

import difflib
import importlib
import importlib.util
import os
import sys

from prune_ofa_jax import cli

COMMANDS = {  # command: (the module `python -m` runs, with main(argv) -> int; what it does)
    "train": ("prune_ofa_jax.main", "train from a recipe: a run, or the demo's pipeline"),
    "bench": ("prune_ofa_jax.bench", "speed ratios of the training steps, latency benches"),
    "convert": ("prune_ofa_jax.convert", "HF dir <-> params checkpoint <-> .pofa file"),
    "prepare": ("prune_ofa_jax.data.prepare", "tokenise a pre-training corpus (Beam)"),
    "student": ("prune_ofa_jax.distill.student", "a shallower student from a teacher's layers"),
    "kd-search": ("prune_ofa_jax.kdsearch.random_search", "random search over KD pipelines"),
    "autodistiller": ("prune_ofa_jax.kdsearch.autodistiller",
                      "recommend a KD pipeline for a task"),
    "nas": ("prune_ofa_jax.nas", "AutoTinyBERT: supernet, search, extract, fine-tune"),
    "extract": ("prune_ofa_jax.nas.extract", "a supernet sub-model as a plain HF BERT"),
    "study": ("prune_ofa_jax.study", "the studies: compression, masks, reproduce, distiller, obs"),
    "tweets": ("prune_ofa_jax.study.tweets", "Kaggle disaster-tweets predictions (a CSV)"),
    "prune-once": ("prune_ofa_jax.prune_once", "one-shot magnitude / OBS pruning, scored"),
}


CONSOLE_SCRIPT = "prune-ofa"


def _prog() -> str:
    typed = os.path.basename(sys.argv[0]) if sys.argv else ""
    return CONSOLE_SCRIPT if typed == CONSOLE_SCRIPT else "python -m prune_ofa_jax"


def load(module: str):
    """The module `python -m <module>` runs (a package's __main__)."""
    spec = importlib.util.find_spec(module)
    return importlib.import_module(f"{module}.__main__" if spec.submodule_search_locations
                                   else module)


def usage(prog: str) -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:{width}}  {what}" for name, (_, what) in COMMANDS.items())
    return (f"usage: {prog} <command> [flags]\n\n{__doc__.splitlines()[0]}\n\ncommands:\n{rows}"
            f"\n\n`{prog} <command> --help` for a command's flags.")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = _prog()
    if argv and argv[0] in ("-h", "--help"):
        print(usage(prog))
        return cli.EXIT_OK
    if not argv or argv[0] not in COMMANDS:
        got = f"unknown command {argv[0]!r}" if argv else "a command is required"
        near = difflib.get_close_matches(argv[0], COMMANDS, n=1) if argv else []
        hint = f"; did you mean {near[0]}?" if near else f": one of {', '.join(COMMANDS)}"
        cli.say_error(f"{got}{hint} (see {prog} --help)")
        return cli.EXIT_USAGE
    module = COMMANDS[argv[0]][0]
    cli.invoked_as(module, f"{prog} {argv[0]}")
    return load(module).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
