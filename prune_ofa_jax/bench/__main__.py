"""`python -m prune_ofa_jax.bench [--config.model=minilm-l6|bert-base-uncased|bert-tiny ...]
[--config.steps=5] [--out DIR]`: speed ratios of the Prune OFA steps, side by side in one run,
written to DIR/bench.json (default bench_results/) and printed as a table."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from prune_ofa_jax.bench import settings  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_dict("config", settings.get_config(), "Bench settings.")
flags.DEFINE_string("out", "bench_results", "Output directory for bench.json.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every teacher save/load at INFO
    if FLAGS.config.suite == "inference":  # classifier latency: another bench, same command
        from prune_ofa_jax.bench import inference  # pylint: disable=import-outside-toplevel
        inference.run(FLAGS.config, FLAGS.out)
        return
    from prune_ofa_jax.bench import core  # pylint: disable=import-outside-toplevel
    core.run(FLAGS.config, FLAGS.out)


if __name__ == "__main__":
    app.run(main)
