"""Checksums of device arrays, the same for any sharding, mesh or process count.

`fingerprints(tree)`: {leaf path: 8 hex digits} of every array, each from a jitted pass
over it on the devices: each 32-bit word of an array (1- and 2-byte types widened, 8-byte
ones split) is mixed with its row-major position by murmur3's finaliser and the results are
summed mod 2^32. An integer sum does not depend on the order of the reduction, so the value
does not depend on how the array is sharded, and every process of a multi-host run gets the
same one (a replicated result of the global arrays). Any change of one word changes it (the
finaliser is a bijection); random damage goes unnoticed with probability 2^-32 per array.
Only the checksums leave the devices. checkpoint.py stores them with every checkpoint.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from prune_ofa_jax.parallel import mesh as mesh_lib

KIND = "fmix32-sum-v1"  # the algorithm below; a change of it needs a new name

_U = jnp.uint32


def _fmix32(h):
    """murmur3's finaliser: a bijection of uint32 that mixes every input bit."""
    h = h ^ (h >> 16)
    h = h * _U(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * _U(0xC2B2AE35)
    return h ^ (h >> 16)


def _words(x):
    """The array's bytes as uint32 words (1- and 2-byte types widened, 8-byte ones split)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(_U)
    size = jnp.dtype(x.dtype).itemsize
    if size < 4:
        return jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16}[size]).astype(_U)
    return jax.lax.bitcast_convert_type(x, _U)  # 8 bytes: a trailing axis of 2 words


def _checksum(x):
    w = _words(x)
    index, stride = jnp.zeros(w.shape, _U), 1  # each word's row-major position, mod 2^32
    for d in reversed(range(w.ndim)):
        index = index + jax.lax.broadcasted_iota(_U, w.shape, d) * _U(stride % 2**32)
        stride *= w.shape[d]
    return jnp.sum(_fmix32(w ^ (index * _U(0x9E3779B9))), dtype=_U)


# One program per leaf shape, dtype and sharding (not one per tree): the leaves of a model
# repeat a few shapes, and params, optimizer moments and masks share them, so every tree a
# process checksums (each stage's, each save's) reuses the programs compiled for the first.
_checksum_jit = jax.jit(_checksum)


def _to_int(s) -> int:
    """A checksum's value; a scalar computed from global arrays is replicated, so every
    process reads its own copy."""
    if s.is_fully_replicated:
        return int(np.asarray(s.addressable_data(0)))
    return int(mesh_lib.to_host(s))


def fingerprints(tree) -> dict:
    """{leaf path: 8 hex digits} of every array in `tree` (see the module docstring)."""
    flat = jax.tree_util.tree_leaves_with_path(tree)
    sums = [_checksum_jit(x) for _, x in flat]  # dispatched together, then read
    return {jax.tree_util.keystr(k): f"{_to_int(s):08x}" for (k, _), s in zip(flat, sums)}
