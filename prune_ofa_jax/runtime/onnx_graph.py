"""A BertFamily classifier ("cls" task) as an ONNX graph, fp32 or int8, built from our params.

Built node by node from the Flax param tree (no tracing), so every Dense keeps its name and
the int8 graph can use the QAT model's own quantisation:
  activations  uint8, asymmetric, the EMA range of quant.json (QuantizeLinear with the
               scale and zero point of quant/fake_quant.asymmetric_params); a layer without
               a range (no QAT, or never trained) quantises dynamically (DynamicQuantizeLinear,
               the same formula on the batch's range, as the fake-quant eval falls back to);
  weights      int8, symmetric, scale max|w| / 127 (per output channel with per_channel),
               exactly the fake-quant weights;
  product      MatMulInteger (int32 accumulation, exact) then one float rescale, + fp32 bias.
So the int8 graph computes the fake-quant model's math in integers; only float summation
order differs. Everything else (embeddings, LayerNorm, softmax, attention products, GELU)
stays fp32, as in QAT. Embedding tables quantised by QAT (quantize_embeddings) are stored
int8 and dequantised after the lookup.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from prune_ofa_jax.quant import qat as qat_lib

OPSET = 20  # Gelu, LayerNormalization


class _Graph:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self):
        from onnx import helper  # pylint: disable=import-outside-toplevel
        self.helper, self.nodes, self.inits, self.n = helper, [], [], 0

    def const(self, name: str, value) -> str:
        from onnx import numpy_helper  # pylint: disable=import-outside-toplevel
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs, n_out: int = 1, domain: str = "", **attrs):
        self.n += 1
        outs = [f"{op_type.lower()}_{self.n}_{i}" for i in range(n_out)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs,
                                                name=f"{op_type}_{self.n}", domain=domain,
                                                **attrs))
        return outs[0] if n_out == 1 else outs


def _act_qparams(lo: float, hi: float) -> tuple[np.float32, np.uint8]:
    """quant/fake_quant.asymmetric_params in numpy float32."""
    lo, hi = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))
    scale = np.maximum((hi - lo) / np.float32(255), np.finfo(np.float32).tiny).astype(np.float32)
    zp = np.clip(np.round(-lo / scale), 0, 255)
    return np.float32(scale), np.uint8(zp)


def _weight_q(w: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """quant/fake_quant.quantize_symmetric_int in numpy: (int8 q, float32 scale)."""
    amax = np.max(np.abs(w), axis=0 if per_channel else None, keepdims=per_channel)
    scale = np.where(amax > 0, amax / np.float32(127), np.float32(1.0)).astype(np.float32)
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return q, scale.reshape(-1) if per_channel else scale.reshape(())


class _Builder:
    def __init__(self, flat: dict, cfg, quant: Optional[dict], int8: bool, form: str = "integer"):
        self.g, self.flat, self.cfg, self.int8, self.form = _Graph(), flat, cfg, int8, form
        q = quant or {}
        self.ranges = q.get("ranges", {})
        qcfg = dict(q.get("config") or {})
        qcfg = {k: tuple(v) if isinstance(v, list) else v for k, v in qcfg.items()
                if k in {f for f in qat_lib.QuantConfig.__dataclass_fields__} and v is not None}
        self.qcfg = qat_lib.QuantConfig(**qcfg)

    def dense(self, x: str, path: str, rows=None, cols=None) -> str:
        """x @ kernel + bias; `rows` / `cols`: only those input rows / output columns of the
        kernel (a compact layer: the others are removed units). int8 weight scales come from
        the whole kernel, as the fake-quant model computes them."""
        g, w, b = self.g, self.flat[f"{path}/kernel"], self.flat[f"{path}/bias"]
        pick = lambda a: a if rows is None else a[rows]  # noqa: E731
        col = lambda a: a if cols is None else a[..., cols]  # noqa: E731
        bias = g.const(f"{path}/bias", col(b.astype(np.float32)))
        if not (self.int8 and self.qcfg.selects(path)):
            return g.op("Add", [g.op("MatMul", [x, g.const(f"{path}/kernel", col(pick(w)))]),
                                bias])
        wq, ws = _weight_q(w, self.qcfg.per_channel)
        wq, ws = col(pick(wq)), col(ws) if self.qcfg.per_channel else ws
        rng = self.ranges.get(path)
        if rng is not None:
            s, zp = _act_qparams(rng["input_min"], rng["input_max"])
            xq = g.op("QuantizeLinear", [x, g.const(f"{path}/x_scale", s),
                                         g.const(f"{path}/x_zp", zp)])
            xs, xzp = g.const(f"{path}/x_scale2", s), g.const(f"{path}/x_zp2", zp)
        else:
            xq, xs, xzp = g.op("DynamicQuantizeLinear", [x], n_out=3)
        if self.form == "qdq" and rng is not None:  # DQ -> MatMul, for ORT's QDQ fusions
            xd = g.op("DequantizeLinear", [xq, xs, xzp])
            wd = g.op("DequantizeLinear", [g.const(f"{path}/kernel_q", wq),
                                           g.const(f"{path}/kernel_scale", ws)], axis=1)
            return g.op("Add", [g.op("MatMul", [xd, wd]), bias])
        acc = g.op("MatMulInteger", [xq, g.const(f"{path}/kernel_q", wq), xzp])
        scale = g.op("Mul", [xs, g.const(f"{path}/kernel_scale", ws)])
        y = g.op("Add", [g.op("Mul", [g.op("Cast", [acc], to=1), scale]), bias])
        if self.qcfg.requantizes(path) and "output_min" in (rng or {}):
            y = self._requantize(y, path, rng, bias)
        return y

    def bias_only(self, like: str, path: str) -> str:
        """What dense(x, path) gives when every input row is removed (a layer without heads
        or neurons): its bias, broadcast to `like`'s shape (requantised as in dense)."""
        g = self.g
        bias = g.const(f"{path}/bias", self.flat[f"{path}/bias"].astype(np.float32))
        y = g.op("Expand", [bias, g.op("Shape", [like])])
        rng = self.ranges.get(path)
        if (self.int8 and self.qcfg.selects(path) and self.form != "qdq"
                and self.qcfg.requantizes(path) and "output_min" in (rng or {})):
            y = self._requantize(y, path, rng, bias)
        return y

    def _requantize(self, y: str, path: str, rng: dict, bias: str) -> str:
        """Output fake-quant: of the biased output (after_bias) or of the product."""
        g = self.g
        s, zp = _act_qparams(rng["output_min"], rng["output_max"])
        sc, z = g.const(f"{path}/y_scale", s), g.const(f"{path}/y_zp", zp)
        if self.qcfg.requantize_after_bias:
            return g.op("DequantizeLinear", [g.op("QuantizeLinear", [y, sc, z]), sc, z])
        prod = g.op("Sub", [y, bias])
        deq = g.op("DequantizeLinear", [g.op("QuantizeLinear", [prod, sc, z]), sc, z])
        return g.op("Add", [deq, bias])

    def layer_norm(self, x: str, path: str) -> str:
        g = self.g
        return g.op("LayerNormalization", [x, g.const(f"{path}/scale", self.flat[f"{path}/scale"]),
                                           g.const(f"{path}/bias", self.flat[f"{path}/bias"])],
                    axis=-1, epsilon=float(self.cfg.layer_norm_eps))

    def embed(self, ids: str, name: str) -> str:
        g, path = self.g, f"backbone/embeddings/{name}/embedding"
        table = self.flat[path]
        if self.int8 and self.qcfg.quantize_embeddings:
            q, s = _weight_q(table, False)
            rows = g.op("Gather", [g.const(path + "_q", q), ids], axis=0)
            return g.op("DequantizeLinear", [rows, g.const(path + "_scale", s)])
        return g.op("Gather", [g.const(path, table), ids], axis=0)

    def activation(self, x: str, name: str) -> str:
        if name in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
            return self.g.op("Gelu", [x], approximate="none" if name == "gelu" else "tanh")
        if name == "relu":
            return self.g.op("Relu", [x])
        if name == "tanh":
            return self.g.op("Tanh", [x])
        if name in ("silu", "swish"):
            return self.g.op("Mul", [x, self.g.op("Sigmoid", [x])])
        raise ValueError(f"onnx export: unsupported activation {name!r}")
