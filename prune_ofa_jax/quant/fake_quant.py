"""Fake quantisation with the straight-through estimator (Q8BERT-style 8-bit QAT).

Two schemes, both computed in float32 whatever the input dtype, then cast back:

* Weights: symmetric signed, `scale = max|w| / (2^(bits-1) - 1)`, per tensor or per
  output channel. Zero maps to integer 0, so a pruned weight stays exactly 0.
* Activations: asymmetric unsigned, `scale = (max - min) / (2^bits - 1)` over a range
  first widened to contain 0 (so 0 is exactly representable and padding stays 0), with an
  integer zero point. The range comes from EMA statistics (see `ema_update`).

Gradient: the plain straight-through estimator `x + stop_gradient(q(x) - x)`, i.e. the
gradient is 1 everywhere, *including* values clipped outside the range (as in Q8BERT's
reference implementation; PyTorch's FakeQuantize instead zeroes it outside the range).
The `quantize_*_int` functions return the integer tensors themselves, for integer
simulation checks and export.
"""

from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array


def qmax_symmetric(bits: int) -> int:
    """Largest level of a restricted symmetric grid (levels -qmax..qmax)."""
    return 2 ** (bits - 1) - 1


def qmax_unsigned(bits: int) -> int:
    """Largest level of an unsigned grid (levels 0..qmax)."""
    return 2**bits - 1


def ste(x: Array, q: Array) -> Array:
    """Value of `q`, gradient of the identity w.r.t. `x`."""
    return x + jax.lax.stop_gradient(q - x)


def _reduce_axes(ndim: int, channel_axes: Optional[Sequence[int]]) -> Tuple[int, ...]:
    if channel_axes is None:
        return tuple(range(ndim))
    keep = {a % ndim for a in channel_axes}
    return tuple(a for a in range(ndim) if a not in keep)


def symmetric_scale(w: Array, bits: int = 8,
                    channel_axes: Optional[Sequence[int]] = None) -> Array:
    """`max|w| / qmax` in float32, per tensor or per channel (dims kept, broadcastable).

    An all-zero tensor or channel (fully pruned) gets scale 1 so nothing divides by zero;
    its values quantise to 0 anyway.
    """
    w = jnp.asarray(w, jnp.float32)
    amax = jnp.max(jnp.abs(w), axis=_reduce_axes(w.ndim, channel_axes), keepdims=True)
    return jnp.where(amax > 0, amax / qmax_symmetric(bits), 1.0)


def quantize_symmetric_int(
        w: Array, bits: int = 8,
        channel_axes: Optional[Sequence[int]] = None) -> Tuple[Array, Array]:
    """Integer weights (int32 holding -qmax..qmax) and their float32 scale."""
    scale = symmetric_scale(w, bits, channel_axes)
    qm = qmax_symmetric(bits)
    q = jnp.clip(jnp.round(jnp.asarray(w, jnp.float32) / scale), -qm, qm)
    return q.astype(jnp.int32), scale


def fake_quant_symmetric(w: Array, bits: int = 8,
                         channel_axes: Optional[Sequence[int]] = None) -> Array:
    """Symmetric fake quantisation with STE, same dtype as `w`; zeros stay exactly zero."""
    q, scale = quantize_symmetric_int(jax.lax.stop_gradient(w), bits, channel_axes)
    return ste(w, (q.astype(jnp.float32) * scale).astype(w.dtype))


def asymmetric_params(lo: Array, hi: Array, bits: int = 8) -> Tuple[Array, Array]:
    """(scale, zero_point), both float32, for [lo, hi] widened to include 0.

    The zero point is an integer value in [0, qmax]. A degenerate range (lo == hi == 0)
    gets the smallest positive scale, so everything maps to the zero point, i.e. 0.0.
    """
    lo = jnp.minimum(jnp.asarray(lo, jnp.float32), 0.0)
    hi = jnp.maximum(jnp.asarray(hi, jnp.float32), 0.0)
    qm = qmax_unsigned(bits)
    scale = jnp.maximum((hi - lo) / qm, jnp.finfo(jnp.float32).tiny)
    zero_point = jnp.clip(jnp.round(-lo / scale), 0, qm)
    return scale, zero_point


def quantize_asymmetric_int(x: Array, lo: Array, hi: Array,
                            bits: int = 8) -> Tuple[Array, Array, Array]:
    """Unsigned integer activations (int32 holding 0..qmax), scale and zero point."""
    scale, zp = asymmetric_params(lo, hi, bits)
    x = jnp.asarray(x, jnp.float32)
    q = jnp.clip(jnp.round(x / scale) + zp, 0, qmax_unsigned(bits))
    return q.astype(jnp.int32), scale, zp


def fake_quant_asymmetric(x: Array, lo: Array, hi: Array, bits: int = 8) -> Array:
    """Asymmetric fake quantisation of `x` on [lo, hi] (clipping outside), with STE."""
    sg = jax.lax.stop_gradient
    q, scale, zp = quantize_asymmetric_int(sg(x), sg(lo), sg(hi), bits)
    return ste(x, ((q.astype(jnp.float32) - zp) * scale).astype(x.dtype))


def batch_range(x: Array) -> Tuple[Array, Array]:
    """(min, max) of `x` over all its elements, float32, no gradient."""
    x = jax.lax.stop_gradient(jnp.asarray(x, jnp.float32))
    return jnp.min(x), jnp.max(x)


def ema_update(old: Array, new: Array, decay: float, initialized: Array) -> Array:
    """`decay * old + (1 - decay) * new`, or `new` itself when not yet `initialized`.

    Like Q8BERT/TF, the first update initialises the EMA with the batch statistics instead
    of decaying from 0. `initialized` may be traced.
    """
    return jnp.where(initialized, decay * old + (1.0 - decay) * new, new)
