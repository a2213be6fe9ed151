"""Reorder a teacher's units by importance before it becomes the supernet (optional).

A sub-model keeps the *first* dims of everything, so the order of a trained network's units
decides what a prefix keeps. AutoTinyBERT trains its supernet from scratch (the order emerges);
we start from the teacher and have a few hundred steps, so we first sort, as DynaBERT's
"network rewiring" does for heads and neurons (here by weight magnitude, no data needed):

- FFN neurons of each layer by |W_in[:, j]| * |W_out[j, :]|;
- within each head, the query/key dims by |W_q[:, i]| * |W_k[:, i]| and the value/output
  dims by |W_v[:, i]| * |W_o[i, :]| (one permutation for q and k, one for v and the output
  rows, so every head's scores and context are unchanged);
- the residual stream (hidden dims) by the summed |scale| of all its LayerNorms, applied to
  every embedding table, LayerNorm, Linear and the pooler alike.

Every permutation preserves the network's function: the rewired model's hidden states and
pooled output are the original's with the hidden dims permuted (`perm`), its attention
scores identical (tested). The KD projection W_fit starts as that permutation's inverse.
"""

from __future__ import annotations

import numpy as np


def _norm(x, axis):
    return np.linalg.norm(np.asarray(x), axis=axis)


def _head_perm(score, n: int) -> np.ndarray:
    """Column order of an [n*dh] axis: each head's dims by descending score, heads in place."""
    dh = score.size // n
    order = np.argsort(-score.reshape(n, dh), axis=1, kind="stable")
    return (order + dh * np.arange(n)[:, None]).reshape(-1)


def hidden_perm(params) -> np.ndarray:
    """The residual stream's order: dims by the summed |scale| of every LayerNorm."""
    bb = params["backbone"]
    scales = [bb["embeddings"]["layer_norm"]["scale"]]
    for layer in bb["encoder"].values():
        scales += [layer["attention"]["layer_norm"]["scale"], layer["ffn"]["layer_norm"]["scale"]]
    return np.argsort(-np.sum([np.abs(np.asarray(s)) for s in scales], axis=0), kind="stable")


def _layer(p, h, n: int) -> dict:
    att, ffn = p["attention"], p["ffn"]
    a = {k: {"kernel": np.asarray(att[k]["kernel"]), "bias": np.asarray(att[k]["bias"])}
         for k in ("query", "key", "value", "output")}
    qk = _head_perm(_norm(a["query"]["kernel"], 0) * _norm(a["key"]["kernel"], 0), n)
    vo = _head_perm(_norm(a["value"]["kernel"], 0) * _norm(a["output"]["kernel"], 1), n)
    w_in, w_out = np.asarray(ffn["intermediate"]["kernel"]), np.asarray(ffn["output"]["kernel"])
    f = np.argsort(-_norm(w_in, 0) * _norm(w_out, 1), kind="stable")
    ln = lambda t: {"scale": np.asarray(t["scale"])[h], "bias": np.asarray(t["bias"])[h]}
    cols = lambda d, perm: {"kernel": d["kernel"][h][:, perm], "bias": d["bias"][perm]}
    return {"attention": {"query": cols(a["query"], qk), "key": cols(a["key"], qk),
                          "value": cols(a["value"], vo),
                          "output": {"kernel": a["output"]["kernel"][vo][:, h],
                                     "bias": a["output"]["bias"][h]},
                          "layer_norm": ln(att["layer_norm"])},
            "ffn": {"intermediate": {"kernel": w_in[h][:, f],
                                     "bias": np.asarray(ffn["intermediate"]["bias"])[f]},
                    "output": {"kernel": w_out[f][:, h],
                               "bias": np.asarray(ffn["output"]["bias"])[h]},
                    "layer_norm": ln(ffn["layer_norm"])}}


def rewire(params, num_heads: int) -> tuple[dict, np.ndarray]:
    """(the reordered BertFamily "base" tree, the hidden permutation `perm`: new dim i is
    old dim perm[i])."""
    h = hidden_perm(params)
    bb = params["backbone"]
    emb = bb["embeddings"]
    out = {"embeddings": {
        **{k: {"embedding": np.asarray(emb[k]["embedding"])[:, h]}
           for k in emb if k != "layer_norm"},
        "layer_norm": {"scale": np.asarray(emb["layer_norm"]["scale"])[h],
                       "bias": np.asarray(emb["layer_norm"]["bias"])[h]}},
        "encoder": {k: _layer(v, h, num_heads) for k, v in bb["encoder"].items()}}
    if "pooler" in bb:
        d = bb["pooler"]["dense"]
        out["pooler"] = {"dense": {"kernel": np.asarray(d["kernel"])[h][:, h],
                                   "bias": np.asarray(d["bias"])[h]}}
    return {"backbone": out}, h


def fit_init(perm: np.ndarray, teacher_hidden: int) -> np.ndarray:
    """W_fit mapping the rewired stream back to the teacher's order (the full arch then
    matches h_T exactly at step 0)."""
    k = np.zeros((perm.size, teacher_hidden), np.float32)
    k[np.arange(perm.size), perm] = 1.0
    return k
