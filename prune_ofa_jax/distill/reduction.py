"""The one masked reduction every distillation/task loss uses (float32, padding-safe)."""

from typing import Optional

import jax
import jax.numpy as jnp

Array = jax.Array


def weighted_mean(values: Array, weights: Optional[Array] = None) -> Array:
    """`sum(w * v) / sum(w)` in float32; plain mean when `weights` is None.

    `weights` covers the leading axes of `values` (trailing axes are averaged, i.e. the
    weights are broadcast over them) or has the same rank with size-1 axes. Entries with
    weight 0 are dropped with `where`, so inf/nan at padding cannot leak into the result.
    Returns 0 when all weights are 0.
    """
    values = jnp.asarray(values, jnp.float32)
    if weights is None:
        return jnp.mean(values)
    w = jnp.asarray(weights, jnp.float32)
    if w.ndim > values.ndim:
        raise ValueError(f"weights rank {w.ndim} > values rank {values.ndim}")
    w = jnp.broadcast_to(w.reshape(w.shape + (1,) * (values.ndim - w.ndim)), values.shape)
    total = jnp.sum(jnp.where(w != 0, values * w, 0.0))
    denom = jnp.sum(w)
    return jnp.where(denom > 0, total / jnp.where(denom > 0, denom, 1.0), 0.0)
