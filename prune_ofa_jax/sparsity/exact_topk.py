"""Exact-count magnitude selection, with a traced sparsity, without sorting.

Counting rule (used by every pattern and method): a group of `n` scores at target
sparsity `s` keeps exactly `n - num_pruned(s, n)` of them, where num_pruned is floor(s * n)
evaluated exactly in integers (for round decimals such as 0.9 it equals the textbook value
even though float32 stores 0.89999998; see `num_pruned`; `host_kept_count` mirrors it).
Ties are broken by position: among scores equal to the threshold, the ones latest in
group order (tensor order of `jax.tree.leaves`, then row-major index) are kept, the same
choice as "keep rank >= k" under a stable argsort. Tied inputs never overshoot.

Why no argsort or cumsum: the k-th smallest (score, position) key is found by bisection,
on the float32 bit patterns of the (non-negative) scores, then on positions among ties;
each of the <= 62 steps is one fused counting pass. Memory stays O(tensor) even for one
global threshold over all of BERT's encoder (no concatenation of the weights; scores are
stacked per shape, 3 stacks for BERT), the HLO stays small (a cumsum tie break compiled
5-10x slower on CPU for BERT-base) and it suits TPUs, where large sorts are slow.
"""

import fractions
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_SIGN_OFF = 0x7FFFFFFF


def _mul_u64(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Full 64-bit product of two uint32 arrays as (hi, lo) uint32 words."""
    x0, x1 = x & 0xFFFF, x >> 16
    y0, y1 = y & 0xFFFF, y >> 16
    p00, p01, p10, p11 = x0 * y0, x0 * y1, x1 * y0, x1 * y1
    mid = (p00 >> 16) + (p01 & 0xFFFF) + (p10 & 0xFFFF)
    lo = ((mid & 0xFFFF) << 16) | (p00 & 0xFFFF)
    hi = p11 + (p01 >> 16) + (p10 >> 16) + (mid >> 16)
    return hi, lo


def _floor_prod(bits: jax.Array, n: int) -> jax.Array:
    """floor(x * n) for the non-negative float32 x <= 1 with bit pattern `bits` (uint32)."""
    biased_exp = (bits >> 23) & 0xFF
    frac = bits & 0x7FFFFF
    mant = jnp.where(biased_exp == 0, frac, frac | 0x800000)  # x = mant * 2**-q
    q = jnp.where(biased_exp == 0, jnp.uint32(149), jnp.uint32(150) - biased_exp)
    hi, lo = _mul_u64(mant, jnp.uint32(n))
    q_lo = jnp.clip(q, 1, 31)  # q >= 23 whenever x <= 1
    low_branch = (lo >> q_lo) | (hi << (32 - q_lo))
    high_branch = hi >> (jnp.clip(q, 32, 63) - 32)
    return jnp.where(q < 32, low_branch, jnp.where(q < 64, high_branch, 0)).astype(jnp.int32)


def num_pruned(s, n: int) -> jax.Array:
    """How many of `n` entries target sparsity `s` prunes (int32, exact; `n` static < 2**31).

    k = min(floor(n * s+), floor(n * s) + 1), s+ = the next float32 above float32(s);
    k = n for s >= 1 and 0 for s <= 0. Why s+: float32 stores a target such as 0.9 as
    0.89999998, and the plain floor of that product would prune 17 of 20 weights, not 18.
    s+ lies above every decimal that rounds to s, so round decimals give the textbook
    `floor(s * n)` (exactly, for n < 2**24 / 1.5); otherwise the rule prunes at most one
    entry more than floor(float32(s) * n). Products are exact (64-bit integer limbs); a
    float32 product would be off by up to n * 2**-24 (5 weights at BERT-base's 85M).
    """
    if not 0 <= n < 2**31:
        raise ValueError(f"count n={n} must be in [0, 2**31)")
    s = jnp.clip(jnp.asarray(s, jnp.float32), 0.0, 1.0)
    bits = lax.bitcast_convert_type(s, jnp.uint32)
    k = jnp.minimum(_floor_prod(bits + 1, n), _floor_prod(bits, n) + 1)
    return jnp.where(s >= 1.0, jnp.int32(n), k)


def host_num_pruned(n: int, s: float) -> int:
    """Python mirror of `num_pruned` (for tests, reports and configs)."""
    s32 = np.clip(np.float32(s), np.float32(0), np.float32(1))
    if s32 >= 1:
        return n
    s_plus = np.nextafter(s32, np.float32(np.inf))
    floor = lambda x: int(fractions.Fraction(float(x)) * n)  # noqa: E731
    return min(floor(s_plus), floor(s32) + 1)


def host_kept_count(n: int, s: float) -> int:
    """Entries kept out of `n` at target `s`: `n - host_num_pruned(n, s)`."""
    return n - host_num_pruned(n, s)


def _bits(score: jax.Array) -> jax.Array:
    """Order-preserving int32 view of non-negative float32 scores (-0 folded into +0)."""
    return lax.bitcast_convert_type(score.astype(jnp.float32), jnp.int32) & _SIGN_OFF


def _signed_bits(score: jax.Array) -> jax.Array:
    """Order-preserving int32 key in [0, 2**31) of float32 scores of either sign (learned
    scores). The 32-bit ordered key (negatives bit-flipped, positives with the sign bit set)
    is halved to fit the bisection's range, so two floats one ulp apart may tie (and are
    then ordered by position, like any tie)."""
    u = lax.bitcast_convert_type(score.astype(jnp.float32), jnp.uint32)
    ordered = jnp.where(u >> 31 == 1, ~u, u | jnp.uint32(0x80000000))
    return (ordered >> 1).astype(jnp.int32)


def _bisect(count_le, ks: jax.Array, upper: int) -> jax.Array:
    """Per group g: the smallest v in [0, upper] with count_le(v)[g] >= ks[g] (else upper)."""

    def body(_, carry):
        lo, hi = carry
        mid = lo + (hi - lo) // 2
        enough = count_le(mid) >= ks
        return jnp.where(enough, lo, jnp.minimum(mid + 1, hi)), jnp.where(enough, mid, hi)

    lo = jnp.zeros_like(ks)
    hi = jnp.full_like(ks, upper)
    lo, _ = lax.fori_loop(0, max(upper, 1).bit_length(), body, (lo, hi))
    return lo


class _Buckets:
    """Score tensors stacked by shape: a few large counting passes, not one per tensor.

    Groups: per_tensor -> one group per tensor, numbered in bucket order; else one group.
    `pos` is each entry's position within its group (tensor order, then row-major), the
    tie-break key.
    """

    def __init__(self, scores: Sequence[jax.Array], per_tensor: bool, signed: bool = False):
        self.per_tensor = per_tensor
        key = _signed_bits if signed else _bits
        by_shape: dict[tuple, list[int]] = {}
        for r, x in enumerate(scores):
            by_shape.setdefault(tuple(x.shape), []).append(r)
        self.rows = list(by_shape.values())
        self.data = [jnp.stack([key(scores[r]) for r in rows]) for rows in self.rows]
        sizes = [int(x.size) for x in scores]
        starts = np.cumsum([0] + sizes[:-1])
        self.pos = []
        for rows, d in zip(self.rows, self.data):
            offset = np.zeros(len(rows)) if per_tensor else starts[rows]
            self.pos.append(self._expand(jnp.asarray(offset, jnp.int32), d.ndim)
                            + lax.iota(jnp.int32, d[0].size).reshape(d.shape[1:]))
        if per_tensor:
            self.group_sizes = [sizes[r] for rows in self.rows for r in rows]
            self.first = np.cumsum([0] + [len(rows) for rows in self.rows])
        else:
            self.group_sizes = [sum(sizes)]

    @staticmethod
    def _expand(v: jax.Array, ndim: int) -> jax.Array:
        return v.reshape(v.shape + (1,) * (ndim - v.ndim))

    def per_row(self, v: jax.Array, b: int) -> jax.Array:
        """Per-group values [G] -> values broadcastable against bucket b's data."""
        if self.per_tensor:
            v = v[self.first[b]:self.first[b + 1]]
        return self._expand(v, self.data[b].ndim)

    def count(self, pred) -> jax.Array:
        """[G] int32 counts of `pred(b, data_b)` per group."""
        rows = [jnp.sum(pred(b, d), axis=tuple(range(1, d.ndim)), dtype=jnp.int32)
                for b, d in enumerate(self.data)]
        if self.per_tensor:
            return jnp.concatenate(rows)
        return sum(jnp.sum(r) for r in rows).reshape(1)

    def unstack(self, per_bucket: Sequence[jax.Array]) -> list[jax.Array]:
        out = [None] * sum(len(rows) for rows in self.rows)
        for rows, arr in zip(self.rows, per_bucket):
            for j, r in enumerate(rows):
                out[r] = arr[j]
        return out


def keep_masks(scores: Sequence[jax.Array], sparsity, per_tensor: bool,
               signed: bool = False) -> list[jax.Array]:
    """Bool keep masks shaped like `scores` (non-negative float arrays; any sign with
    `signed=True`, e.g. learned mask scores: the lowest are pruned, not the smallest |s|).

    per_tensor=True: each tensor keeps exactly `n - num_pruned(sparsity, n)` of its n
    entries; False: one global selection, exactly that many over all entries together.
    Entries are ordered by the key (score, position in group) and the k smallest keys are
    pruned. The k-th key is found by bisection, first on the score's bit pattern (31
    counting passes), then, only if some group has ties straddling the cut, on the
    position among scores equal to it (<= 31 more passes).
    """
    if not scores:
        raise ValueError("keep_masks needs at least one score array")
    bk = _Buckets(scores, per_tensor, signed)
    ks = jnp.stack([num_pruned(sparsity, n) for n in bk.group_sizes])
    thr = _bisect(lambda v: bk.count(lambda b, d: d <= bk.per_row(v, b)), ks, _SIGN_OFF)
    below = bk.count(lambda b, d: d < bk.per_row(thr, b))
    at_thr = bk.count(lambda b, d: d == bk.per_row(thr, b))

    def last_pruned_tie():
        return _bisect(
            lambda v: below + bk.count(lambda b, d: (d == bk.per_row(thr, b))
                                       & (bk.pos[b] <= bk.per_row(v, b))),
            ks, max(bk.group_sizes) - 1)

    no_split = lambda: jnp.full_like(ks, np.iinfo(np.int32).max)  # noqa: E731 (prune all ties)
    last = lax.cond(jnp.any(below + at_thr > ks), last_pruned_tie, no_split)
    keep = [(d > bk.per_row(thr, b))
            | ((d == bk.per_row(thr, b)) & (bk.pos[b] > bk.per_row(last, b)))
            | bk.per_row(ks == 0, b)
            for b, d in enumerate(bk.data)]
    return bk.unstack(keep)
