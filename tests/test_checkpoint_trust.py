"""Checkpoints you can trust (checkpoint.py): every saved array has a checksum in the meta item;
restore verifies it and falls back to the newest older step that restores when the newest
has a truncated array file, a missing item or a flipped byte (one warning line naming the
step and what was wrong), taking the data position from that same step; the damaged step
is moved aside so it can be saved again. checkpoint.keep must be >= 1."""

import json
import logging
import os
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from prune_ofa_jax import checkpoint as ckpt_lib
from prune_ofa_jax import errors
from prune_ofa_jax.parallel import checksums
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.train import feed as feed_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _state(step: int, mesh=None):
    """A small train-state-like tree: random float bits (incompressible, so a flipped byte
    in the array file changes one value instead of breaking the decompression), a bool
    mask, bf16, an int scalar; sharded over the 8 devices where it splits."""
    mesh = mesh or mesh_lib.make_mesh(8, 1, 1)
    rng = np.random.default_rng(step)
    tree = {"w": rng.integers(0, 2**32, (64, 64), dtype=np.uint32).view(np.float32),
            "mask": rng.random((64, 8)) > 0.5, "h": rng.random(24).astype(jnp.bfloat16),
            "step": np.int32(step)}
    return {k: jax.device_put(v, NamedSharding(mesh, P("data") if k in ("w", "mask") else P()))
            for k, v in tree.items()}


class _Rows:
    def batch(self, k):
        return {"x": np.full((2,), k)}


def _saved(tmp_path, steps=(2, 4, 6)):
    manager = ckpt_lib.make_manager(tmp_path / "ckpt", keep=5, async_save=False)
    for s in steps:
        ckpt_lib.save(manager, s, _state(s), {"signature": {}},
                      data=feed_lib.RandomAccess(_Rows(), s))
    manager.wait_until_finished()
    return manager


def _largest_array_file(step_dir):
    return max((p for p in (step_dir / "state").rglob("d/*") if p.is_file()),
               key=lambda p: p.stat().st_size)


def _truncate(step_dir):
    f = _largest_array_file(step_dir)
    f.write_bytes(f.read_bytes()[:100])


def _flip(step_dir):
    f = _largest_array_file(step_dir)
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    f.write_bytes(bytes(raw))


def _drop(item):
    def drop(step_dir):
        import shutil  # pylint: disable=import-outside-toplevel
        shutil.rmtree(step_dir / item)
    return drop


def test_checksums_see_one_changed_bit_and_ignore_the_sharding():
    a = _state(1)
    replicated = jax.tree.map(
        lambda x: jax.device_put(x, NamedSharding(x.sharding.mesh, P())), a)
    two_way = jax.tree.map(lambda x: jax.device_put(
        x, NamedSharding(mesh_lib.make_mesh(2, 4, 1), P(("data", "fsdp")) if x.ndim else P())),
        a)
    sums = checksums.fingerprints(a)
    assert sorted(sums) == ["['h']", "['mask']", "['step']", "['w']"]
    assert checksums.fingerprints(replicated) == sums == checksums.fingerprints(two_way)
    bits = np.asarray(a["w"]).view(np.uint32)
    flipped, swapped = bits.copy(), bits.copy()
    flipped[17, 3] ^= 1 << 30
    swapped[0, [0, 1]] = swapped[0, [1, 0]]  # the same values, in other places
    for w in (flipped, swapped):
        got = checksums.fingerprints(dict(a, w=jnp.asarray(w.view(np.float32))))
        assert got["['w']"] != sums["['w']"]
        assert {k: v for k, v in got.items() if k != "['w']"} == \
            {k: v for k, v in sums.items() if k != "['w']"}


@pytest.mark.parametrize("damage,why", [
    (_truncate, "state: ValueError: OUT_OF_RANGE"),
    (_drop("state"), 'state: KeyError: \'Item "state" was not found'),
    (_drop("meta"), "meta: KeyError"),
    (_flip, "state: checksum mismatch in 1 of 4 arrays (['w']"),
])
def test_a_damaged_newest_step_falls_back_to_the_older_one(tmp_path, caplog, damage, why):
    manager = _saved(tmp_path)
    damage(tmp_path / "ckpt" / "6")
    it = feed_lib.RandomAccess(_Rows(), 0)
    with caplog.at_level(logging.WARNING, logger="prune_ofa_jax"):
        restored = ckpt_lib.restore(manager, _state(0), data=it)
    assert restored.step == 4 and int(restored.state["step"]) == 4
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.state),
                 jax.device_get(_state(4)))
    assert restored.data_restored and it.position == 4  # the data of the same step
    warned = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING and r.name.startswith("prune_ofa_jax")]
    assert len(warned) == 1, warned
    assert warned[0].startswith(f"checkpoint step 6 in {manager.directory} is damaged ({why}")
    assert warned[0].endswith("; trying the next older step") and "\n" not in warned[0]
    assert manager.all_steps() == [2, 4]  # moved aside: the run can save step 6 again
    assert len(list((tmp_path / "ckpt").glob("damaged-6-*"))) == 1
    ckpt_lib.save(manager, 6, _state(6), {"signature": {}})
    manager.wait_until_finished()
    assert ckpt_lib.restore(manager, _state(0)).step == 6


def test_none_restores_is_one_error_naming_each_step(tmp_path):
    manager = _saved(tmp_path, steps=(2, 4))
    _truncate(tmp_path / "ckpt" / "4")
    _flip(tmp_path / "ckpt" / "2")
    with pytest.raises(ckpt_lib.CheckpointError, match=r"step 4: state: ValueError.*; "
                       r"step 2: state: checksum mismatch"):
        ckpt_lib.restore(manager, _state(0))
    assert manager.all_steps() == [2, 4]  # nothing moved when nothing restored


def test_a_checkpoint_without_checksums_restores_with_a_warning(tmp_path, caplog):
    manager = ckpt_lib.make_manager(tmp_path / "ckpt", async_save=False)
    manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(_state(3)),
                                            meta=ocp.args.JsonSave({"signature": {}})))
    manager.wait_until_finished()
    with caplog.at_level(logging.WARNING, logger="prune_ofa_jax"):
        state, _ = ckpt_lib.restore_latest(manager, _state(0), {"signature": {}})
    assert int(state["step"]) == 3
    assert any("has no checksums" in r.getMessage() for r in caplog.records)


def test_keep_must_be_at_least_one(tmp_path):
    with pytest.raises(errors.ConfigError, match="config.checkpoint.keep: must be >= 1"):
        ckpt_lib.make_manager(tmp_path / "ckpt", keep=0)


def test_two_processes_agree_on_the_checksums_and_on_the_step_to_fall_back_to(tmp_path):
    """2 processes x 4 CPU devices: every host stores and computes the same checksums; step
    8 fails on process 1 only (its shard's file truncated), step 6 in process 1's data
    state, step 4 its checksum. Both hosts skip the same steps, without a hang or a
    mismatched collective, and resume from step 2 (state and data position)."""
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"localhost:{_free_port()}",
               JAX_NUM_PROCESSES="2", JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
               XLA_FLAGS=os.environ["XLA_FLAGS"].replace("device_count=8", "device_count=4"))
    procs = [subprocess.Popen([sys.executable, str(REPO / "tests" / "checkpoint_trust_worker.py"),
                               str(tmp_path / "ckpt")], env=dict(env, JAX_PROCESS_ID=str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    results = []
    for p, out in zip(procs, outs):
        assert p.returncode == 0 and "RESULT" in out, out[-3000:]
        results.append(json.loads(out.split("RESULT", 1)[1].splitlines()[0]))
    assert results[0]["sums"] == results[1]["sums"]
    for i, r in enumerate(results):
        assert (r["step"], r["position"]) == (2, 2), r
        assert [w.split(" in ")[0] for w in r["warnings"]] == [
            "checkpoint step 8", "checkpoint step 6", "checkpoint step 4"], r  # one line each
        assert all(" is damaged (" in w for w in r["warnings"]), r
        assert "checksum mismatch" in r["warnings"][2], r
    assert "OUT_OF_RANGE" in results[1]["warnings"][0]  # the host that read the bad file
    assert "failed on another host" in results[0]["warnings"][0]
