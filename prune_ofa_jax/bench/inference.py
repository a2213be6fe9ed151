"""`--config.suite=inference`: classifier latency side by side, measured by the one latency
function every study uses (runtime/latency.py: each variant in its own worker process, the
same warm-up, threads and repeat count, rounds alternating between the workers): fp32
PyTorch (HF, inference mode), fp32 onnxruntime and int8 onnxruntime (runtime/), each dense
and with 80 % unstructured sparsity (same shapes, zeros in the encoder kernels), at every
batch size of `config.inference.batch_sizes`, seq `config.seq_len`, full attention mask.
Per variant: the median (p50) with p10/p90/p95, the median's 95 % interval and sequences/s;
figures: int8 speed-up over fp32 (both runtimes) and sparse/dense time ratios (~1.0: neither
runtime skips zeros), each also as the median of per-round ratios (`ratios`).

The int8 graph of a random model uses fixed activation ranges (speed does not depend on
them); `config.inference.ckpt` (a params dir, QAT or not, or a .pofa) times a real model with
its own QAT ranges instead, and then no sparse variant is made up. A new row (a compact
model, another runtime) is one more `latency.Variant` in `variants()`: the compact structured
model (whole heads and FFN neurons removed, ORT fp32 and int8: bench/structured_rows.py) is
timed beside the dense one for a random model, with its figures under "structured".
"""

from __future__ import annotations

import os
import pathlib
import re
import tempfile
import time

import jax
import numpy as np

from prune_ofa_jax.bench import machine, settings, structured_rows
from prune_ofa_jax.convert import hf, loader, pack_ckpt, qat_ranges
from prune_ofa_jax.models import bert
from prune_ofa_jax.runtime import latency
from prune_ofa_jax.sparsity import masks as masks_lib

FIXED_RANGE = {"input_min": -8.0, "input_max": 8.0}


def prune_copy(params, target: float):
    """Params with each prunable kernel's smallest-|w| `target` fraction zeroed."""
    flat = pack_ckpt.flat_numpy(params)
    for path, w in flat.items():
        if w.ndim == 2 and any(re.search(p, path) for p in masks_lib.DEFAULT_INCLUDE):
            w[np.abs(w) < np.quantile(np.abs(w), target)] = 0.0
    return hf.unflatten(flat)


def _model(name: str, ic):
    """(params, model_config, quant or None, label)."""
    if ic.ckpt:
        params, mcfg, task = loader.load(ic.ckpt)
        if task != "cls":
            raise ValueError(f"config.inference.ckpt: a 'cls' model is needed, got {task!r}")
        quant = None if pathlib.Path(ic.ckpt).is_file() else qat_ranges.load(ic.ckpt)
        return params, mcfg, quant, str(ic.ckpt)
    mcfg = settings.model_config(name, "", "float32").replace(num_labels=2)
    params = bert.init_params(bert.BertFamily(mcfg, "cls"), jax.random.key(0))
    return params, mcfg, None, name


def fixed_quant(params) -> dict:
    """QAT-file-shaped ranges for a model without its own: every Dense input in [-8, 8]."""
    return {"config": {}, "ranges": {k[:-len("/kernel")]: FIXED_RANGE
                                     for k in hf.flatten(params) if k.endswith("/kernel")}}


def variants(params, mcfg, quant, ic, tmp: pathlib.Path) -> list:
    """torch_fp32, ort_fp32 and ort_int8, dense and (for a random model) `_sparse`."""
    sets = {"": params} if ic.ckpt else {"": params, "_sparse": prune_copy(params, ic.sparsity)}
    out = []
    for suffix, p in sets.items():
        out += [latency.torch_variant("torch_fp32" + suffix, p, mcfg, "cls", tmp / f"hf{suffix}"),
                latency.onnx_variant("ort_fp32" + suffix, p, mcfg, tmp / f"fp32{suffix}.onnx"),
                latency.onnx_variant("ort_int8" + suffix, p, mcfg, tmp / f"int8{suffix}.onnx",
                                     int8=True, quant=quant or fixed_quant(p))]
    if not ic.ckpt:
        out += structured_rows.variants(params, mcfg, tmp, fixed_quant(params),
                                        structured_rows.TARGET)
    return out


def lat_settings(bc, mcfg) -> latency.Settings:
    ic = bc.inference
    return latency.Settings(threads=ic.threads or bc.torch_threads, warmup=ic.warmup,
                            repeats=ic.max_rounds, min_repeats=ic.min_rounds,
                            budget_s=ic.budget_s_per_batch, seed=bc.seed,
                            vocab_hi=min(mcfg.vocab_size, 20000))


def figures(res: dict) -> dict:
    """The bench's figures from one batch size's stats (names kept: scripts read them)."""
    ratio = lambda a, b: res[b]["p50_ms"] / res[a]["p50_ms"]  # noqa: E731  (speed of a over b)
    f = {"int8_vs_ort_fp32": ratio("ort_int8", "ort_fp32"),
         "int8_vs_torch_fp32": ratio("ort_int8", "torch_fp32"),
         "ort_fp32_vs_torch_fp32": ratio("ort_fp32", "torch_fp32")}
    for k in ("torch_fp32", "ort_fp32", "ort_int8"):
        if k + "_sparse" in res:
            f[f"{k}_sparse_time_ratio"] = res[k + "_sparse"]["p50_ms"] / res[k]["p50_ms"]
    f["int8_target_2x_met"] = f["int8_vs_ort_fp32"] >= 2.0 and f["int8_vs_torch_fp32"] >= 2.0
    return f


def paired_ratios(res: dict) -> dict:
    """The figures' ratios with their per-round spread (latency.ratio)."""
    out = {"int8_vs_ort_fp32": latency.speedup(res, "ort_int8", "ort_fp32"),
           "int8_vs_torch_fp32": latency.speedup(res, "ort_int8", "torch_fp32"),
           "ort_fp32_vs_torch_fp32": latency.speedup(res, "ort_fp32", "torch_fp32")}
    for k in ("torch_fp32", "ort_fp32", "ort_int8"):
        if k + "_sparse" in res:
            out[f"{k}_sparse_time_ratio"] = latency.ratio(res, k + "_sparse", k)
    return out


def run(bc, out_dir: str, log=print) -> dict:
    ic, t0 = bc.inference, time.perf_counter()
    info = machine.info()
    result = {"machine": info, "config": bc.to_dict(), "models": {}, "latency": {}}
    names = [ic.ckpt] if ic.ckpt else [m for m in ic.models.split(",") if m]
    for name in names:
        params, mcfg, quant, label = _model(name, ic)
        log(f"model {label}: {mcfg.num_layers} layers, hidden {mcfg.hidden_size}; "
            f"int8 ranges: {'QAT' if quant else 'fixed'}")
        with tempfile.TemporaryDirectory() as tmp:
            vs = variants(params, mcfg, quant, ic, pathlib.Path(tmp))
            meas = latency.measure(vs, ic.batch_sizes, bc.seq_len, lat_settings(bc, mcfg),
                                   log=log)
        result["models"][label] = {b: {"variants": res, "figures": figures(res),
                                       "ratios": paired_ratios(res)}
                                   for b, res in meas["batches"].items()}
        result["latency"][label] = {k: meas[k] for k in ("settings", "seq_len", "workers")}
        if not ic.ckpt:
            result.setdefault("structured", {})[label] = {
                "shape": structured_rows.shape(params, mcfg, structured_rows.TARGET),
                "figures": structured_rows.figures(meas["batches"])}
    info["load_avg_end"] = list(os.getloadavg())
    result["wall_s"] = time.perf_counter() - t0
    return machine.write(out_dir, "inference.json", result, table(result), result["wall_s"],
                         log)


def table(result: dict) -> str:
    lines = [f"{'model':20s} {'batch':>5s} {'variant':18s} {'p50 ms':>9s} {'p10 ms':>9s} "
             f"{'p90 ms':>9s} {'seq/s':>8s}"]
    for model, per in result["models"].items():
        for b, r in per.items():
            for k, v in r["variants"].items():
                lines.append(f"{pathlib.Path(model).name[:20]:20s} {b:>5s} {k:18s} "
                             f"{v['p50_ms']:9.1f} {v['p10_ms']:9.1f} {v['p90_ms']:9.1f} "
                             f"{v['seq_per_s']:8.1f}")
            f, pr = r["figures"], r["ratios"]
            lines.append(
                f"  int8 speed-up: {f['int8_vs_ort_fp32']:.2f}x over ORT fp32 (rounds p10-p90 "
                f"{pr['int8_vs_ort_fp32']['paired_p10']:.2f}-"
                f"{pr['int8_vs_ort_fp32']['paired_p90']:.2f}), {f['int8_vs_torch_fp32']:.2f}x "
                f"over PyTorch fp32 (target >= 2x: "
                f"{'met' if f['int8_target_2x_met'] else 'missed'}); sparse/dense time: "
                + ", ".join(f"{k[:-len('_sparse_time_ratio')]} {v:.2f}"
                            for k, v in f.items() if k.endswith("_time_ratio")))
    for model, st in result.get("structured", {}).items():
        lines.append(structured_rows.line(pathlib.Path(model).name, st))
    return "\n".join(lines)
