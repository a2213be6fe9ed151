"""`export(params, model_config, out, int8=..., quant=...)`: a BertFamily classifier as an
ONNX model (see runtime/onnx_graph.py for what int8 means). Inputs input_ids, attention_mask,
token_type_ids (int64 [batch, seq], any size), output logits float32 [batch, num_labels]."""

from __future__ import annotations

import math
import pathlib
from typing import Any, Optional

import numpy as np

from prune_ofa_jax.convert import hf
from prune_ofa_jax.runtime import onnx_graph


def _encoder_layer(bld, x: str, bias: str, i: int, shape_bnhd: str, shape_blh: str) -> str:
    g, cfg = bld.g, bld.cfg
    p = f"backbone/encoder/layer_{i}"

    def heads(t, perm):
        return g.op("Transpose", [g.op("Reshape", [t, shape_bnhd])], perm=perm)

    q = heads(bld.dense(x, f"{p}/attention/query"), [0, 2, 1, 3])
    k = heads(bld.dense(x, f"{p}/attention/key"), [0, 2, 3, 1])
    v = heads(bld.dense(x, f"{p}/attention/value"), [0, 2, 1, 3])
    scores = g.op("Div", [g.op("MatMul", [q, k]),
                          g.const(f"{p}/sqrt_d", np.float32(math.sqrt(cfg.head_dim)))])
    probs = g.op("Softmax", [g.op("Add", [scores, bias])], axis=-1)
    ctx = g.op("Reshape", [g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3]),
                           shape_blh])
    att = bld.dense(ctx, f"{p}/attention/output")
    x = bld.layer_norm(g.op("Add", [att, x]), f"{p}/attention/layer_norm")
    y = bld.activation(bld.dense(x, f"{p}/ffn/intermediate"), cfg.hidden_act)
    y = bld.dense(y, f"{p}/ffn/output")
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
          form: str = "integer"):
    """The onnx.ModelProto of the classifier."""
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
    shape_bnhd = g.const("shape_bnhd", np.array([0, 0, cfg.num_heads, cfg.head_dim], np.int64))
    shape_blh = g.const("shape_blh", np.array([0, 0, cfg.hidden_size], np.int64))
    for i in range(cfg.num_layers):
        x = _encoder_layer(bld, x, bias, i, shape_bnhd, shape_blh)
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
           quant: Optional[dict] = None, form: str = "integer") -> pathlib.Path:
    import onnx  # pylint: disable=import-outside-toplevel
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build(params, model_config, int8, quant, form), str(out))
    return out
