"""Mask pytrees: which weights are prunable, magnitude masks, applying them.

A mask tree has the params' structure: a bool array (True = keep) for every prunable leaf,
None for leaves that are never pruned. Trees are mapped params-first,
`jax.tree.map(lambda p, m: p if m is None else ..., params, masks)`, so the None leaves
are visited. None leaves pass through `jax.jit` (arguments, outputs, in/out_shardings:
use None there too, see `mask_like`) and survive an Orbax StandardCheckpointer
save/restore, with or without an abstract target (tested).

Prunable leaves are picked by regexes on the "/"-joined param path (`path_str`). The
default, `PRUNABLE_KERNELS`, is the Prune OFA set: the encoder's Linear kernels (q, k, v,
attention output, FFN in/out) and the pooler kernel; never embeddings, LayerNorm, biases
or the MLM/NSP/task heads. It is one regex (the union of the contract's two) so that a
tree without a pooler (DistilBERT, QA) does not trip the "regex matches nothing" check.

Regrowth semantics (choose in the config; the train step implements them):
- hard-zero (project default, as jaxpruner): the forward uses `params` directly; grads go
  through `apply_masks` before the optimizer and params through `apply_masks` after every
  update, so pruned weights are exactly zero in params and optimizer updates never revive
  them. Because magnitude ranks those zeros lowest, a later, higher-sparsity
  `magnitude_masks` keeps them pruned: masks are monotone (up to ties among exact zeros).
- regrow (Intel Prune OFA reference): params stay dense latent weights; only the forward
  sees `masked_forward_params(params, masks)`. Pruned latent weights get zero gradient and
  change only through weight decay; a later mask update scores the latent weights, so a
  pruned weight can come back before the freeze step.
`magnitude_masks` reads only the magnitudes in `params` (latent in regrow mode); the old
masks only say which leaves are prunable.

Counting rule for every pattern: n units at target s keep `n - exact_topk.num_pruned(s, n)`
(= n - floor(s*n) for round decimals; `exact_topk.host_kept_count` mirrors it on the host).
"""

import re
from typing import Any, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from prune_ofa_jax.sparsity import exact_topk
from prune_ofa_jax.sparsity import patterns as patterns_lib

ENCODER_KERNELS = (
    r"(^|/)encoder/layer_\d+/(attention/(query|key|value|output)|ffn/(intermediate|output))"
    r"/kernel$")
POOLER_KERNEL = r"(^|/)pooler/dense/kernel$"
PRUNABLE_KERNELS = (
    r"(^|/)(encoder/layer_\d+/(attention/(query|key|value|output)|ffn/(intermediate|output))"
    r"|pooler/dense)/kernel$")
EMBEDDINGS = r"(^|/)embeddings/(word|position|token_type)_embeddings/embedding$"
DEFAULT_INCLUDE = (PRUNABLE_KERNELS,)
DEFAULT_EXCLUDE = ()
ENCODER_ALL = r"(^|/)encoder/"

PyTree = Any


def path_str(key_path) -> str:
    """'/'-joined names of a jax key path (dict keys, attribute names, sequence indices)."""
    parts = []
    for key in key_path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def named_leaves(tree: PyTree) -> list[tuple[str, Any]]:
    """[(path, leaf)] in `jax.tree.leaves` order."""
    return [(path_str(k), v) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]]


def prunable_paths(params: PyTree, include: Sequence[str] = DEFAULT_INCLUDE,
                   exclude: Sequence[str] = DEFAULT_EXCLUDE) -> list[str]:
    """Paths matched by some include regex and no exclude regex (re.search).

    ValueError naming the regex when an include or exclude regex matches no path at all,
    or when nothing prunable is left.
    """
    include, exclude = _as_tuple(include), _as_tuple(exclude)
    paths = [p for p, _ in named_leaves(params)]
    for rx in include + exclude:
        if not any(re.search(rx, p) for p in paths):
            raise ValueError(f"sparsity regex {rx!r} matches no param path "
                             f"(e.g. {paths[:3]} of {len(paths)})")
    chosen = [p for p in paths if any(re.search(rx, p) for rx in include)
              and not any(re.search(rx, p) for rx in exclude)]
    if not chosen:
        raise ValueError(f"no prunable param left: include={include} exclude={exclude}")
    return chosen


def _as_tuple(regexes: Union[str, Sequence[str]]) -> tuple[str, ...]:
    return (regexes,) if isinstance(regexes, str) else tuple(regexes)


def init_masks(params: PyTree, include: Sequence[str] = DEFAULT_INCLUDE,
               exclude: Sequence[str] = DEFAULT_EXCLUDE) -> PyTree:
    """All-True bool masks for prunable leaves, None elsewhere (works under eval_shape)."""
    chosen = set(prunable_paths(params, include, exclude))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    for key, leaf in leaves:
        if path_str(key) in chosen and not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(f"prunable leaf {path_str(key)} is not floating ({leaf.dtype})")
    return treedef.unflatten([
        jnp.ones(leaf.shape, bool) if path_str(key) in chosen else None
        for key, leaf in leaves])


def mask_like(tree: PyTree, masks: PyTree) -> PyTree:
    """`tree` (params-structured: shardings, shapes...) with None where masks are None."""
    return jax.tree.map(lambda x, m: None if m is None else x, tree, masks)


def apply_masks(tree: PyTree, masks: PyTree) -> PyTree:
    """Zero the masked entries of params or grads (same structure); dtype kept.

    `where`, not a multiply, so inf/nan at pruned positions also become exact zeros.
    """
    return jax.tree.map(lambda x, m: x if m is None else jnp.where(m, x, jnp.zeros_like(x)),
                        tree, masks)


def masked_forward_params(params: PyTree, masks: PyTree) -> PyTree:
    """What the forward sees in regrow mode (same math as `apply_masks`).

    Call it inside the loss on dense latent params: pruned latent weights then get zero
    gradient (they move only by weight decay) and may regrow at a later mask update.
    """
    return apply_masks(params, masks)


def masks_from_nonzero(params: PyTree, masks: PyTree) -> PyTree:
    """Pattern lock: keep exactly the nonzero entries of each prunable leaf."""
    return jax.tree.map(lambda p, m: None if m is None else p != 0, params, masks)


def _prunable(params: PyTree, masks: PyTree):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    mask_leaves = treedef.flatten_up_to(masks)
    slots = [i for i, m in enumerate(mask_leaves) if m is not None]
    return leaves, treedef, slots


def magnitude_masks(params: PyTree, masks: PyTree, sparsity,
                    method: str = "uniform",
                    pattern: Union[str, patterns_lib.Pattern] = "unstructured") -> PyTree:
    """New masks from the magnitudes of `params` for every non-None leaf of `masks`.

    sparsity: float or traced float32 scalar in [0, 1] (a traced value is clipped). method: "uniform" (every tensor
    at `sparsity`, Prune OFA) or "global" (one threshold over all prunable units of all
    tensors). Exact counts (see module docstring); ties keep the latest entries in
    tree-leaf then row-major order. pattern: see `patterns` (N:M ignores the value of a
    positive sparsity and is uniform only; blocks count whole blocks).
    """
    if method not in ("uniform", "global"):
        raise ValueError(f"method must be 'uniform' or 'global', got {method!r}")
    if isinstance(sparsity, (int, float)) and not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    pattern = patterns_lib.parse(pattern)
    leaves, treedef, slots = _prunable(params, masks)
    if not slots:
        raise ValueError("masks have no prunable (non-None) leaf")
    for i in slots:
        pattern.validate(path_str(leaves[i][0]), tuple(leaves[i][1].shape))
    weights = [leaves[i][1] for i in slots]
    sparsity = jnp.asarray(sparsity, jnp.float32)
    if isinstance(pattern, patterns_lib.NM):
        if method != "uniform":
            raise ValueError("N:M keeps n of every m entries per group; use method='uniform'")
        new = [jnp.where(sparsity > 0, pattern.mask(w), True) for w in weights]
    else:
        scores = [pattern.scores(w) for w in weights]
        keep = exact_topk.keep_masks(scores, sparsity, per_tensor=method == "uniform")
        new = [pattern.expand(k, w.shape) for k, w in zip(keep, weights)]
    out: list[Optional[jax.Array]] = [None] * len(leaves)
    for i, m in zip(slots, new):
        out[i] = m
    return treedef.unflatten(out)


def sparsity_stats(params: PyTree, masks: PyTree) -> dict[str, jax.Array]:
    """Fractions of exactly-zero entries in the effective weights `apply_masks(params, masks)`.

    Keys: "<path>" for every prunable leaf (its own sparsity); "global" = zeros / entries
    over all prunable leaves; "encoder_all" = zeros / entries over EVERY leaf whose path
    contains "encoder/" (kernels, biases, LayerNorm scale/bias; NaN if there is none).
    float32 jnp scalars, usable inside jit; counts are exact int32.
    """
    effective = apply_masks(params, masks)
    leaves, _, slots = _prunable(effective, masks)
    zeros = [jnp.sum(leaf == 0, dtype=jnp.int32) for _, leaf in leaves]
    out = {}
    for i in slots:
        out[path_str(leaves[i][0])] = zeros[i] / jnp.float32(leaves[i][1].size)
    out["global"] = _ratio([zeros[i] for i in slots], [leaves[i][1].size for i in slots])
    enc = [i for i, (k, _) in enumerate(leaves) if re.search(ENCODER_ALL, path_str(k))]
    out["encoder_all"] = _ratio([zeros[i] for i in enc], [leaves[i][1].size for i in enc])
    return out


def _ratio(counts: list[jax.Array], sizes: list[int]) -> jax.Array:
    if not sizes:
        return jnp.float32(jnp.nan)
    return sum(counts) / jnp.float32(sum(sizes))


def sparsity_report(params: PyTree, masks: PyTree) -> dict[str, Optional[float]]:
    """Host-side `sparsity_stats` as python floats (one jitted computation); a fraction over
    no tensor at all (a dense model has no prunable leaf) is None, which JSON writes as null."""
    stats = jax.device_get(jax.jit(sparsity_stats)(params, masks))
    return {k: float(v) if np.isfinite(v) else None for k, v in stats.items()}
