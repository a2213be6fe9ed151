"""Evaluating one trained model of the compression study as it would be deployed: exported
to ONNX (fp32; int8 with its QAT ranges for a QAT model) and run by onnxruntime on the task's
dev rows (the rows the training runs score: train/inputs.py), clean and with typos; packed
into a .pofa file for its size on disk; and every model timed side by side by the one latency
function (runtime/latency.py), as the inference bench times its models."""

from __future__ import annotations

import pathlib
import tempfile

import numpy as np

from prune_ofa_jax import config_base
from prune_ofa_jax.convert import hf, pack_ckpt, params_ckpt, qat_ranges
from prune_ofa_jax.data import tokenization
from prune_ofa_jax.runtime import latency as latency_lib
from prune_ofa_jax.runtime import onnx_export, ort
from prune_ofa_jax.study import quality
from prune_ofa_jax.train import inputs

TYPO_RATES = (0.05, 0.1, 0.2)


def dev_examples(task: str, data_root: str = "", split_seed: int = 0):
    """The dev rows the study's runs evaluate on (train/inputs.py's own choice: the tweets
    split fixed by `split_seed`, whatever the run seed)."""
    c = config_base.base()
    c.data.kind = "tweets" if task == "tweets" else "glue"
    c.data.glue_task = "sst2" if task == "tweets" else task
    c.data.root, c.data.split_seed = data_root, split_seed
    return inputs.classification_examples(c)[1]


def encode(tok, examples, text_a=None, max_len: int = 128) -> dict:
    return tokenization.encode_pairs(tok, text_a if text_a is not None else examples.text_a,
                                     examples.text_b, max_len)


def session_for(model_dir, onnx_path) -> tuple:
    """(onnxruntime session, int8?) of a trained model dir: int8 when it holds QAT ranges."""
    params, mcfg, _ = params_ckpt.load_params(model_dir)
    quant = qat_ranges.load(model_dir)
    onnx_export.export(params, mcfg, onnx_path, int8=quant is not None, quant=quant)
    return ort.session(onnx_path), quant is not None


def evaluate(sess, task: str, examples, tok, max_len: int, seed: int = 0) -> dict:
    """Clean metrics, per-class numbers, calibration, and the headline metric under typos."""
    labels = np.asarray(examples.labels)
    logits = ort.predict(sess, encode(tok, examples, max_len=max_len))
    probs = quality.softmax(logits)
    pred = probs.argmax(-1)
    head = quality.headline(task, pred, labels)
    out = {"metrics": head, "interval": quality.row_interval(task, pred, labels, seed),
           "pred": pred.tolist(), "per_class": quality.per_class(pred, labels),
           "calibration": quality.calibration(probs, labels), "robustness": {"0": head}}
    for rate in TYPO_RATES:
        noisy_a = quality.add_typos(examples.text_a, rate, seed)
        noisy = examples if examples.text_b is None else examples.__class__(
            examples.text_a, quality.add_typos(examples.text_b, rate, seed + 1), examples.labels)
        p = ort.predict(sess, encode(tok, noisy, noisy_a, max_len)).argmax(-1)
        out["robustness"][str(rate)] = quality.headline(task, p, labels)
    return out


def size_on_disk(model_dir, out: pathlib.Path, int8: bool) -> dict:
    """The .pofa file (bitmask/CSR per tensor, int8 Dense kernels for a QAT model; also with
    int8 embeddings) vs the fp32 safetensors file of the same model."""
    import safetensors.numpy  # pylint: disable=import-outside-toplevel
    params, mcfg, task = params_ckpt.load_params(model_dir)
    quant = qat_ranges.load(model_dir)
    rep = pack_ckpt.pack_params(params, mcfg, task, out,
                                pack_ckpt.default_options(int8=int8), quant)
    res = {"pofa_bytes": rep["file_bytes"], "layout_bytes": rep["layout_bytes"],
           "estimate_best_bytes": rep["estimate_best_bytes"],
           "sparsity": rep["prunable_sparsity"]}
    if int8:
        emb = out.with_name(out.stem + "_emb8.pofa")
        res["pofa_int8_embeddings_bytes"] = pack_ckpt.pack_params(
            params, mcfg, task, emb, pack_ckpt.default_options(int8=True, int8_embeddings=True),
            quant)["file_bytes"]
    with tempfile.TemporaryDirectory() as tmp:
        st = pathlib.Path(tmp) / "model.safetensors"
        safetensors.numpy.save_file(hf.to_hf_state_dict(params, mcfg, task), str(st))
        res["safetensors_fp32_bytes"] = st.stat().st_size
    res["x_vs_safetensors"] = res["safetensors_fp32_bytes"] / res["pofa_bytes"]
    return res


def latency_variants(models: dict, tmp: pathlib.Path, runtimes=("ort", "torch")) -> list:
    """`<model>/ort_int8` (a QAT model) or `<model>/ort_fp32`, and `<model>/torch_fp32` for
    the fp32 ones when "torch" is in `runtimes`; models: {name: model dir}."""
    out = []
    for name, mdir in models.items():
        params, mcfg, task = params_ckpt.load_params(mdir)
        quant = qat_ranges.load(mdir)
        kind = "ort_int8" if quant is not None else "ort_fp32"
        if "ort" in runtimes:
            out.append(latency_lib.onnx_variant(f"{name}/{kind}", params, mcfg,
                                                tmp / f"{name}.onnx", int8=quant is not None,
                                                quant=quant))
        if "torch" in runtimes and quant is None:
            out.append(latency_lib.torch_variant(f"{name}/torch_fp32", params, mcfg, task,
                                                 tmp / f"hf_{name}"))
    return out


# ratios reported beside the table when both sides were timed: (label, fast, slow)
SPEEDUPS = (("int8 (sparse_int8) over ORT fp32 (sparse)", "sparse_int8/ort_int8",
             "sparse/ort_fp32"),
            ("int8 (sparse_int8) over ORT fp32 (dense)", "sparse_int8/ort_int8",
             "dense/ort_fp32"),
            ("ORT fp32 over PyTorch fp32 (dense)", "dense/ort_fp32", "dense/torch_fp32"),
            ("dense over sparse, ORT fp32 (1.0: zeros cost the same)", "dense/ort_fp32",
             "sparse/ort_fp32"))


def latency(models: dict, tmp, batch_sizes, seq_len: int,
            settings: latency_lib.Settings, runtimes=("ort", "torch")) -> dict:
    """Every model timed side by side (runtime/latency.py): {"models": {model: {batch:
    {runtime kind: stats}}}, "speedups": {batch: {label: latency.ratio fields}}, "settings",
    "workers"}."""
    for mdir in models.values():
        mcfg = params_ckpt.load_params(mdir)[1]
        if seq_len > mcfg.max_position_embeddings:
            raise ValueError(f"--latency_seq_len {seq_len} exceeds the model's "
                             f"max_position_embeddings {mcfg.max_position_embeddings}")
    tmp = pathlib.Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    res = latency_lib.measure(latency_variants(models, tmp, runtimes), batch_sizes, seq_len,
                              settings, log=lambda *_: None)
    out = {"models": {}, "speedups": {}, "settings": res["settings"], "seq_len": seq_len,
           "workers": res["workers"]}
    for b, per in res["batches"].items():
        for key, st in per.items():
            model, kind = key.split("/")
            out["models"].setdefault(model, {}).setdefault(b, {})[kind] = st
        out["speedups"][b] = {label: latency_lib.speedup(per, fast, slow)
                              for label, fast, slow in SPEEDUPS if fast in per and slow in per}
    return out
