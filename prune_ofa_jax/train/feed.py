"""The loop's input: an iterator of host-local batches (Grain, or a random-access source) and
the device transfer of the next global batch while the current step runs.

Every train source offers `iterator(...)`-style access through `host_iterator`:
  - a prepared corpus (data/stream.py): its Grain iterator (worker processes, prefetch);
  - any source with `.batch(k)` (the in-memory text path, GLUE, SQuAD): `RandomAccess`,
    batch k on demand.
Both have a JSON state (`get_state`/`set_state`, bytes) that the checkpoint saves beside the
train state (checkpoint.py, item "data"), so a resumed run continues the identical stream.

`Feed` keeps one global batch ready on the device: the loop takes it, dispatches the step
(asynchronously), does its bookkeeping, then calls `prefetch()`, which pulls the next host
batch and starts its transfer while the device is still running the step. The iterator's
state at a checkpoint is therefore exactly "after the batches trained so far".
"""

from __future__ import annotations

import json
from typing import Optional

from prune_ofa_jax.parallel import mesh as mesh_lib


class RandomAccess:
    """An iterator over `source.batch(k)` for k = position, position + 1, ..."""

    def __init__(self, source, position: int = 0):
        self.source, self.position = source, int(position)

    def __iter__(self):
        return self

    def __next__(self):
        batch = self.source.batch(self.position)
        self.position += 1
        return batch

    def get_state(self) -> bytes:
        return json.dumps({"position": self.position}).encode()

    def set_state(self, state: bytes) -> None:
        self.position = int(json.loads(state)["position"])

    def start_prefetch(self) -> None:
        """grain.checkpoint calls this after a restore; nothing to start here."""

    def close(self) -> None:
        pass


def host_iterator(source, position: int, worker_count: int = 2, prefetch: int = 2):
    """This host's batches from global batch `position` on. A streamed source starts at 0;
    the loop then restores its saved state (a stream has no cheap seek by position)."""
    if hasattr(source, "iterator"):
        return source.iterator(worker_count=worker_count, prefetch=prefetch)
    return RandomAccess(source, position)


class Feed:
    """One global batch on the device ahead of the step that will use it."""

    def __init__(self, iterator, mesh, accum: Optional[int]):
        self.iterator, self.mesh, self.accum = iterator, mesh, accum
        self._next = None

    def prefetch(self) -> None:
        """Pull the next host batch and start its transfer (returns before it lands)."""
        if self._next is None:
            self._next = mesh_lib.global_batch(next(self.iterator), self.mesh, accum=self.accum)

    def peek(self) -> dict:
        """The prefetched batch (prefetch() first), left in place."""
        return self._next

    def take(self) -> dict:
        self.prefetch()
        batch, self._next = self._next, None
        return batch

    def close(self) -> None:
        self.iterator.close()
