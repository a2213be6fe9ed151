"""One JAX process of the 2-process test (tests/test_multihost.py): runs the :test upstream
recipe with loop.run under jax.distributed (the env names the coordinator, process count
and id). argv: workdir, overrides as JSON, and the Feed.take call at which to die (0 =
never), like a host lost to preemption without warning."""

import json
import os
import sys

import train_helpers

from prune_ofa_jax.train import feed, loop


def main():
    workdir, overrides, kill_at = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    c = train_helpers.recipe("prune_ofa_bert_base", "test", resolve=False)
    c.update_from_flattened_dict(overrides)
    if kill_at:
        take, calls = feed.Feed.take, [0]

        def dying_take(self):
            calls[0] += 1
            if calls[0] == kill_at:
                os._exit(17)  # no cleanup, no checkpoint: a hard kill
            return take(self)
        feed.Feed.take = dying_take
    loop.run(c, workdir)


if __name__ == "__main__":
    main()
