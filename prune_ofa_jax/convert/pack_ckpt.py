"""params checkpoint <-> .pofa (convert/packed.py), with the compression report.

pack_checkpoint: reads a params checkpoint (and its QAT ranges), writes the .pofa file and
returns the report: the size on disk, the size the layout must have (sum of
eval.compression.tensor_bytes for the storage chosen per tensor; checked exactly against the
bytes written before the lossless codec), compression.report's estimate, and the ratio to
the fp32 safetensors payload.
"""

from __future__ import annotations

import pathlib
import tempfile
from typing import Any, Optional

import numpy as np

from prune_ofa_jax import paths
from prune_ofa_jax.convert import hf, packed, params_ckpt, qat_ranges
from prune_ofa_jax.convert.pofa_header import VALUE_BYTES
from prune_ofa_jax.eval import compression
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as config_lib
from prune_ofa_jax.sparsity import masks as masks_lib


def default_options(**kw) -> packed.PackOptions:
    return packed.PackOptions(prunable=tuple(masks_lib.DEFAULT_INCLUDE), **kw)


def flat_numpy(params: Any) -> dict:
    return {k: np.array(v, np.float32) for k, v in hf.flatten(params).items()}


def pack_params(params: Any, model_config: config_lib.ModelConfig, task: str, out,
                opts: packed.PackOptions, quant: Optional[dict] = None) -> dict:
    """Writes `out`; returns the compression report (see the module docstring)."""
    flat = flat_numpy(params)
    header = packed.pack(flat, model_config.to_dict(), task, out, opts, quant)
    layout = scales = 0
    for t in header["tensors"]:
        # nonzero as stored, by bit pattern: a (rare) -0.0 is a stored value
        w = (flat[t["path"]].view(np.uint32) != 0).astype(np.float32)
        layout += compression.tensor_bytes(w, t["storage"], VALUE_BYTES[t["values"]])
        scales += 4 if t["values"] == "int8" else 0
    raw = sum(s["raw_length"] for t in header["tensors"] for s in t["sections"].values())
    if raw + scales != layout:  # the file's layout is exactly what compression.py counts
        raise packed.PackError(f"internal: {raw + scales} bytes written, layout says {layout}")
    int8_include = ((tuple(opts.int8_include) if opts.int8 else ())
                    + (packed.EMBEDDING_PATTERNS if opts.int8_embeddings else ()))
    est = compression.report(params, opts.prunable, int8=bool(int8_include),
                             int8_include=int8_include)
    size = pathlib.Path(out).stat().st_size
    fp32 = est["bytes"]["dense_fp32"]
    return {"file": str(out), "file_bytes": size, "layout_bytes": layout,
            "estimate_best_bytes": est["bytes_best"], "estimate_bytes": est["bytes"],
            "fp32_bytes": fp32, "x_vs_fp32": fp32 / size,
            "x_vs_fp32_before_codec": fp32 / layout,
            "prunable_sparsity": est["prunable_sparsity"],
            "params_total": est["params_total"], "params_nonzero": est["params_nonzero"],
            **packed.size_summary(header, size)}


def pack_checkpoint(ckpt_dir, out, opts: packed.PackOptions) -> dict:
    """pack_params of a params checkpoint (local or gs://) into `out` (local or gs://: packed
    locally, then uploaded)."""
    params, mcfg, task = params_ckpt.load_params(ckpt_dir)
    params = hf.unflatten({k: np.asarray(v) for k, v in flat_numpy(params).items()})
    quant = qat_ranges.load(ckpt_dir)
    if not paths.is_bucket(out):
        return pack_params(params, mcfg, task, out, opts, quant)
    with tempfile.TemporaryDirectory(prefix="prune_ofa_jax_pack_") as scratch:
        local = pathlib.Path(scratch) / str(out).rstrip("/").rsplit("/", 1)[-1]
        report = pack_params(params, mcfg, task, local, opts, quant)
        paths.upload(local, out)
    return {**report, "file": str(out)}


def _file_model(path, header: dict) -> tuple[config_lib.ModelConfig, dict]:
    """The model the header names and its tensors' shapes (abstract: nothing allocated),
    after checking the config is no larger than the tensors the header lists."""
    try:
        cfg = config_lib.ModelConfig.from_dict(header["model_config"])
        declared = max([max(s, default=0) for s in packed.shapes(header).values()], default=0)
        dims = (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size,
                cfg.max_position_embeddings)
        if max(dims) > declared or cfg.num_layers > len(header["tensors"]):
            raise ValueError(f"its config (dims {dims}, {cfg.num_layers} layers) is larger "
                             "than the tensors it lists")
        model = bert.BertFamily(cfg, header["task"])
    except (ValueError, TypeError) as e:
        raise packed.PackError(f"{path}: corrupt header ({' '.join(str(e).split())})") from e
    return cfg, hf.flatten(bert.abstract_params(model))


def load_packed(path, model_config: Optional[config_lib.ModelConfig] = None,
                task: Optional[str] = None) -> tuple[dict, config_lib.ModelConfig, str,
                                                     Optional[dict]]:
    """(params, model_config, task, quant) from a .pofa; the tensors' paths and shapes are
    checked against the model the file names (or `model_config`/`task` when given: the
    wrong-model check) before any is decoded (packed.py: a bounded reader)."""
    header, start = packed.read_header(path)
    file_cfg, expected = _file_model(path, header)
    cfg_dict, file_task = header["model_config"], header["task"]
    if model_config is not None and model_config.to_dict() != file_cfg.to_dict():
        diff = sorted(k for k, v in model_config.to_dict().items() if cfg_dict.get(k) != v)
        raise packed.PackError(f"{path} holds another model: config differs in {diff}")
    if task is not None and task != file_task:
        raise packed.PackError(f"{path} holds a {file_task!r} model, expected {task!r}")
    packed.check_model(packed.shapes(header), expected, path)
    flat, _, _, quant = packed.unpack(path, header, start)
    return hf.unflatten(flat), file_cfg, file_task, quant


def unpack_to_dir(path, out, overwrite: bool = False) -> pathlib.Path:
    """A .pofa -> a params checkpoint dir (+ quant.json when the file has QAT ranges)."""
    params, mcfg, task, quant = load_packed(path)
    final = params_ckpt.save_params(out, params, mcfg, task, overwrite=overwrite)
    if quant:
        qat_ranges.write(final, quant)
    return final
