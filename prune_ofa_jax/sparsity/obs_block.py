"""The OBS maths of one batch of Fisher blocks: float32 [N, B] weights and alive masks,
[N, B, B] gradient outer-product sums (sparsity/obs.py lays kernels out in blocks, shards
them and applies these per shard).

Damp (relative, unlike the reference's absolute lambda = 1e-7): per block,
F' = F_AA + damp * mean(diag F_AA) * I over its alive entries A (kept before this prune,
not padding). The same `damp` then means the same for every layer and loss scale,
`num_grads < block_size` (a rank-deficient F) is well posed, and the float32 Cholesky sees
a condition number <= 1 + B / damp. 1e-2 (SparseGPT's choice) is a sound default; results
carry a relative error of up to about 1e-6 / damp at B = 50 (measured against float64); a
damp below MIN_DAMP is refused. A block whose mean diagonal is below 1e-20 (no gradient
signal) uses 1e-20 in its place: it falls back to magnitude order and ranks below every
block with curvature.

OBS, per block on the alive set A with newly pruned Q and kept K = A \\ Q:
  saliency rho_q = w_q^2 / (2 [F'^-1]_qq);
  update (exact, for the whole set Q at once) dw = -F'^-1[:, Q] ([F'^-1]_QQ)^-1 w_Q,
  computed in its equivalent primal form dw_K = F'_KK^-1 F'_KQ w_Q, dw_Q = -w_Q (one
  Cholesky solve of the better conditioned F'_KK, not a second inversion of F'^-1).
Restricting F to A (instead of relying on masked gradients) makes every prune the exact
OBS step on the weights still alive; pruned weights stay exactly 0.0.
"""

import jax
import jax.numpy as jnp

CURVATURE_FLOOR = 1e-20  # mean Fisher diagonal below which a block counts as flat
MIN_DAMP = 1e-5  # smaller, a rank-deficient block's float32 Cholesky loses definiteness


def _scaled(sums, count, alive):
    """(F_A / c, c): the empirical Fisher restricted to the alive entries (zero rows and
    columns elsewhere), scaled by c = its mean alive diagonal so the entries are O(1)."""
    a = alive.astype(jnp.float32)
    f = sums / jnp.maximum(count, 1).astype(jnp.float32) * a[:, :, None] * a[:, None, :]
    n_alive = jnp.maximum(jnp.sum(a, axis=-1), 1.0)
    c = jnp.maximum(jnp.einsum("nii->n", f) / n_alive, CURVATURE_FLOOR)
    return f / c[:, None, None], c


def _plus_damp(f, damp):
    """f + damp * I: on the alive entries the dampened Fisher; elsewhere decoupled rows."""
    return f + damp * jnp.eye(f.shape[-1], dtype=f.dtype)


def block_saliency(sums, w, alive, count, damp) -> jax.Array:
    """rho = w^2 / (2 [F'^-1]_qq) per alive entry, -inf elsewhere."""
    f, c = _scaled(sums, count, alive)
    up_inv = _upper_inverse(_cholesky(_plus_damp(f, damp), damp))
    inv_diag = jnp.sum(up_inv ** 2, axis=-1) / c[:, None]  # F'^-1 = U^-1 U^-T, row norms
    return jnp.where(alive, w ** 2 / (2.0 * inv_diag), -jnp.inf)


def block_update(sums, w, alive, pruned, count, damp) -> jax.Array:
    """Weights after the exact OBS update for the set `pruned` (within `alive`): kept
    entries corrected, pruned and dead entries exactly 0.0."""
    f, _ = _scaled(sums, count, alive)
    keep = alive & ~pruned
    k = keep.astype(jnp.float32)
    w_q = jnp.where(alive & pruned, w, 0.0)
    rhs = k * jnp.einsum("nij,nj->ni", f, w_q)  # F'_KQ w_Q (the damp is diagonal)
    up = _cholesky(_plus_damp(f * k[:, :, None] * k[:, None, :], damp), damp)
    dw = _solve_upper(up, _solve_upper_t(up, rhs))  # F'_KK^-1 F'_KQ w_Q on K, 0 elsewhere
    return jnp.where(keep, w + dw, 0.0)


# Batched [N, B, B] linear algebra in plain jnp, one fori_loop over B per call, on the
# upper factor U = L^T (row-wise access is contiguous). Not jnp.linalg.cholesky /
# triangular_solve: on CPU those are LAPACK calls that split their batch over the
# intra-op thread pool and block until it is done, so as many of them at once as the pool
# has threads (two leaves on a 2-core machine) deadlock. The loops run on every backend
# and inside shard_map, at B passes over the blocks each.
def _cholesky(a: jax.Array, floor) -> jax.Array:
    """Upper U with U^T U = a, row by row. Every pivot of a = S + floor * I (S PSD) is
    >= floor in exact arithmetic; clamping at it keeps rounding from making NaNs."""
    idx = jnp.arange(a.shape[-1])

    def row(j, up):  # rows >= j of `up` are still zero
        v = a[:, j, :] - jnp.einsum("nki,nk->ni", up, up[:, :, j])
        d = jnp.sqrt(jnp.maximum(v[:, j], floor))[:, None]
        return up.at[:, j, :].set(jnp.where(idx == j, d, jnp.where(idx > j, v / d, 0.0)))

    return jax.lax.fori_loop(0, a.shape[-1], row, jnp.zeros_like(a))


def _upper_inverse(up: jax.Array) -> jax.Array:
    """U^-1 by back substitution, from the last row up (rows <= i still zero at step i)."""
    size = up.shape[-1]
    eye = jnp.eye(size, dtype=up.dtype)

    def row(t, inv):
        i = size - 1 - t
        r = (eye[i] - jnp.einsum("nj,njk->nk", up[:, i, :], inv)) / up[:, i, i][:, None]
        return inv.at[:, i, :].set(r)

    return jax.lax.fori_loop(0, size, row, jnp.zeros_like(up))


def _solve_upper_t(up: jax.Array, b: jax.Array) -> jax.Array:
    """y with U^T y = b ([N, B]), from the first entry down."""
    def step(i, y):
        return y.at[:, i].set((b[:, i] - jnp.sum(up[:, :, i] * y, -1)) / up[:, i, i])
    return jax.lax.fori_loop(0, b.shape[-1], step, jnp.zeros_like(b))


def _solve_upper(up: jax.Array, y: jax.Array) -> jax.Array:
    """x with U x = y ([N, B]), from the last entry up."""
    size = y.shape[-1]

    def step(t, x):
        i = size - 1 - t
        return x.at[:, i].set((y[:, i] - jnp.sum(up[:, i, :] * x, -1)) / up[:, i, i])
    return jax.lax.fori_loop(0, size, step, jnp.zeros_like(y))
