"""Compression report: parameter counts and storage size of a (sparse, quantised) model.

Sizes are what a deployment would actually store, index overhead included:
  dense      every tensor at its value width (fp32: 4 B, int8: 1 B + a 4 B scale);
  bitmask    pruned tensors as a 1-bit-per-weight mask + the nonzero values;
  csr        pruned tensors as row pointers (int32, rows+1) + column indices (int16 when the
             row length fits, else int32) + the nonzero values;
Tensors that are never pruned (embeddings, LayerNorm, biases, heads) are stored dense in
every format; with int8, only Dense kernels (and embeddings when quantised) are 1 byte.
"""

from __future__ import annotations

import re
from typing import Sequence

import jax
import numpy as np


def _path(keypath) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in keypath)


def _matches(path: str, patterns: Sequence[str]) -> bool:
    return any(re.search(p, path) for p in patterns)


def tensor_bytes(w: np.ndarray, fmt: str, value_bytes: int) -> int:
    """Bytes to store one 2-D (or flattened) tensor in `fmt` with `value_bytes` per value."""
    w2 = w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(1, -1)
    nnz = int(np.count_nonzero(w2))
    scale = 4 if value_bytes == 1 else 0
    if fmt == "dense":
        return w2.size * value_bytes + scale
    if fmt == "bitmask":
        return -(-w2.size // 8) + nnz * value_bytes + scale
    if fmt == "csr":
        # Flax kernels are [in, out]; a deployment stores rows = output features.
        rows, cols = w2.shape[1], w2.shape[0]
        idx = 2 if cols <= 65536 else 4
        return (rows + 1) * 4 + nnz * (idx + value_bytes) + scale
    raise ValueError(f"unknown format {fmt!r}")


def report(params, prunable: Sequence[str], int8: bool = False,
           int8_include: Sequence[str] = (r"/kernel$",)) -> dict:
    """Counts and sizes for `params` (masks already applied). `prunable`: path regexes of
    the tensors stored sparse; `int8`: Dense kernels stored as int8 values."""
    total = nnz_all = pruned_size = pruned_nnz = 0
    sizes = {"dense_fp32": 0, "dense": 0, "bitmask": 0, "csr": 0}
    for keypath, leaf in jax.tree_util.tree_leaves_with_path(params):
        w = np.asarray(leaf)
        path = _path(keypath)
        nnz = int(np.count_nonzero(w))
        total, nnz_all = total + w.size, nnz_all + nnz
        vb = 1 if int8 and _matches(path, int8_include) else 4
        sizes["dense_fp32"] += w.size * 4
        sizes["dense"] += tensor_bytes(w, "dense", vb)
        if _matches(path, prunable) and w.ndim == 2:
            pruned_size, pruned_nnz = pruned_size + w.size, pruned_nnz + nnz
            sizes["bitmask"] += tensor_bytes(w, "bitmask", vb)
            sizes["csr"] += tensor_bytes(w, "csr", vb)
        else:
            dense = tensor_bytes(w, "dense", vb)
            sizes["bitmask"] += dense
            sizes["csr"] += dense
    best = min(sizes["bitmask"], sizes["csr"], sizes["dense"])
    return {
        "params_total": total,
        "params_nonzero": nnz_all,
        "prunable_params": pruned_size,
        "prunable_sparsity": 1.0 - pruned_nnz / max(pruned_size, 1),
        "overall_sparsity": 1.0 - nnz_all / max(total, 1),
        "bytes": sizes,
        "bytes_best": best,
        "compression_vs_dense_fp32": sizes["dense_fp32"] / max(best, 1),
    }
