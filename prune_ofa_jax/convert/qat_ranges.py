"""The QAT model's activation ranges and quantisation settings, beside its params checkpoint.

A QAT run's final `model/` dir holds `quant.json`: {"config": the run's `quant` settings,
"ranges": {Dense path: {"input_min", "input_max"[, "output_min", "output_max"]}}}, the EMA
ranges of the "quant_stats" collection that the fake-quant eval uses. Weight scales are not
stored: QAT computes them from the weights (max|w| / 127), and so does every consumer.
Models trained before quant.json existed: `load` reads the ranges from the run's last train
checkpoint (`<run>/checkpoints`, beside `<run>/model`).
"""

from __future__ import annotations

import json
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

QUANT_JSON = "quant.json"
_RANGE_KEYS = ("input_min", "input_max", "output_min", "output_max")


def ranges_from_stats(quant_stats: Any) -> dict:
    """{Dense path: {range key: float}} from a "quant_stats" tree (layers never trained,
    count 0, are left out: their consumer must fall back to the batch range)."""
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_leaves_with_path(quant_stats)}
    out = {}
    for key, value in flat.items():
        layer, _, name = key.rpartition("/qat/")
        if name in _RANGE_KEYS and int(flat.get(f"{layer}/qat/count", 0)) > 0:
            out.setdefault(layer, {})[name] = float(value)
    return out


def save(model_dir, quant_stats: Any, quant_config: dict) -> Optional[epath.Path]:
    """Writes model_dir/quant.json; nothing when there are no stats (QAT off)."""
    ranges = ranges_from_stats(quant_stats) if quant_stats else {}
    if not ranges:
        return None
    return write(model_dir, {"config": quant_config, "ranges": ranges})


def write(model_dir, quant: dict) -> epath.Path:
    path = epath.Path(model_dir) / QUANT_JSON
    path.write_text(json.dumps(quant, indent=1, sort_keys=True) + "\n")
    return path


def _from_checkpoint(run_dir: epath.Path) -> Optional[dict]:
    ckpt = run_dir / "checkpoints"
    steps = sorted((int(p.name) for p in ckpt.glob("*") if p.name.isdigit()), reverse=True)
    cfg_file = run_dir / "config.json"
    if not steps or not cfg_file.is_file():
        return None
    config = json.loads(cfg_file.read_text())
    if not config.get("quant", {}).get("enabled"):
        return None
    checkpointer = ocp.StandardCheckpointer()
    state = checkpointer.restore(ckpt / str(steps[0]) / "state")
    checkpointer.close()
    ranges = ranges_from_stats(state.get("quant_stats") or {})
    qcfg = {k: v for k, v in config["quant"].items() if k != "enabled"}
    return {"config": qcfg, "ranges": ranges} if ranges else None


def load(model_dir) -> Optional[dict]:
    """{"config", "ranges"} of a QAT model dir, or None for a model without QAT."""
    model_dir = epath.Path(model_dir)
    path = model_dir / QUANT_JSON
    if path.is_file():
        return json.loads(path.read_text())
    return _from_checkpoint(model_dir.parent)
