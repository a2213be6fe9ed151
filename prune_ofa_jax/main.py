"""Entry point: `python -m prune_ofa_jax.main --config configs/<recipe>.py[:arg] --workdir DIR
[--config.key=value ...] [--verbose]`. A config with a `pipeline` runs its stages in order
(the demo); any other config is one training run. The console shows our own lines, warnings
and the progress bar; the full log (library INFO too) is WORKDIR/log.txt."""

import sys

from absl import app, flags
from ml_collections import config_flags

from prune_ofa_jax import demo, logs
from prune_ofa_jax.train import loop

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Recipe file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Output dir: checkpoints, metrics, report.json, log.txt.")
flags.DEFINE_bool("verbose", False, "Library INFO (Orbax, JAX) on the console too.")
flags.mark_flags_as_required(["config", "workdir"])

EXIT_PREEMPTED = 143  # 128 + SIGTERM: the run did not finish; rerun the command to resume


def main(argv):
    del argv
    # Imported here so --help stays fast and flags parse before jax initialises.
    logs.setup_console(verbose=FLAGS.verbose)
    try:
        if "pipeline" in FLAGS.config:
            demo.run(FLAGS.config, FLAGS.workdir)
        else:
            loop.run(FLAGS.config, FLAGS.workdir)
    except loop.Preempted as e:
        print(f"[prune_ofa_jax] {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_PREEMPTED)


if __name__ == "__main__":
    app.run(main)
