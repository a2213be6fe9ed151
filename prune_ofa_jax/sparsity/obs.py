"""Second-order pruning (OBS / oBERT, Kurtic et al. 2022): block Fisher, saliency, update.

Pure, jit-friendly functions; the pruning `Method`, the train state and the one-shot
command build on them. The Fisher of each prunable kernel is block diagonal over
consecutive blocks of `block_size` weights.

Block layout: a kernel [..., out] is read as [out, in] (in = the product of the leading
dims) and flattened row-major, so a block holds consecutive *inputs of one output neuron*,
the paper's choice and the layout of the reference's PyTorch [out, in] weights (results
stay comparable). Within one neuron the gradients are g_i = x_i * delta_j, so a block's
Fisher is E[delta_j^2 x x^T], the input covariance that also drives OBC/SparseGPT. As in
the reference the whole kernel is flattened once, so a block may straddle two neurons when
`in % block_size != 0`; only the kernel's tail block is padded, and the block count is
padded up to a multiple of the number of shards (so the blocks axis shards evenly). Padded
entries are never alive: never scored, selected, updated or counted.

Fisher: `Fisher.sums` holds sum_i g_i g_i^T per block (float32 [num_blocks, B, B], one
array per prunable leaf, None elsewhere) and `Fisher.count` the number of gradients; the
empirical Fisher is sums / count.

Damp, and the OBS saliency and update per block: sparsity/obs_block.py.

Use (a one-shot prune, or a Method on the schedule's update steps; `recompute_schedule`
splits one jump into k prunes with a fresh Fisher before each):
  fisher = init(masks, block_size, mesh)                      # zeros, built sharded
  fisher = accumulate(fisher, grads, mesh=mesh)               # once per mini-batch grad
  params, masks = prune(params, fisher, masks, sparsity, damp, "global", mesh=mesh)

Sharding: with `mesh`, the blocks axis of every per-block array is split over all mesh
axes and the per-block linear algebra runs under `shard_map`, so no device holds (or
factorises) a whole Fisher; only kernel <-> blocks reshapes and the exact-count selection
(`exact_topk`, GMP's counting rule) are global.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from prune_ofa_jax.sparsity import exact_topk
from prune_ofa_jax.sparsity.obs_block import MIN_DAMP, block_saliency, block_update

PyTree = Any
DISTRIBUTIONS = ("uniform", "global")


class Fisher(NamedTuple):
    """sums: params-structured, float32 [num_blocks, B, B] (sum of g g^T per block) per
    prunable leaf, None elsewhere; count: int32 scalar, gradients accumulated."""
    sums: PyTree
    count: jax.Array


# --- block layout ----------------------------------------------------------------------
def num_blocks(shape: Sequence[int], block_size: int, num_shards: int = 1) -> int:
    """Blocks of a kernel: ceil(size / B), rounded up to a multiple of num_shards."""
    blocks = -(-math.prod(shape) // block_size)
    return -(-blocks // num_shards) * num_shards


def to_blocks(kernel: jax.Array, blocks: int, block_size: int) -> jax.Array:
    """[..., out] kernel -> [blocks, B]: the [out, in] view row-major, zero (False) padded."""
    flat = kernel.reshape(-1, kernel.shape[-1]).T.reshape(-1)
    return jnp.pad(flat, (0, blocks * block_size - flat.size)).reshape(blocks, block_size)


def from_blocks(blocks: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Inverse of `to_blocks` (padding dropped)."""
    size, out = math.prod(shape), shape[-1]
    return blocks.reshape(-1)[:size].reshape(out, size // out).T.reshape(shape)


def valid(shape: Sequence[int], blocks: int, block_size: int) -> np.ndarray:
    """Host bool [blocks, B]: True on real kernel entries, False on padding."""
    return np.arange(blocks * block_size).reshape(blocks, block_size) < math.prod(shape)


def _layout(fisher_leaf) -> tuple[int, int]:
    return fisher_leaf.shape[0], fisher_leaf.shape[-1]


# --- sharding ----------------------------------------------------------------------------
def num_shards(mesh: Optional[jax.sharding.Mesh]) -> int:
    return 1 if mesh is None else mesh.size


def block_spec(mesh: jax.sharding.Mesh, ndim: int) -> P:
    """Blocks axis (dim 0) over every mesh axis, the rest replicated."""
    return P(tuple(mesh.axis_names), *(None,) * (ndim - 1))


def fisher_shardings(fisher: Fisher, mesh: jax.sharding.Mesh) -> Fisher:
    """NamedShardings for a (possibly abstract) Fisher: blocks split, count replicated."""
    sums = jax.tree.map(lambda x: NamedSharding(mesh, block_spec(mesh, x.ndim)), fisher.sums)
    return Fisher(sums, NamedSharding(mesh, P()))


def _constrain(x: jax.Array, mesh) -> jax.Array:
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, block_spec(mesh, x.ndim)))


# The per-block factorisations make B passes over their [N, B, B] arrays, so on CPU they are
# memory bound: in chunks whose arrays stay in cache (lax.map over ~1 MB of blocks) a prune
# runs 2.5-4x faster than in whole-array passes (MiniLM shapes, B = 32 and 50), bit for bit
# the same (the blocks are independent).
CHUNK_BYTES = 1 << 20


def _in_chunks(fn):
    """fn(*blocked, *scalars) over consecutive chunks of blocks (`_blockwise`'s fn)."""
    def run(*blocked_and_scalars, n_blocked: int):
        blocked, scalars = blocked_and_scalars[:n_blocked], blocked_and_scalars[n_blocked:]
        n, size = blocked[0].shape[0], blocked[0].shape[-1]
        chunk = max(1, CHUNK_BYTES // (4 * size * size))
        m = n - n % chunk
        if m == 0:
            return fn(*blocked, *scalars)
        head = jax.lax.map(lambda xs: fn(*xs, *scalars), tuple(
            x[:m].reshape((m // chunk, chunk) + x.shape[1:]) for x in blocked))
        head = jax.tree.map(lambda y: y.reshape((m,) + y.shape[2:]), head)
        if m == n:
            return head
        tail = fn(*(x[m:] for x in blocked), *scalars)
        return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), head, tail)
    return run


def _blockwise(fn, mesh, blocked: Sequence[jax.Array], scalars: Sequence[jax.Array] = (),
               chunked: bool = False):
    """fn(*blocked, *scalars) per block; under `mesh`, each device on its own blocks only;
    `chunked`: in cache-sized chunks of blocks (the factorisations)."""
    if chunked:
        fn = functools.partial(_in_chunks(fn), n_blocked=len(blocked))
    if mesh is None:
        return fn(*blocked, *scalars)
    for x in blocked:
        if x.shape[0] % mesh.size:
            raise ValueError(f"{x.shape[0]} blocks do not split over {mesh.size} devices: "
                             "build the Fisher with init(..., mesh=mesh)")
    specs = tuple(block_spec(mesh, x.ndim) for x in blocked) + (P(),) * len(scalars)
    out = jax.eval_shape(fn, *blocked, *scalars)
    out_specs = jax.tree.map(lambda s: block_spec(mesh, s.ndim), out)
    return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=out_specs)(
        *[_constrain(x, mesh) for x in blocked], *scalars)


# --- Fisher ------------------------------------------------------------------------------
def _shape_leaves(masks_or_shapes: PyTree) -> tuple[list, Any]:
    is_shape = lambda x: x is None or (  # noqa: E731
        isinstance(x, tuple) and all(isinstance(d, int) for d in x))
    leaves, treedef = jax.tree.flatten(masks_or_shapes, is_leaf=is_shape)
    return [None if x is None else tuple(getattr(x, "shape", x)) for x in leaves], treedef


def init(masks: PyTree, block_size: int, mesh: Optional[jax.sharding.Mesh] = None) -> Fisher:
    """Zero Fisher for the non-None leaves of `masks` (arrays or shapes); with `mesh`, built
    directly sharded (blocks padded to a multiple of the mesh size)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    shapes, treedef = _shape_leaves(masks)
    shards = num_shards(mesh)

    def build():
        sums = [None if s is None else
                jnp.zeros((num_blocks(s, block_size, shards), block_size, block_size),
                          jnp.float32) for s in shapes]
        return Fisher(treedef.unflatten(sums), jnp.zeros((), jnp.int32))

    if mesh is None:
        return build()
    return jax.jit(build, out_shardings=fisher_shardings(jax.eval_shape(build), mesh))()


def fisher_bytes(masks_or_shapes: PyTree, block_size: int, num_shards: int = 1) -> dict:
    """{"total", "per_device", "blocks"}: bytes of `Fisher.sums` as `init` builds it (count
    excluded) and per device when its blocks are split `num_shards` ways."""
    shapes, _ = _shape_leaves(masks_or_shapes)
    blocks = sum(num_blocks(s, block_size, num_shards) for s in shapes if s is not None)
    total = blocks * block_size * block_size * 4
    return {"total": total, "per_device": total // num_shards, "blocks": blocks}


def accumulate(fisher: Fisher, grads: PyTree, *, stacked: bool = False,
               mesh: Optional[jax.sharding.Mesh] = None) -> Fisher:
    """Fisher plus g g^T per block for one params-structured gradient, or for k of them
    stacked on a leading axis of every leaf (`stacked=True`). Gradients of already pruned
    weights need no masking: every prune restricts F to the alive weights."""
    def add(s, g):
        if s is None:
            return None
        blocks, size = _layout(s)
        as_blocks = lambda x: to_blocks(x.astype(jnp.float32), blocks, size)  # noqa: E731
        g = jax.vmap(as_blocks)(g) if stacked else as_blocks(g)[None]
        g = _constrain(jnp.swapaxes(g, 0, 1), mesh)  # [blocks, k, B]
        return _blockwise(lambda s_, g_: s_ + jnp.einsum("nki,nkj->nij", g_, g_), mesh,
                          (s, g))

    k = jax.tree.leaves(grads)[0].shape[0] if stacked else 1
    sums = jax.tree.map(add, fisher.sums, grads, is_leaf=lambda x: x is None)
    return Fisher(sums, fisher.count + k)


# --- tree-level API ----------------------------------------------------------------------
def _scalars(fisher: Fisher, damp) -> tuple[jax.Array, jax.Array]:
    return jnp.asarray(fisher.count, jnp.int32), jnp.asarray(damp, jnp.float32)


def _check_damp(damp) -> None:
    if isinstance(damp, (int, float)) and not damp >= MIN_DAMP:
        raise ValueError(f"damp must be >= {MIN_DAMP} (relative to each block's mean Fisher "
                         f"diagonal, not the paper's absolute lambda), got {damp}")


def _blocks_of(x, mask, s):
    blocks, size = _layout(s)
    alive = to_blocks(mask, blocks, size)  # padding reads False
    return to_blocks(x.astype(jnp.float32), blocks, size), alive


def saliency(params: PyTree, fisher: Fisher, masks: PyTree, damp, *,
             mesh: Optional[jax.sharding.Mesh] = None) -> PyTree:
    """OBS saliency, params-structured float32 (kernel-shaped), -inf on pruned weights
    (mask False), None where masks are None."""
    _check_damp(damp)
    scalars = _scalars(fisher, damp)

    def one(p, m, s):
        if m is None:
            return None
        w, alive = _blocks_of(p, m, s)
        return from_blocks(_blockwise(block_saliency, mesh, (s, w, alive), scalars, True),
                           p.shape)

    return jax.tree.map(one, params, masks, fisher.sums, is_leaf=lambda x: x is None)


def select(scores: PyTree, masks: PyTree, sparsity, distribution: str = "uniform") -> PyTree:
    """New masks keeping the highest scores with GMP's exact counts (`exact_topk`): per
    tensor ("uniform") or over all tensors ("global"). Monotone: a pruned weight (mask
    False, score -inf) stays pruned; a target below the current sparsity changes nothing."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    leaves, treedef = jax.tree.flatten(masks, is_leaf=lambda x: x is None)
    score_leaves = treedef.flatten_up_to(scores)
    slots = [i for i, m in enumerate(leaves) if m is not None]
    if not slots:
        raise ValueError("masks have no prunable (non-None) leaf")
    keep = exact_topk.keep_masks(
        [jnp.where(leaves[i], score_leaves[i], -jnp.inf) for i in slots],
        jnp.asarray(sparsity, jnp.float32), per_tensor=distribution == "uniform",
        signed=True)
    out = list(leaves)
    for i, k in zip(slots, keep):
        out[i] = k & leaves[i]
    return treedef.unflatten(out)


def update(params: PyTree, fisher: Fisher, masks: PyTree, new_masks: PyTree, damp, *,
           mesh: Optional[jax.sharding.Mesh] = None) -> PyTree:
    """Params after the exact group OBS update for the weights pruned now (masks True,
    new_masks False): kept weights corrected, every pruned weight exactly 0, dtype kept."""
    _check_damp(damp)
    scalars = _scalars(fisher, damp)

    def one(p, m, n, s):
        if m is None:
            return p
        w, alive = _blocks_of(p, m, s)
        pruned = to_blocks(m & ~n, *_layout(s))
        out = from_blocks(_blockwise(block_update, mesh, (s, w, alive, pruned), scalars, True),
                          p.shape)
        return jnp.where(n, out, 0.0).astype(p.dtype)

    return jax.tree.map(one, params, masks, new_masks, fisher.sums,
                        is_leaf=lambda x: x is None)


def prune(params: PyTree, fisher: Fisher, masks: PyTree, sparsity, damp,
          distribution: str = "uniform", *,
          mesh: Optional[jax.sharding.Mesh] = None) -> tuple[PyTree, PyTree]:
    """One OBS prune to `sparsity`: (updated params, new masks) = select by saliency, then
    the exact group update of each block for the weights pruned now. Under jax.jit,
    `distribution` and `mesh` are static (functools.partial or static_argnames)."""
    scores = saliency(params, fisher, masks, damp, mesh=mesh)
    new_masks = select(scores, masks, sparsity, distribution)
    return update(params, fisher, masks, new_masks, damp, mesh=mesh), new_masks


# --- recomputation -----------------------------------------------------------------------
def recompute_sparsity(start, target, i, steps: int):
    """Sparsity of step i (1..steps) when a jump start -> target is split into `steps`
    prunes with the Fisher re-estimated before each: linear, as the reference's one-shot
    recomputation; step `steps` is exactly `target`. Python or traced values."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if isinstance(i, int):
        return target if i >= steps else start + (target - start) * i / steps
    frac = jnp.asarray(i, jnp.float32) / steps
    return jnp.where(frac >= 1.0, target, start + (target - start) * frac)


def recompute_schedule(start: float, target: float, steps: int) -> list[float]:
    """[recompute_sparsity(start, target, i, steps) for i = 1..steps] (host floats)."""
    return [float(recompute_sparsity(start, target, i, steps)) for i in range(1, steps + 1)]
