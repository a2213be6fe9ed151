"""One process of tests/test_checkpoint_trust.py's two-process check (argv: the checkpoint
dir): saves steps 2-8 of a state sharded over both processes, process 0 damages step 8 (an
array file only process 1 reads, truncated), step 6 (process 1's data state) and step 4 (a
flipped byte), and both restore. Prints one JSON line: the checksums, the restored step and
data position, and the damage warnings."""

import json
import logging
import pathlib
import sys

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from prune_ofa_jax.parallel import mesh as mesh_lib

mesh_lib.maybe_initialize_distributed()

from prune_ofa_jax import checkpoint as ckpt_lib  # noqa: E402  (after distributed init)
from prune_ofa_jax.parallel import checksums  # noqa: E402
from prune_ofa_jax.train import feed as feed_lib  # noqa: E402


class _Rows:
    def batch(self, k):
        return {"x": np.full((2,), k)}


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        if record.name.startswith("prune_ofa_jax"):
            self.lines.append(record.getMessage())


def _state(mesh, step: int) -> dict:
    w = np.random.default_rng(step).integers(0, 2**32, (64, 64), dtype=np.uint32)
    w = w.view(np.float32)
    return {"w": jax.make_array_from_callback(w.shape, NamedSharding(mesh, P("data")),
                                              lambda idx: w[idx]),
            "step": jax.make_array_from_callback((), NamedSharding(mesh, P()),
                                                 lambda idx: np.int32(step))}


def main(root: pathlib.Path) -> None:
    mesh = mesh_lib.make_mesh(8, 1, 1)
    manager = ckpt_lib.make_manager(root, keep=5)
    for step in (2, 4, 6, 8):
        ckpt_lib.save(manager, step, _state(mesh, step), {"signature": {}},
                      data=feed_lib.RandomAccess(_Rows(), step))
    manager.wait_until_finished()
    sums = checksums.fingerprints(_state(mesh, 8))
    mesh_lib.sync_hosts("checkpoint_trust_saved")
    if jax.process_index() == 0:
        host1 = sorted((root / "8" / "state").rglob("ocdbt.process_1/d/*"),
                       key=lambda p: p.stat().st_size)[-1]
        host1.write_bytes(host1.read_bytes()[:50])
        (root / "6" / "data" / "process_1-of-2.json").write_text("{broken")
        flip = max((root / "4" / "state").rglob("d/*"), key=lambda p: p.stat().st_size)
        raw = bytearray(flip.read_bytes())
        raw[len(raw) // 2] ^= 1
        flip.write_bytes(bytes(raw))
    mesh_lib.sync_hosts("checkpoint_trust_damaged")
    warnings = _Warnings()
    logging.getLogger().addHandler(warnings)
    it = feed_lib.RandomAccess(_Rows(), 0)
    restored = ckpt_lib.restore(ckpt_lib.make_manager(root, keep=5), _state(mesh, 0), data=it)
    print("RESULT" + json.dumps({"sums": sums, "step": restored.step, "position": it.position,
                                 "warnings": warnings.lines}), flush=True)


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
