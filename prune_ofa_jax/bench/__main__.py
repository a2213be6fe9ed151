"""`python -m prune_ofa_jax.bench [--config.model=minilm-l6|bert-base-uncased|bert-tiny ...]
[--config.steps=5] [--out DIR]`: speed ratios of the Prune OFA steps, side by side in one run,
written to DIR/bench.json (default bench_results/) and printed as a table."""



from absl import app, flags, logging
from ml_collections import config_flags

from prune_ofa_jax.bench import core, inference
from prune_ofa_jax.bench import input as input_bench
from prune_ofa_jax.bench import settings

FLAGS = flags.FLAGS
config_flags.DEFINE_config_dict("config", settings.get_config(), "Bench settings.")
flags.DEFINE_string("out", "bench_results", "Output directory for bench.json.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every teacher save/load at INFO
    # Two suites are benches of their own: classifier latency and the pre-training input.
    run = {"inference": inference.run, "input": input_bench.run}.get(FLAGS.config.suite,
                                                                     core.run)
    run(FLAGS.config, FLAGS.out)


if __name__ == "__main__":
    app.run(main)
