"""One Orbax CheckpointManager factory; restore onto the abstract sharded train state, verified.

A checkpoint holds the whole TrainState (params, optimizer state, masks, QAT EMA stats,
step, data position), the input iterator's state ("data": one JSON file per process, written
by Grain's Orbax handler, so a Grain stream resumes where it stopped on every host) and a
JSON "meta" item: the run's signature and resolved config (train/resume.py compares them on
resume) and a checksum of every saved array. The teacher is never saved.

Checksums: 32 bits per array, computed on the devices (parallel/checksums.py: the same
for any sharding or process count; only 4 bytes per array leave the devices, so an async
save stays async).

`restore` tries the newest step first and verifies it: a missing item, an unreadable or
truncated file, a checksum mismatch or an unreadable data state is one warning line naming
the step and what was wrong, and the next older step is tried; the steps found damaged are
moved aside (`damaged-<step>` beside the steps) once an older one restored, so the run can
save those steps again. The state and the data position come from the same step. A
checkpoint written before checksums were stored restores with one warning.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import sys
import time
import traceback
from typing import Any, Callable, Optional

import grain.checkpoint as grain_ckpt
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from prune_ofa_jax import errors, logs, paths
from prune_ofa_jax.parallel import checksums
from prune_ofa_jax.parallel import mesh as mesh_lib

log = logging.getLogger(__name__)

DATA = "data"
CHECKSUMS, CHECKSUM_KIND = "checksums", "checksum_kind"
KIND = checksums.KIND


class CheckpointMismatchError(errors.UserError):
    """The checkpoint in the workdir was written by a run with another model, task or config."""


class CheckpointError(errors.UserError):
    """No checkpoint in the directory restores (each one damaged)."""


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
        absl = logging.getLogger("absl")  # its "overriding jax.Array" warning: log.txt only
        quiet = _MarkFileOnly()
        absl.addFilter(quiet)
        try:
            ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
        finally:
            absl.removeFilter(quiet)


class _MarkFileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.file_only = True  # logs.py: WORKDIR/log.txt, never the console
        return True


def make_manager(directory, *, keep: int = 3, async_save: bool = True) -> ocp.CheckpointManager:
    """The run's manager. When to save is the loop's decision (`should_save`), never Orbax's:
    its interval policy also saves the first step it sees (a wasted full checkpoint)."""
    if keep < 1:  # Orbax's max_to_keep=0 deletes every checkpoint it writes
        raise errors.ConfigError(f"config.checkpoint.keep: must be >= 1, got {keep}")
    _array_writes_across_processes_only()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=1, enable_async_checkpointing=async_save,
        create=True)
    return ocp.CheckpointManager(paths.absolute(directory), options=options,
                                 item_names=("state", "meta", DATA))


def should_save(done: int, every: int, total: int, preempted: bool = False) -> bool:
    """After `done` steps: on the interval, at the end, and when preempted. Nothing else."""
    return done % every == 0 or done == total or preempted


# --- save ----------------------------------------------------------------------------


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict,
         data: Any = None) -> bool:
    """`data`: an iterator with get_state() -> bytes (train/feed.py), saved per process.
    The meta item gets the checksum of every array of `state`."""
    meta = {**meta, CHECKSUM_KIND: KIND, CHECKSUMS: checksums.fingerprints(state)}
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


# --- restore -------------------------------------------------------------------------


@dataclasses.dataclass
class Restored:
    state: Any
    meta: dict
    step: int
    data_restored: bool  # the iterator was set to the step's saved data position


class _Damaged(Exception):
    """This step cannot be used (the message says why); an older one may."""


def _abstract(tree):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree)


def _reason(e: BaseException) -> str:
    """One short line for what went wrong: the innermost cause (TensorStore's own message,
    not Orbax's wrapper with the whole store spec)."""
    if isinstance(e, _Damaged):
        return str(e)
    while (e.__cause__ or e.__context__) is not None:
        e = e.__cause__ or e.__context__
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text[:240]}{'...' if len(text) > 240 else ''}"


def _everywhere(ok: bool) -> bool:
    """True when `ok` on every process: all hosts take the same step or none does."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _from_orbax(tb) -> bool:
    return any("orbax" in f.filename for f in traceback.extract_tb(tb)) if tb else False


class _FileOnly(logging.Filter):
    """asyncio's "Task exception was never retrieved" for Orbax's abandoned reads."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _from_orbax(record.exc_info[2]):
            record.file_only = True
        return True


_ROUTED = {"installed": False, "count": 0}


def _route_abandoned_reads() -> None:
    """When one array read fails, Orbax's other reads of the step fail later inside
    abandoned coroutines, which Python and asyncio print to stderr, each with the whole
    TensorStore spec. They go to log.txt only (the console has the one warning line)."""
    if _ROUTED["installed"]:
        return
    previous = sys.unraisablehook

    def hook(u):
        code = getattr(u.object, "cr_code", None)
        if ((code is not None and "orbax" in code.co_filename) or _from_orbax(u.exc_traceback)
                or "Event loop is closed" in str(u.exc_value)):  # TensorStore's late replies
            _ROUTED["count"] += 1
            if _ROUTED["count"] <= 3:  # the first few are the story; the rest repeat it
                log.info("an abandoned checkpoint read: %s", _reason(u.exc_value),
                         extra=logs.FILE_ONLY)
        else:
            previous(u)
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_FileOnly())
    _ROUTED["installed"] = True


def _join_restore_barrier(manager: ocp.CheckpointManager) -> None:
    """Orbax's restore ends at a barrier every process must reach. A process whose read
    failed raised before it; it joins that barrier here, so the hosts stay in step (the
    others wait in it) and then agree that the step failed."""
    ckptr = getattr(manager, "_checkpointer", None)
    ocp.multihost.sync_global_processes(
        ocp.multihost.unique_barrier_key(
            "Checkpointer:restore", prefix=getattr(ckptr, "_barrier_sync_key_prefix", None)),
        processes=getattr(ckptr, "_active_processes", None))


def _attempt(what: str, fn: Callable, manager: Optional[ocp.CheckpointManager] = None):
    """fn()'s value; raises _Damaged when it failed on this or any other process.
    `manager`: fn is one of its restores (see _join_restore_barrier)."""
    try:
        value, err = fn(), None
    except (CheckpointMismatchError, errors.ConfigError):
        raise
    except Exception as e:  # pylint: disable=broad-except  (any reader error = damage)
        value, err = None, e
        _route_abandoned_reads()
        if manager is not None and jax.process_count() > 1:
            _join_restore_barrier(manager)
    if not _everywhere(err is None):
        raise _Damaged(f"{what}: {_reason(err) if err is not None else 'failed on another host'}")
    return value


def verify(state, meta: dict) -> Optional[str]:
    """None when every array of `state` matches the checksums in `meta`, else what differs;
    "" when `meta` has no checksums (a checkpoint written before they were stored)."""
    saved = meta.get(CHECKSUMS)
    if saved is None or meta.get(CHECKSUM_KIND) != KIND:
        return ""
    got = checksums.fingerprints(state)
    bad = sorted(k for k in set(saved) | set(got) if saved.get(k) != got.get(k))
    if not bad:
        return None
    return (f"checksum mismatch in {len(bad)} of {len(saved)} arrays ({bad[0]}: saved "
            f"{saved.get(bad[0])}, read {got.get(bad[0])})")


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
    return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def newest_meta(manager: ocp.CheckpointManager) -> Optional[tuple[int, dict]]:
    """(step, meta) of the newest step whose meta reads (on every host), or None. Nothing
    is logged: `restore` reports the damage it meets."""
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            return step, _attempt("meta", lambda s=step: read_meta(manager, s), manager)
        except _Damaged:
            continue
    return None


def restore(manager: ocp.CheckpointManager, abstract_state: Any, *,
            check_meta: Optional[Callable[[dict, int], None]] = None,
            data: Any = None) -> Optional[Restored]:
    """The newest step that restores and verifies, or None when there is no checkpoint.

    `abstract_state`: ShapeDtypeStructs with shardings (or real arrays, whose shapes and
    shardings are used). `check_meta(meta, step)`: raises CheckpointMismatchError when the
    step's run does not match this one (never skipped: a mismatch is not damage). `data`: an
    iterator set to the same step's saved data state. CheckpointError when none restores."""
    target = _abstract(abstract_state)
    damaged = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            meta = _attempt("meta", lambda s=step: read_meta(manager, s), manager)
            if check_meta is not None:
                check_meta(meta, step)
            state = _attempt("state", lambda s=step: manager.restore(s, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target)))["state"], manager)
            problem = verify(state, meta)
            if problem:
                raise _Damaged(f"state: {problem}")
            data_restored = data is not None and _attempt(
                "data", lambda s=step: restore_data(manager, s, data), manager)
        except _Damaged as e:
            older = "trying the next older step" if step != min(manager.all_steps()) else \
                "no older step"
            log.warning("checkpoint step %d in %s is damaged (%s); %s", step,
                        manager.directory, e, older)
            damaged.append((step, str(e)))
            continue
        if problem == "":
            log.warning("checkpoint step %d in %s has no checksums (written before they were "
                        "stored): restored without verification", step, manager.directory)
        _set_aside(manager, [s for s, _ in damaged])
        return Restored(state, meta, step, bool(data_restored))
    if damaged:
        raise CheckpointError(
            f"no checkpoint in {manager.directory} restores (" + "; ".join(
                f"step {s}: {why}" for s, why in damaged) + "). Move the directory away to "
            "start afresh, or use a fresh --workdir")
    return None


def _set_aside(manager: ocp.CheckpointManager, steps: list) -> None:
    """Damaged steps out of Orbax's sight (renamed, not deleted: a transient read error
    must not cost a good checkpoint), so the run can save those steps again."""
    if not steps:
        return
    root = epath.Path(manager.directory)
    stamp = int(time.time())
    for step in steps:
        moved, dst = True, root / f"damaged-{step}-{stamp}"
        if jax.process_index() == 0:
            try:
                (root / str(step)).rename(dst)
            except OSError as e:
                moved = False
                log.warning("checkpoint step %d could not be moved aside (%s): deleted", step,
                            _reason(e))
        if _everywhere(moved):
            log.info("checkpoint step %d moved to %s", step, dst)
        else:
            manager.delete(step)  # every process: Orbax's delete ends at a barrier
    mesh_lib.sync_hosts(f"prune_ofa_jax_set_aside_{stamp}")
    manager.reload()


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any,
                   expected_meta: dict) -> Optional[tuple[Any, dict]]:
    """(state, meta) from the newest checkpoint that verifies, or None when there is none.
    Keys of `expected_meta` under "signature" must match the checkpoint's."""
    def check(meta: dict, step: int) -> None:
        want, got = expected_meta.get("signature", {}), meta.get("signature", {})
        diffs = [f"{k}: checkpoint has {got.get(k)!r}, run has {v!r}"
                 for k, v in want.items() if got.get(k) != v]
        if diffs:
            raise CheckpointMismatchError(
                f"checkpoint step {step} in {manager.directory} does not match this run ("
                + "; ".join(diffs) + "). Use a fresh --workdir or the original config.")
    restored = restore(manager, abstract_state, check_meta=check)
    return None if restored is None else (restored.state, restored.meta)
