"""What a resumed run may change, and the record of every start.

A checkpoint's meta holds the resolved config of the run that wrote it (after
presets.resolve and presets.resolve_steps). On resume, the whole current config is compared
with it, key by key. A change outside `ALLOWED` (what and how often the run logs, evaluates
and saves, how it reads its input, the device layout) is one error naming every changed key,
its two values and the way out: the original values, a fresh --workdir, or the changes
accepted explicitly with `--config.resume.allow_changes=KEY[,KEY...]` (keys or key prefixes:
`sparsity` accepts every sparsity.* key). Accepted changes are logged, one line.

A checkpoint written before configs were stored resumes with the older signature check
(model, task, labels, sparsity on/off, QAT, grad_accum, batch size) and one warning.

Every start's resolved config is kept: WORKDIR/config.json is the latest, and
WORKDIR/configs/<n>-<UTC time>.json one per start (n = 1, 2, ...), written once the run
has started or resumed.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Optional

import jax
from etils import epath
from ml_collections import config_dict

from prune_ofa_jax import checkpoint as ckpt_lib
from prune_ofa_jax import config_base, jsonio
from prune_ofa_jax.train import build as build_lib

log = logging.getLogger(__name__)

CONFIG = "config"  # the meta key of the resolved config
# Keys (or prefixes, ending in ".") a resumed run may change without a word: none of them
# changes what is trained. The mesh is the layout only (same math, other reduction order).
ALLOWED = (
    "train.log_every", "train.eval_every", "train.progress", "train.eval_batch_size",
    "train.skip_nonfinite", "train.max_consecutive_skips", "data.eval_batches",
    "data.worker_count", "data.prefetch", "checkpoint.every", "checkpoint.keep",
    "checkpoint.async_save", "resume.", "mesh.",
)


def flatten(config) -> dict:
    """{dotted key: JSON value} of a ConfigDict (tuples as lists, non-finite floats None)."""
    out = {}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, (config_dict.ConfigDict, dict)):
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = jsonio.clean(v)
    walk(config, "")
    return out


def _defaults() -> dict:
    return flatten(config_base.base())


def allow_list(config) -> tuple:
    """ALLOWED + config.resume.allow_changes (each entry may hold several, comma-separated)."""
    extra = [k.strip() for entry in config.resume.allow_changes for k in str(entry).split(",")]
    return ALLOWED + tuple(k for k in extra if k)


def _matches(key: str, allowed) -> bool:
    return any(key == a or key.startswith(a if a.endswith(".") else a + ".") for a in allowed)


def changes(saved: dict, current: dict) -> list:
    """[(key, saved value, current value)] for every key that differs. A key the saved
    config lacks (the code gained it since) counts only when it is not at its default."""
    absent = "(absent)"
    defaults = _defaults()
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, absent), current.get(key, absent)
        if a == b or (a == absent and key in defaults and defaults[key] == b):
            continue
        out.append((key, a, b))
    return out


def _show(v) -> str:
    text = v if v == "(absent)" else json.dumps(v)
    return text if len(text) <= 60 else text[:57] + "..."


def check(config, run_signature: dict, meta: dict, step: int, directory) -> None:
    """Raises CheckpointMismatchError when checkpoint `step` (its `meta`) was written by a run
    that differs from this one outside the allowed keys; logs the allowed changes."""
    where = f"checkpoint step {step} in {directory}"
    saved = meta.get(CONFIG)
    if saved is None:  # written before configs were stored: the older signature check
        log.warning("%s has no stored config (written before resume checks compared "
                    "configs): only %s compared", where, ", ".join(run_signature))
        _check_signature(run_signature, meta.get("signature", {}), where)
        return
    diffs = changes(saved, flatten(config))
    allowed = allow_list(config)
    refused = [d for d in diffs if not _matches(d[0], allowed)]
    shape = _model_shape_changes(meta.get("signature", {}).get("model"),
                                 run_signature.get("model"))
    if refused or shape:
        keys = ",".join(k for k, _, _ in refused)
        way = ("use a fresh --workdir (a model of another shape cannot resume)" if shape else
               "use a fresh --workdir, or accept the change with "
               f"--config.resume.allow_changes={keys}")
        raise ckpt_lib.CheckpointMismatchError(
            f"this run differs from {where} (checkpoint -> now): " + "; ".join(
                f"{k}: {_show(a)} -> {_show(b)}" for k, a, b in refused + shape)
            + f". Resume with the checkpoint's values, or {way}")
    if diffs:
        log.info("resuming %s with changed settings: %s", where, "; ".join(
            f"{k}: {_show(a)} -> {_show(b)}" for k, a, b in diffs))


def _model_shape_changes(saved: Optional[dict], current: Optional[dict]) -> list:
    """The model's architecture fields that differ (init.path's model, overrides applied);
    dropout, dtype and the label count are config keys, compared there."""
    if not saved or not current:
        return []
    return [(f"model ({k})", saved.get(k, "(absent)"), v) for k, v in current.items()
            if k not in build_lib.FREE_OVERRIDES and saved.get(k, "(absent)") != v]


def _check_signature(want: dict, got: dict, where: str) -> None:
    diffs = [f"{k}: checkpoint has {got.get(k)!r}, run has {v!r}"
             for k, v in want.items() if got.get(k) != v]
    if diffs:
        raise ckpt_lib.CheckpointMismatchError(
            f"{where} does not match this run (" + "; ".join(diffs)
            + "). Use a fresh --workdir or the original config.")


def check_newest(config, manager) -> None:
    """The config check against the newest checkpoint whose meta reads, before anything is
    built (the model signature is checked at restore, once the model is known)."""
    newest = ckpt_lib.newest_meta(manager)
    if newest is not None and newest[1].get(CONFIG) is not None:
        check(config, {}, newest[1], newest[0], manager.directory)


def record(workdir, config, resumed_from: Optional[int]) -> None:
    """WORKDIR/config.json (the latest) and WORKDIR/configs/<n>-<UTC time>.json (this start;
    process 0 writes)."""
    if jax.process_index() != 0:
        return
    workdir = epath.Path(workdir)
    text = config.to_json_best_effort(indent=2)
    history = workdir / "configs"
    history.mkdir(parents=True, exist_ok=True)
    n = 1 + sum(1 for p in history.glob("*.json"))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (history / f"{n:03d}-{stamp}.json").write_text(text)
    (workdir / "config.json").write_text(text)
    log.info("config: %s (start %d, %s)", workdir / "config.json", n,
             "fresh" if resumed_from is None else f"resumed from step {resumed_from}")
