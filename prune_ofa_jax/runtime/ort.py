"""onnxruntime sessions for the exported classifier, and batched prediction."""

from __future__ import annotations

import os
import pathlib

import numpy as np

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# x86 flags of int8 dot products that accumulate in int32 (VNNI, AMX). Without them
# onnxruntime's u8 x s8 kernels (AVX2, AVX-512) add pairs of products in int16, which
# saturates: an int8 graph then differs from the fake-quant model by a rounding step here
# and there (the "saturation issue" of 8-bit inference on pre-VNNI CPUs).
EXACT_INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def session(path, threads: int = 0):
    """A CPU InferenceSession with every graph optimisation; `threads` 0 = all cores."""
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def int8_exact(cpuinfo="/proc/cpuinfo") -> bool:
    """Whether this CPU's int8 kernels cannot saturate, so an int8 graph computes exactly
    what the fake-quant model does (False where the flags cannot be read)."""
    try:
        flags = set(pathlib.Path(cpuinfo).read_text().split())
    except OSError:
        return False
    return bool(flags & EXACT_INT8_FLAGS)


def feeds(batch: dict) -> dict:
    return {k: np.asarray(batch[k], np.int64) for k in INPUTS}


def logits(sess, batch: dict) -> np.ndarray:
    """float32 [B, num_labels] for one batch (keys input_ids, attention_mask,
    token_type_ids)."""
    return sess.run(["logits"], feeds(batch))[0]


def predict(sess, arrays: dict, batch_size: int = 64) -> np.ndarray:
    """Logits for every row of `arrays` ({input: [N, L]}), in order."""
    n = len(arrays["input_ids"])
    out = [logits(sess, {k: arrays[k][i:i + batch_size] for k in INPUTS})
           for i in range(0, n, batch_size)]
    return np.concatenate(out)
