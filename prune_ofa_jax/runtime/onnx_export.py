"""`export(params, model_config, out, int8=..., quant=...)`: a BertFamily classifier as an
ONNX model (see runtime/onnx_graph.py for what int8 means). Inputs input_ids, attention_mask,
token_type_ids (int64 [batch, seq], any size), output logits float32 [batch, num_labels].

Compact by default: heads and FFN neurons that a structured method removed (their output
rows all zero) are not in the graph, so each layer has its own head count and FFN width and
the model is as much faster as it is smaller; a layer that lost every head (or neuron)
keeps its residual path plus the output bias. Removing a unit whose output rows are zero is
exact, so unpruned and unstructured models give the same function either way.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Optional

import numpy as np

from prune_ofa_jax.convert import hf
from prune_ofa_jax.runtime import onnx_graph
from prune_ofa_jax.sparsity import groups


def _encoder_layer(bld, x: str, bias: str, i: int, keep=None) -> str:
    """One post-LN layer; `keep` = (kept heads, kept neurons, kept dims per head) or None
    (all): a compact layer has only those (no head or no neuron: the output bias)."""
    g, cfg = bld.g, bld.cfg
    p = f"backbone/encoder/layer_{i}"
    heads_kept, neurons_kept, dims = keep if keep is not None else (None, None, None)
    n = cfg.num_heads if heads_kept is None else len(heads_kept)
    dd = cfg.head_dim if dims is None else len(dims)
    cols = None if heads_kept is None or n * dd == cfg.hidden_size else groups.head_columns(
        heads_kept, cfg.head_dim, dims)
    neurons = None if neurons_kept is None or len(neurons_kept) == cfg.intermediate_size \
        else neurons_kept
    if n == 0:
        att = bld.bias_only(x, f"{p}/attention/output")
    else:
        shape_bnhd = g.const(f"{p}/shape_bnhd", np.array([0, 0, n, dd], np.int64))
        shape_blh = g.const(f"{p}/shape_blh", np.array([0, 0, n * dd], np.int64))

        def heads(t, perm):
            return g.op("Transpose", [g.op("Reshape", [t, shape_bnhd])], perm=perm)

        q = heads(bld.dense(x, f"{p}/attention/query", cols=cols), [0, 2, 1, 3])
        k = heads(bld.dense(x, f"{p}/attention/key", cols=cols), [0, 2, 3, 1])
        v = heads(bld.dense(x, f"{p}/attention/value", cols=cols), [0, 2, 1, 3])
        # the full head_dim's scaling: removed dims were zero padding (AutoTinyBERT's extracts)
        scores = g.op("Div", [g.op("MatMul", [q, k]),
                              g.const(f"{p}/sqrt_d", np.float32(math.sqrt(cfg.head_dim)))])
        probs = g.op("Softmax", [g.op("Add", [scores, bias])], axis=-1)
        ctx = g.op("Reshape", [g.op("Transpose", [g.op("MatMul", [probs, v])],
                                    perm=[0, 2, 1, 3]), shape_blh])
        att = bld.dense(ctx, f"{p}/attention/output", rows=cols)
    x = bld.layer_norm(g.op("Add", [att, x]), f"{p}/attention/layer_norm")
    if neurons is not None and len(neurons) == 0:
        y = bld.bias_only(x, f"{p}/ffn/output")
    else:
        y = bld.activation(bld.dense(x, f"{p}/ffn/intermediate", cols=neurons), cfg.hidden_act)
        y = bld.dense(y, f"{p}/ffn/output", rows=neurons)
    return bld.layer_norm(g.op("Add", [y, x]), f"{p}/ffn/layer_norm")


def _embeddings(bld, ids: str, mask: str, types: str) -> str:
    g, cfg = bld.g, bld.cfg
    x = bld.embed(ids, "word_embeddings")
    if cfg.has_token_types:
        x = g.op("Add", [x, bld.embed(types, "token_type_embeddings")])
    if cfg.model_type == "roberta":  # pad_idx+1.. over non-pad tokens, pads get pad_idx
        pad = g.const("pad_id", np.int64(cfg.pad_token_id))
        nonpad = g.op("Cast", [g.op("Not", [g.op("Equal", [ids, pad])])], to=7)
        csum = g.op("CumSum", [nonpad, g.const("one_axis", np.int64(1))])
        pos = g.op("Add", [g.op("Mul", [csum, nonpad]), pad])
    else:
        seq = g.op("Gather", [g.op("Shape", [ids]), g.const("dim1", np.int64(1))], axis=0)
        pos = g.op("Unsqueeze", [g.op("Range", [g.const("zero", np.int64(0)), seq,
                                                g.const("step1", np.int64(1))]),
                                 g.const("ax0", np.array([0], np.int64))])
    x = g.op("Add", [x, bld.embed(pos, "position_embeddings")])
    return bld.layer_norm(x, "backbone/embeddings/layer_norm")


def _head(bld, x: str) -> str:
    g, cfg = bld.g, bld.cfg
    first = g.op("Gather", [x, g.const("tok0", np.int64(0))], axis=1)  # [B, H]
    if cfg.model_type == "bert":
        pooled = g.op("Tanh", [bld.dense(first, "backbone/pooler/dense")])
        return bld.dense(pooled, "classifier")
    h = bld.dense(first, "classifier/dense")
    h = g.op("Tanh", [h]) if cfg.model_type == "roberta" else g.op("Relu", [h])
    return bld.dense(h, "classifier/out_proj")


def build(params: Any, model_config, int8: bool = False, quant: Optional[dict] = None,
          form: str = "integer", compact: bool = True):
    """The onnx.ModelProto of the classifier; `compact`: without the heads and FFN neurons
    whose output rows are all zero (sparsity/groups.kept_units: exact, each layer its own
    head count and FFN width; a model without such units gives the same graph either way)."""
    import onnx  # pylint: disable=import-outside-toplevel
    from onnx import TensorProto, helper  # pylint: disable=import-outside-toplevel
    flat = {k: np.asarray(v, np.float32) for k, v in hf.flatten(params).items()}
    if "classifier/kernel" not in flat and "classifier/out_proj/kernel" not in flat:
        raise ValueError("onnx export: only sequence-classification models (task 'cls')")
    bld = onnx_graph._Builder(flat, model_config, quant, int8, form)  # pylint: disable=protected-access
    g, cfg = bld.g, model_config
    ids, mask, types = "input_ids", "attention_mask", "token_type_ids"
    x = _embeddings(bld, ids, mask, types)
    neg = g.const("neg_big", np.float32(np.finfo(np.float32).min))
    keep = g.op("Cast", [mask], to=1)
    bias = g.op("Unsqueeze", [g.op("Mul", [g.op("Sub", [g.const("one_f", np.float32(1)), keep]),
                                           neg]), g.const("ax12", np.array([1, 2], np.int64))])
    keep = groups.kept_units(flat, cfg) if compact else [None] * cfg.num_layers
    for i in range(cfg.num_layers):
        x = _encoder_layer(bld, x, bias, i, keep[i])
    logits = _head(bld, x)
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
              for n in (ids, mask, types)]
    out = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                         ["batch", cfg.num_labels])]
    graph = helper.make_graph(g.nodes, "bert_family_cls", inputs, out, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx_graph.OPSET)],
                              producer_name="prune_ofa_jax")
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def export(params: Any, model_config, out, int8: bool = False,
           quant: Optional[dict] = None, form: str = "integer",
           compact: bool = True) -> pathlib.Path:
    import onnx  # pylint: disable=import-outside-toplevel
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build(params, model_config, int8, quant, form, compact), str(out))
    return out
