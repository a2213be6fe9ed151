"""One Orbax CheckpointManager factory; restore onto the abstract sharded train state.

A checkpoint holds the whole TrainState (params, optimizer state, masks, QAT EMA stats,
step, data position), the input iterator's state ("data": one JSON file per process, written
by Grain's Orbax handler, so a Grain stream resumes where it stopped on every host) and a
JSON "meta" item with the model config, the task and the run's
signature; a restart with a different model shape or task fails with one clear error
instead of a shape mismatch deep inside Orbax. The teacher is never saved.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import grain.checkpoint as grain_ckpt
import jax
import orbax.checkpoint as ocp
from etils import epath

from prune_ofa_jax import paths

DATA = "data"


class CheckpointMismatchError(ValueError):
    """The checkpoint in the workdir was written by a run with another model or task."""


def _array_writes_across_processes_only() -> None:
    """Orbax splits the writing of a replicated array across its replicas ("replica-parallel"),
    slicing every array once per replica with an eagerly compiled XLA slice per shape. That
    parallelises the writes only when the replicas sit on different hosts; within one
    process it writes the same bytes and compiles a slice per parameter shape on the first
    save (88 compiles, a third of a tiny run's time, measured). Replica-parallel stays on
    for multi-process runs, where the hosts share the writing."""
    want = jax.process_count() > 1
    handler = ocp.type_handlers.get_type_handler(jax.Array)
    if getattr(handler, "_use_replica_parallel", want) != want:
        # A copy of the registered handler (its array-metadata store and the rest kept as
        # Orbax set them), this one setting changed; Orbax has no public switch for it in
        # the CheckpointManager API.
        handler = copy.copy(handler)
        handler._use_replica_parallel = want  # pylint: disable=protected-access
        ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


def make_manager(directory, *, keep: int = 3, async_save: bool = True) -> ocp.CheckpointManager:
    """The run's manager. When to save is the loop's decision (`should_save`), never Orbax's:
    its interval policy also saves the first step it sees (a wasted full checkpoint)."""
    _array_writes_across_processes_only()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=1, enable_async_checkpointing=async_save,
        create=True)
    return ocp.CheckpointManager(paths.absolute(directory), options=options,
                                 item_names=("state", "meta", DATA))


def should_save(done: int, every: int, total: int, preempted: bool = False) -> bool:
    """After `done` steps: on the interval, at the end, and when preempted. Nothing else."""
    return done % every == 0 or done == total or preempted


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict,
         data: Any = None) -> bool:
    """`data`: an iterator with get_state() -> bytes (train/feed.py), saved per process."""
    items = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    if data is not None:
        items[DATA] = grain_ckpt.CheckpointSave(data)
    return manager.save(step, args=ocp.args.Composite(**items), force=True)


def restore_data(manager: ocp.CheckpointManager, step: int, iterator: Any) -> bool:
    """Sets `iterator` to the state saved at `step`; False when that checkpoint has none."""
    if not (epath.Path(manager.directory) / str(step) / DATA).exists():
        return False
    manager.restore(step, args=ocp.args.Composite(**{DATA: grain_ckpt.CheckpointRestore(
        iterator)}))
    return True


def _abstract(tree):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree)


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any,
                   expected_meta: dict) -> Optional[tuple[Any, dict]]:
    """(state, meta) from the newest checkpoint, or None when there is none.

    `abstract_state`: ShapeDtypeStructs with shardings (or real arrays, whose shapes and
    shardings are used). Keys of `expected_meta` under "signature" must match.
    """
    step = manager.latest_step()
    if step is None:
        return None
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    want, got = expected_meta.get("signature", {}), meta.get("signature", {})
    diffs = [f"{k}: checkpoint has {got.get(k)!r}, run has {v!r}"
             for k, v in want.items() if got.get(k) != v]
    if diffs:
        raise CheckpointMismatchError(
            f"checkpoint step {step} in {manager.directory} does not match this run ("
            + "; ".join(diffs) + "). Use a fresh --workdir or the original config.")
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(abstract_state))))
    return restored["state"], meta
