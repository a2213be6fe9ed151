"""Evaluating one trained model of the compression study as it would be deployed: exported
to ONNX (fp32; int8 with its QAT ranges for a QAT model) and run by onnxruntime on the task's
dev rows, clean and with typos; packed into a .pofa file for its size on disk; timed."""

from __future__ import annotations

import os
import pathlib
import tempfile

import ml_collections
import numpy as np

from prune_ofa_jax import paths
from prune_ofa_jax.bench import inference
from prune_ofa_jax.convert import hf, pack_ckpt, params_ckpt, qat_ranges
from prune_ofa_jax.data import common, disaster_tweets, glue, tokenization
from prune_ofa_jax.runtime import onnx_export, ort
from prune_ofa_jax.study import quality

TYPO_RATES = (0.05, 0.1, 0.2)
TWEETS_TRAIN = "disaster_tweets/train.csv"


def dev_examples(task: str, data_root: str = "", seed: int = 0):
    """The dev rows the study's runs evaluate on (as train/inputs.py picks them)."""
    root = pathlib.Path(data_root) if data_root else paths.data_root()
    if task == "tweets":
        return disaster_tweets.train_dev_split(disaster_tweets.load(root / TWEETS_TRAIN), 0.1, seed)[1]
    spec = glue.task(task)
    for data_dir in (root / "glue", root):
        try:
            glue.task_file(spec, spec.eval_splits[0], data_dir)
        except common.DataError:
            continue
        return glue.load(spec.name, spec.eval_splits[0], data_dir=data_dir)
    return glue.load(spec.name, spec.eval_splits[0], data_dir=root)


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
    out = {"metrics": head, "per_class": quality.per_class(pred, labels),
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


def latency(model_dir, onnx_path, batch_sizes, seq_len: int, budget_s: float,
            torch_too: bool = False) -> dict:
    """p50/p95 ms and sequences/s of the deployed model (and of fp32 PyTorch on request)."""
    sess, int8 = session_for(model_dir, onnx_path)
    params, mcfg, _ = params_ckpt.load_params(model_dir)
    if seq_len > mcfg.max_position_embeddings:
        raise ValueError(f"--latency_seq_len {seq_len} exceeds the model's "
                         f"max_position_embeddings {mcfg.max_position_embeddings}")
    fns = {"ort_int8" if int8 else "ort_fp32": lambda feed: sess.run(["logits"], feed)[0]}
    if torch_too:
        fns["torch_fp32"] = inference.torch_fn(params, mcfg, os.cpu_count() or 1)
    ic = ml_collections.ConfigDict({"min_rounds": 5, "max_rounds": 40})
    return {str(b): inference.time_variants(fns, inference.feed(mcfg, b, seq_len, 0), ic,
                                            budget_s, log=lambda *_: None)
            for b in batch_sizes}
