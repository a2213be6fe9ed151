"""The inference suite's structured rows: the bench model with whole heads and FFN neurons
removed at the default structured level (sparsity/methods/structured.DEFAULT_TARGET of the
encoder's Linear weights, the same share of heads and of neurons in every layer:
groups.uniform_keep), exported compact (runtime/onnx_export.py) in fp32 and int8 and timed
beside the dense model by the same latency.measure call. Figures (scripts read the names):
  structured_vs_dense_ort_fp32_b1 / _b32   dense ORT fp32 time / compact structured fp32 time
  structured_int8_vs_dense_fp32_b32        dense ORT fp32 time / compact structured int8 time
(each also as the median of per-round ratios, latency.speedup)."""

from __future__ import annotations

import pathlib

import jax.numpy as jnp
import numpy as np

from prune_ofa_jax.convert import hf
from prune_ofa_jax.runtime import latency
from prune_ofa_jax.sparsity import groups
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.sparsity.methods import structured

FP32, INT8 = "ort_fp32_structured", "ort_int8_structured"
TARGET = structured.DEFAULT_TARGET
FIGURES = ("structured_vs_dense_ort_fp32_b1", "structured_vs_dense_ort_fp32_b32",
           "structured_int8_vs_dense_fp32_b32")


def structured_copy(params, mcfg, target: float = TARGET):
    """params with `target` of every encoder layer's Linear weights removed by whole heads
    and neurons (the first ones kept; a random model's units are alike)."""
    masks = masks_lib.init_masks(params, include=(masks_lib.ENCODER_KERNELS,))
    lay = groups.layout(masks, mcfg)
    keep = {k: jnp.asarray(v) for k, v in groups.uniform_keep(lay, target).items()}
    return masks_lib.apply_masks(params, groups.expand(lay, keep, masks))


def variants(params, mcfg, tmp: pathlib.Path, quant, target: float) -> list:
    """The compact structured model in ORT fp32 and int8 (`quant`: the int8 ranges)."""
    p = structured_copy(params, mcfg, target)
    return [latency.onnx_variant(FP32, p, mcfg, tmp / "structured_fp32.onnx"),
            latency.onnx_variant(INT8, p, mcfg, tmp / "structured_int8.onnx", int8=True,
                                 quant=quant)]


def figures(batches: dict) -> dict:
    """The three structured figures from latency.measure's "batches" (those its batch sizes
    allow), each {"ratio", "paired_median", ...}."""
    out = {}
    for b, res in batches.items():
        if FP32 in res:
            out[f"structured_vs_dense_ort_fp32_b{b}"] = latency.speedup(res, FP32, "ort_fp32")
            out[f"structured_int8_vs_dense_fp32_b{b}"] = latency.speedup(res, INT8, "ort_fp32")
    return out


def shape(params, mcfg, target: float) -> dict:
    """The compact model's encoder size and one layer's shape (groups.compact_size)."""
    flat = {k: np.asarray(v) for k, v in hf.flatten(structured_copy(params, mcfg,
                                                                     target)).items()}
    size = groups.compact_size(flat, mcfg)
    return {"target": target, "encoder_params": size["compact"],
            "encoder_params_dense": size["dense"], "layer": size["layers"][0]}


def line(model: str, st: dict) -> str:
    """One line of the bench's table: the compact shape and the speed-ups over dense fp32."""
    sh, f = st["shape"], st["figures"]
    lay = sh["layer"]
    figs = ", ".join(f"{k[len('structured_'):]} {v['ratio']:.2f}x" for k, v in f.items())
    return (f"  structured ({model}, {100 * sh['target']:.0f} % target): "
            f"{lay['heads']} heads, FFN {lay['ffn']} per layer, encoder "
            f"{sh['encoder_params'] / 1e6:.1f} of {sh['encoder_params_dense'] / 1e6:.1f} M "
            f"params; speed over dense: {figs or 'none'}")
