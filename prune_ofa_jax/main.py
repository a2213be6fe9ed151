"""Entry point: `python -m prune_ofa_jax.main --config configs/<recipe>.py[:arg] --workdir DIR
[--config.key=value ...]`. A config with a `pipeline` runs its stages in order (the demo);
any other config is one training run."""

import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Recipe file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Output dir: checkpoints, metrics, report.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    # Imported here so --help stays fast and flags parse before jax initialises.
    from prune_ofa_jax import pipeline  # pylint: disable=import-outside-toplevel
    from prune_ofa_jax.train import loop  # pylint: disable=import-outside-toplevel
    if "pipeline" in FLAGS.config:
        pipeline.run(FLAGS.config, FLAGS.workdir)
    else:
        loop.run(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
