"""AutoTinyBERT end to end: `python -m prune_ofa_jax.nas --config configs/autotinybert.py
--workdir DIR [--config.nas.search.budget=50 ...] [--readme README.md]` (stages: nas/pipeline.py).
Rerunning the command skips finished stages and resumes an interrupted one."""

import pathlib
import sys

from absl import app, flags
from ml_collections import config_flags

from prune_ofa_jax import logs
from prune_ofa_jax.nas import report, stages
from prune_ofa_jax.study import harness
from prune_ofa_jax.train import loop

config_flags.DEFINE_config_file("config", "configs/autotinybert.py",
                                "configs/autotinybert.py[:test]", lock_config=True)
flags.DEFINE_string("workdir", None, "Output dir: one sub-dir per stage, report.json, table.md, "
                    "autotinybert.png.")
flags.DEFINE_string("readme", "", "Write the table and plot into this README's NAS section.")
flags.DEFINE_bool("verbose", False, "Library INFO on the console too.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    f = flags.FLAGS
    logs.setup_console(verbose=f.verbose)
    try:
        summary = stages.run(f.config, f.workdir)
    except loop.Preempted as e:
        print(f"[autotinybert] {e}", file=sys.stderr, flush=True)
        sys.exit(143)
    if f.readme:
        harness.write(f.readme, "autotinybert", report.markdown(summary),
                  pathlib.Path(f.workdir) / "autotinybert.png", "accuracy vs measured latency",
                  "python -m prune_ofa_jax.nas --config configs/autotinybert.py "
                  "--workdir DIR --readme README.md")


if __name__ == "__main__":
    app.run(main)
