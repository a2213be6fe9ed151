"""`--config.suite=inference`: classifier latency side by side in one process, interleaved:
fp32 PyTorch (HF, inference mode), fp32 onnxruntime and int8 onnxruntime (runtime/), each
dense and with 80 % unstructured sparsity (same shapes, zeros in the encoder kernels), at
every batch size of `config.inference.batch_sizes`, seq `config.seq_len`, full attention mask.
Per variant: p50/p95 latency and sequences/s; figures: int8 speed-up over fp32 (both
runtimes) and sparse/dense time ratios (~1.0: neither runtime skips zeros).

The int8 graph of a random model uses fixed activation ranges (speed does not depend on
them); `config.inference.ckpt` (a params dir, QAT or not, or a .pofa) times a real model with
its own QAT ranges instead, and then no sparse variant is made up.
"""

from __future__ import annotations

import os
import pathlib
import re
import statistics
import tempfile
import time

import jax
import numpy as np

from prune_ofa_jax import jsonio
from prune_ofa_jax.bench import machine, settings, timing
from prune_ofa_jax.convert import hf, hf_names, loader, pack_ckpt, qat_ranges
from prune_ofa_jax.models import bert
from prune_ofa_jax.runtime import onnx_export, ort
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


def torch_fn(params, mcfg, threads: int):
    """A blocking fp32 HF forward for a feed dict (numpy int64 arrays)."""
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(threads)
    cls = getattr(transformers, hf_names.hf_class_name(mcfg.model_type, "cls"))
    model = cls(hf.hf_config(mcfg, "cls"))
    state = hf.to_hf_state_dict(params, mcfg, "cls")
    model.load_state_dict({k: torch.tensor(v) for k, v in state.items()}, strict=False)
    model.eval()

    def run(feed):
        with torch.inference_mode():
            kw = {k: torch.from_numpy(v) for k, v in feed.items()}
            if not mcfg.has_token_types:
                kw.pop("token_type_ids")
            return model(**kw).logits.numpy()
    return run


def ort_fn(params, mcfg, path, int8: bool, quant, threads: int):
    if int8 and quant is None:
        quant = {"config": {}, "ranges": {k[:-len("/kernel")]: FIXED_RANGE
                                          for k in hf.flatten(params) if k.endswith("/kernel")}}
    sess = ort.session(onnx_export.export(params, mcfg, path, int8=int8, quant=quant), threads)
    return lambda feed: sess.run(["logits"], feed)[0]


def variants(params, mcfg, quant, ic, tmp: pathlib.Path, threads: int) -> dict:
    sets = {"": params} if ic.ckpt else {"": params, "_sparse": prune_copy(params, ic.sparsity)}
    out = {}
    for suffix, p in sets.items():
        out["torch_fp32" + suffix] = torch_fn(p, mcfg, threads)
        out["ort_fp32" + suffix] = ort_fn(p, mcfg, tmp / f"fp32{suffix}.onnx", False, None,
                                          threads)
        out["ort_int8" + suffix] = ort_fn(p, mcfg, tmp / f"int8{suffix}.onnx", True, quant,
                                          threads)
    return out


def feed(mcfg, batch: int, seq: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, min(mcfg.vocab_size, 20000), (batch, seq)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids)}


def time_variants(fns: dict, feed: dict, ic, budget_s: float, log=print) -> dict:
    """Interleaved rounds (timing.interleave); per variant p50/p95 and sequences/s."""
    steps = {k: (lambda f=f: f(feed)) for k, f in fns.items()}
    one = time.perf_counter()
    for f in steps.values():  # first call: graph optimisation / allocator warm-up
        f()
    per_round = time.perf_counter() - one
    rounds = int(max(ic.min_rounds, min(ic.max_rounds, budget_s / max(per_round, 1e-3))))
    wall, _ = timing.interleave(steps, rounds, warmup=1, pause_s=0.0,
                                min_rounds=ic.min_rounds, log=lambda *_: None)
    b = len(feed["input_ids"])
    out = {}
    for k, ts in wall.items():
        p50, p95 = float(np.percentile(ts, 50)), float(np.percentile(ts, 95))
        out[k] = {"p50_ms": 1e3 * p50, "p95_ms": 1e3 * p95, "seq_per_s": b / p50,
                  "calls": len(ts), "mean_ms": 1e3 * statistics.mean(ts)}
    log("  " + ", ".join(f"{k} {v['p50_ms']:.1f}ms" for k, v in out.items()))
    return out


def figures(res: dict) -> dict:
    ratio = lambda a, b: res[b]["p50_ms"] / res[a]["p50_ms"]  # noqa: E731  (speed of a over b)
    f = {"int8_vs_ort_fp32": ratio("ort_int8", "ort_fp32"),
         "int8_vs_torch_fp32": ratio("ort_int8", "torch_fp32"),
         "ort_fp32_vs_torch_fp32": ratio("ort_fp32", "torch_fp32")}
    for k in ("torch_fp32", "ort_fp32", "ort_int8"):
        if k + "_sparse" in res:
            f[f"{k}_sparse_time_ratio"] = res[k + "_sparse"]["p50_ms"] / res[k]["p50_ms"]
    f["int8_target_2x_met"] = f["int8_vs_ort_fp32"] >= 2.0 and f["int8_vs_torch_fp32"] >= 2.0
    return f


def run(bc, out_dir: str, log=print) -> dict:
    ic, t0 = bc.inference, time.perf_counter()
    info = machine.info()
    threads = bc.torch_threads or os.cpu_count() or 1
    result = {"machine": info, "config": bc.to_dict(), "models": {}}
    names = [ic.ckpt] if ic.ckpt else [m for m in ic.models.split(",") if m]
    for name in names:
        params, mcfg, quant, label = _model(name, ic)
        log(f"model {label}: {mcfg.num_layers} layers, hidden {mcfg.hidden_size}; "
            f"int8 ranges: {'QAT' if quant else 'fixed'}")
        with tempfile.TemporaryDirectory() as tmp:
            fns = variants(params, mcfg, quant, ic, pathlib.Path(tmp), threads)
            per_batch = {}
            for b in ic.batch_sizes:
                log(f" batch {b} x seq {bc.seq_len}")
                res = time_variants(fns, feed(mcfg, b, bc.seq_len, bc.seed), ic,
                                    ic.budget_s_per_batch)
                per_batch[str(b)] = {"variants": res, "figures": figures(res)}
        result["models"][label] = per_batch
    info["load_avg_end"] = list(os.getloadavg())
    result["wall_s"] = time.perf_counter() - t0
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "inference.json").write_text(jsonio.dumps(result, indent=2, default=str) + "\n")
    log(table(result))
    log(f"wrote {out / 'inference.json'} ({result['wall_s']:.0f} s)")
    return result


def table(result: dict) -> str:
    lines = [f"{'model':20s} {'batch':>5s} {'variant':18s} {'p50 ms':>9s} {'p95 ms':>9s} "
             f"{'seq/s':>8s}"]
    for model, per in result["models"].items():
        for b, r in per.items():
            for k, v in r["variants"].items():
                lines.append(f"{pathlib.Path(model).name[:20]:20s} {b:>5s} {k:18s} "
                             f"{v['p50_ms']:9.1f} {v['p95_ms']:9.1f} {v['seq_per_s']:8.1f}")
            f = r["figures"]
            lines.append(f"  int8 speed-up: {f['int8_vs_ort_fp32']:.2f}x over ORT fp32, "
                         f"{f['int8_vs_torch_fp32']:.2f}x over PyTorch fp32 (target >= 2x: "
                         f"{'met' if f['int8_target_2x_met'] else 'missed'}); sparse/dense time: "
                         + ", ".join(f"{k[:-len('_sparse_time_ratio')]} {v:.2f}"
                                     for k, v in f.items() if k.endswith("_time_ratio")))
    return "\n".join(lines)
