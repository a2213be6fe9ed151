"""QAT wiring: `QuantConfig`, the `QatDotGeneral` linen module and the model injectors.

`QatDotGeneral` replaces `lax.dot_general` inside `nn.Dense(dot_general_cls=...)`: it
fake-quantises the activations (lhs, asymmetric, EMA range) and the weights (rhs,
symmetric, current max|w|), then multiplies. The EMA statistics are linen variables in the
"quant_stats" collection, e.g. `backbone/encoder/layer_0/attention/query/qat/input_min`:

* train: `model.apply({"params": p, "quant_stats": qs}, ..., mutable=["quant_stats"])`
  returns `(out, {"quant_stats": new_qs})`; the EMA is updated from this batch first and
  the updated range is used to quantise it (Q8BERT / PyTorch observer order).
* eval: `model.apply({"params": p, "quant_stats": qs}, ...)` (collection immutable) uses
  the frozen ranges; nothing changes, outputs are deterministic.
* `model.init` creates the stats at zero with `count == 0` and does not update them. A
  layer whose `count` is still 0 at eval (never trained) falls back to the current
  batch's min/max, i.e. dynamic quantisation, rather than erroring inside jit.

Output re-quantisation (`requantize_output`) is per layer: `requantize_exclude` regexes name
the layers that skip it. With `requantize_after_bias` the quantised value is the Dense output
with its bias added, as the reference QuantizedLinear does (`F.linear(x, w, b)`, then the
output fake-quant); otherwise the product before the float bias (an int32 accumulator).
"""

import dataclasses
import functools
import re
from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from prune_ofa_jax.quant import fake_quant

Array = jax.Array
COLLECTION = "quant_stats"

# Every Dense of the model, as Q8BERT quantises all fully connected layers: encoder
# Linear layers, pooler and task heads (the MLM decoder is tied to the word embeddings
# and goes through `embedding_quant` instead).
ENCODER_INCLUDE = (
    r"(^|/)encoder/layer_\d+/(attention/(query|key|value|output)|ffn/(intermediate|output))$",)
POOLER_INCLUDE = (r"(^|/)pooler/dense$",)
HEADS_INCLUDE = (r"^(mlm_head/transform|nsp_head/dense|qa_outputs)$", r"^classifier(/|$)")
DEFAULT_INCLUDE = ENCODER_INCLUDE + POOLER_INCLUDE + HEADS_INCLUDE


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """What to quantise and how. Regexes are `re.search`ed against Dense param paths
    ("backbone/encoder/layer_0/ffn/intermediate"); a layer is quantised when some include
    matches and no exclude does."""

    weight_bits: int = 8
    act_bits: int = 8
    per_channel: bool = False
    ema_decay: float = 0.9999
    include: Tuple[str, ...] = DEFAULT_INCLUDE
    exclude: Tuple[str, ...] = ()
    quantize_embeddings: bool = False
    requantize_output: bool = False
    requantize_after_bias: bool = False
    requantize_exclude: Tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("include", "exclude", "requantize_exclude"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, name, tuple(value))
            for pattern in getattr(self, name):
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise ValueError(f"QuantConfig.{name}: bad regex {pattern!r}: {e}") from e
        for name in ("weight_bits", "act_bits"):
            bits = getattr(self, name)
            if not isinstance(bits, int) or not 2 <= bits <= 16:
                raise ValueError(f"QuantConfig.{name} must be an int in [2, 16], got {bits}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"QuantConfig.ema_decay must be in (0, 1), got {self.ema_decay}")

    @classmethod
    def from_dict(cls, d: Any) -> "QuantConfig":
        """From a dict / ConfigDict with a subset of the fields (unknown keys rejected)."""
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown QuantConfig fields: {sorted(unknown)}")
        return cls(**d)

    def selects(self, path: str) -> bool:
        """Whether the Dense layer at `path` is quantised."""
        return (any(re.search(p, path) for p in self.include)
                and not any(re.search(p, path) for p in self.exclude))

    def requantizes(self, path: str) -> bool:
        """Whether the quantised Dense at `path` also fake-quantises its output."""
        return self.requantize_output and not any(
            re.search(p, path) for p in self.requantize_exclude)


class QatDotGeneral(nn.Module):
    """Fake-quantised `lax.dot_general` for `nn.Dense(dot_general_cls=...)`.

    lhs: activations, asymmetric `act_bits`, EMA(min/max) range in "quant_stats".
    rhs: weights, symmetric `weight_bits`, per tensor or per output channel (all
    non-contracting rhs axes, i.e. axis -1 of a Dense [in, out] kernel).
    `requantize_output` also fake-quantises the product with its own EMA range: before Dense
    adds the float bias (as an int32-accumulator kernel would), or with `after_bias` the
    biased output (the reference). dot_general never sees the bias, so `after_bias` reads it
    from the parent Dense (which creates it before and adds it after this call) and returns
    `q(out + b) - b`: the Dense's output is then `q(out + b)`, to float rounding.
    """

    weight_bits: int = 8
    act_bits: int = 8
    per_channel: bool = False
    ema_decay: float = 0.9999
    requantize_output: bool = False
    after_bias: bool = False

    def _range(self, prefix: str, x: Array, count: nn.Variable) -> Tuple[Array, Array]:
        lo_v = self.variable(COLLECTION, f"{prefix}_min", jnp.zeros, (), jnp.float32)
        hi_v = self.variable(COLLECTION, f"{prefix}_max", jnp.zeros, (), jnp.float32)
        blo, bhi = fake_quant.batch_range(x)
        seen = count.value > 0
        if self.is_mutable_collection(COLLECTION) and not self.is_initializing():
            lo_v.value = fake_quant.ema_update(lo_v.value, blo, self.ema_decay, seen)
            hi_v.value = fake_quant.ema_update(hi_v.value, bhi, self.ema_decay, seen)
            return lo_v.value, hi_v.value
        # Frozen (eval) or init: EMA range, or the batch range if never trained.
        return jnp.where(seen, lo_v.value, blo), jnp.where(seen, hi_v.value, bhi)

    def _weight_axes(self, rhs: Array, dimension_numbers) -> Optional[Tuple[int, ...]]:
        if not self.per_channel:
            return None
        (_, rhs_contract), _ = dimension_numbers
        return tuple(a for a in range(rhs.ndim) if a not in tuple(rhs_contract))

    def _parent_bias(self, out: Array) -> Optional[Array]:
        """The enclosing Dense's bias in `out`'s dtype, broadcastable; None without one."""
        parent = self.parent
        if not isinstance(parent, nn.Module) or not parent.has_variable("params", "bias"):
            return None
        bias = nn.meta.unbox(parent.get_variable("params", "bias")).astype(out.dtype)
        return jnp.reshape(bias, (1,) * (out.ndim - 1) + (-1,))

    @nn.compact
    def __call__(self, lhs: Array, rhs: Array, dimension_numbers, precision=None,
                 preferred_element_type=None, **kwargs) -> Array:
        count = self.variable(COLLECTION, "count", jnp.zeros, (), jnp.int32)
        lo, hi = self._range("input", lhs, count)
        lhs_q = fake_quant.fake_quant_asymmetric(lhs, lo, hi, self.act_bits)
        rhs_q = fake_quant.fake_quant_symmetric(
            rhs, self.weight_bits, self._weight_axes(rhs, dimension_numbers))
        out = jax.lax.dot_general(lhs_q, rhs_q, dimension_numbers, precision=precision,
                                  preferred_element_type=preferred_element_type, **kwargs)
        if self.requantize_output:
            bias = self._parent_bias(out) if self.after_bias else None
            y = out if bias is None else out + bias
            olo, ohi = self._range("output", y, count)
            y = fake_quant.fake_quant_asymmetric(y, olo, ohi, self.act_bits)
            out = y if bias is None else y - bias
        if self.is_mutable_collection(COLLECTION) and not self.is_initializing():
            count.value = count.value + 1
        return out


def dot_general_cls(cfg: QuantConfig, requantize: Optional[bool] = None
                    ) -> Callable[[], QatDotGeneral]:
    """The zero-argument factory `nn.Dense(dot_general_cls=...)` calls; submodule "qat".
    `requantize`: this layer's output re-quantisation (default: cfg.requantize_output)."""
    return functools.partial(
        QatDotGeneral, weight_bits=cfg.weight_bits, act_bits=cfg.act_bits,
        per_channel=cfg.per_channel, ema_decay=cfg.ema_decay,
        requantize_output=cfg.requantize_output if requantize is None else requantize,
        after_bias=cfg.requantize_after_bias, name="qat")


def make_injector(cfg: QuantConfig) -> Callable[[str], Optional[Callable[[], Any]]]:
    """`dense_injector` for the models: path -> `dot_general_cls` or None (float)."""
    factories = {r: dot_general_cls(cfg, r) for r in (False, True)}

    def injector(path: str) -> Optional[Callable[[], Any]]:
        return factories[cfg.requantizes(path)] if cfg.selects(path) else None

    return injector


def embedding_quant(cfg: QuantConfig) -> Optional[Callable[[Array], Array]]:
    """Per-tensor symmetric `weight_bits` fake-quant of embedding tables, or None when
    `cfg.quantize_embeddings` is off (Q8BERT quantises embeddings to 8 bits this way)."""
    if not cfg.quantize_embeddings:
        return None
    return functools.partial(fake_quant.fake_quant_symmetric, bits=cfg.weight_bits)


def init_quant_stats(model: nn.Module, *args, **kwargs) -> Any:
    """The model's initial "quant_stats" tree (all zeros, `count == 0`), built from
    `jax.eval_shape(model.init, ...)` so no parameters are materialised. `args` are what
    `model.init` takes after the rng (e.g. a dummy `input_ids`). {} if nothing is quantised.
    """
    shapes = jax.eval_shape(functools.partial(model.init, **kwargs), jax.random.key(0), *args)
    stats = shapes.get(COLLECTION, {})
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), stats)


def stats_initialized(quant_stats: Any) -> Array:
    """True when every quantised layer has seen at least one training update."""
    counts = [c for path, c in jax.tree_util.tree_leaves_with_path(quant_stats)
              if getattr(path[-1], "key", None) == "count"]
    return jnp.all(jnp.stack(counts) > 0) if counts else jnp.asarray(True)
