"""Structured groups of the BertFamily encoder: attention heads and FFN neurons.

A group mask keeps or removes a whole unit:
  head h of layer l    the h-th block of head_dim COLUMNS of attention/{query,key,value}
                       (kernels are [in, out]) and the same block of ROWS of attention/output;
  neuron j of layer l  column j of ffn/intermediate and row j of ffn/output.
`expand` turns group masks ({"heads": bool [L, n_heads], "neurons": bool [L, I]}) into the
kernel masks the train step already applies, so a structured method is an ordinary mask
method (sparsity/methods/structured.py). Biases are not masked: a removed unit's q/k/v or
intermediate biases still feed its own (dead) activations, but its output rows are zero, so
it adds exactly nothing to the layer's output whatever they hold (tested); the compact
exports drop them with the unit.

Selection counts parameters (`select`): a head costs 4 * hidden * head_dim kernel entries,
a neuron 2 * hidden. Groups are ranked by a per-parameter score (the group's sum of
per-weight scores over its size: mean |w|^2 for magnitude, mean learned score for movement),
lowest first, and removed in that order while the removed kernel entries stay within
`num_pruned(target, total)` (exact_topk's counting rule) of the encoder's Linear kernels:
one ranking across every layer ("global") or each layer on its own budget ("uniform"). So
a target of 0.7 removes at most 70 % of the encoder's Linear weights, short of it by less
than one head. The pooler (and anything else prunable) stays dense.

Host side (numpy), for the exports: `kept_units` reads which heads and neurons a model still
has from its weights (a head whose attention-output rows are all zero, a neuron whose FFN
output row is zero, contributes nothing and can be removed exactly; so can a zero-padded
dim of every head), `compact_size` counts the compact model's encoder parameters.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np

from prune_ofa_jax.sparsity import exact_topk
from prune_ofa_jax.sparsity import masks as masks_lib

QKV = ("attention/query", "attention/key", "attention/value")
ATT_OUT = "attention/output"
FFN_IN = "ffn/intermediate"
FFN_OUT = "ffn/output"
PARTS = QKV + (ATT_OUT, FFN_IN, FFN_OUT)
_LAYER = re.compile(r"^(.*encoder/layer_(\d+))/attention/query/kernel$")
DISTRIBUTIONS = ("uniform", "global")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the groups are: the encoder layers' path prefixes (in layer order) and sizes."""
    layers: tuple
    num_heads: int
    head_dim: int
    hidden: int
    intermediate: int

    @property
    def head_cost(self) -> int:
        return 4 * self.hidden * self.head_dim

    @property
    def neuron_cost(self) -> int:
        return 2 * self.hidden

    @property
    def layer_total(self) -> int:
        return self.num_heads * self.head_cost + self.intermediate * self.neuron_cost

    @property
    def total(self) -> int:
        """Kernel entries of the encoder's Linear layers (what a target is a fraction of)."""
        return len(self.layers) * self.layer_total


def layout(tree, model_config) -> Layout:
    """The Layout of a params-structured tree (masks: only its non-None leaves count).
    ValueError naming config.sparsity.include when a layer's six kernels are not all there."""
    if model_config is None:
        raise ValueError("structured pruning needs the run's ModelConfig (the method's `model`, "
                         "which train/build.py sets)")
    flat = {p: v for p, v in masks_lib.named_leaves(tree)}
    found = sorted(((int(m.group(2)), m.group(1)) for p in flat
                    if (m := _LAYER.match(p))), key=lambda t: t[0])
    if not found:
        raise ValueError("config.sparsity.include: structured pruning needs the encoder's "
                         "attention and FFN kernels among the prunable leaves; none found")
    for _, prefix in found:
        missing = [part for part in PARTS if f"{prefix}/{part}/kernel" not in flat]
        if missing:
            raise ValueError(f"config.sparsity.include: structured pruning needs every kernel of "
                             f"{prefix} prunable; {missing} are not")
    cfg = model_config
    q = flat[f"{found[0][1]}/attention/query/kernel"]
    i = flat[f"{found[0][1]}/ffn/intermediate/kernel"]
    if tuple(q.shape) != (cfg.hidden_size, cfg.num_heads * cfg.head_dim):
        raise ValueError(f"structured pruning: query kernel {tuple(q.shape)} does not match "
                         f"the model config ({cfg.num_heads} heads of {cfg.head_dim})")
    return Layout(tuple(p for _, p in found), cfg.num_heads, cfg.head_dim, cfg.hidden_size,
                  int(i.shape[1]))


def _flat(tree) -> dict:
    return {p: v for p, v in masks_lib.named_leaves(tree)}


# --- group masks <-> weight masks ------------------------------------------------------------
def expand(lay: Layout, keep: dict, masks):
    """Kernel masks for `keep` ({"heads": [L, n], "neurons": [L, I]} bool) on `masks`' tree:
    the six kernels of every layer replaced, every other leaf as it was."""
    new = {}
    d = lay.head_dim
    for li, prefix in enumerate(lay.layers):
        cols = jnp.repeat(keep["heads"][li], d)               # [n*d] head columns
        neu = keep["neurons"][li]
        for part in QKV:
            new[f"{prefix}/{part}/kernel"] = jnp.broadcast_to(cols[None, :],
                                                              (lay.hidden, cols.size))
        new[f"{prefix}/{ATT_OUT}/kernel"] = jnp.broadcast_to(cols[:, None],
                                                             (cols.size, lay.hidden))
        new[f"{prefix}/{FFN_IN}/kernel"] = jnp.broadcast_to(neu[None, :],
                                                            (lay.hidden, neu.size))
        new[f"{prefix}/{FFN_OUT}/kernel"] = jnp.broadcast_to(neu[:, None],
                                                             (neu.size, lay.hidden))
    return jax.tree_util.tree_map_with_path(
        lambda k, m: m if m is None else new.get(masks_lib.path_str(k), m), masks,
        is_leaf=lambda x: x is None)


def group_sums(lay: Layout, values) -> dict:
    """Per group, the sum of a params-structured tree of per-weight values (e.g. w^2 or
    learned scores) over the group's kernel entries: {"heads": [L, n], "neurons": [L, I]}."""
    flat, n, d, h = _flat(values), lay.num_heads, lay.head_dim, lay.hidden
    heads, neurons = [], []
    for prefix in lay.layers:
        s = sum(jnp.sum(flat[f"{prefix}/{part}/kernel"].astype(jnp.float32).reshape(h, n, d),
                        axis=(0, 2)) for part in QKV)
        s = s + jnp.sum(flat[f"{prefix}/{ATT_OUT}/kernel"].astype(jnp.float32).reshape(n, d, h),
                        axis=(1, 2))
        heads.append(s)
        neurons.append(jnp.sum(flat[f"{prefix}/{FFN_IN}/kernel"].astype(jnp.float32), axis=0)
                       + jnp.sum(flat[f"{prefix}/{FFN_OUT}/kernel"].astype(jnp.float32), axis=1))
    return {"heads": jnp.stack(heads), "neurons": jnp.stack(neurons)}


def group_means(lay: Layout, values) -> dict:
    """group_sums over each group's size: a per-parameter score that compares heads with
    neurons."""
    s = group_sums(lay, values)
    return {"heads": s["heads"] / lay.head_cost, "neurons": s["neurons"] / lay.neuron_cost}


def keep_masks(lay: Layout, masks) -> dict:
    """The group masks a tree of kernel masks holds (a unit is kept when its attention-output
    / FFN-output rows are)."""
    flat, d = _flat(masks), lay.head_dim
    heads = [flat[f"{p}/{ATT_OUT}/kernel"][::d, 0] for p in lay.layers]
    neurons = [flat[f"{p}/{FFN_OUT}/kernel"][:, 0] for p in lay.layers]
    return {"heads": jnp.stack(heads), "neurons": jnp.stack(neurons)}


def kept_fraction(lay: Layout, keep: dict) -> jax.Array:
    """Fraction of the encoder's Linear kernel entries `keep` keeps."""
    kept = (jnp.sum(keep["heads"], dtype=jnp.int32) * lay.head_cost
            + jnp.sum(keep["neurons"], dtype=jnp.int32) * lay.neuron_cost)
    return kept / jnp.float32(lay.total)


# --- selection ---------------------------------------------------------------------------
def _prune_lowest(scores: jax.Array, costs: jax.Array, budget: jax.Array) -> jax.Array:
    """Keep mask: the lowest scores removed in order (ties: the earlier first) while their
    summed cost stays <= budget."""
    order = jnp.argsort(scores, stable=True)
    removed = jnp.cumsum(costs[order]) <= budget
    return jnp.ones(scores.shape, bool).at[order].set(~removed)


def select(lay: Layout, scores: dict, target, distribution: str = "global") -> dict:
    """Group keep masks at `target` (fraction of the encoder's Linear kernel entries to
    remove, traced or not) from per-parameter group scores (higher = keep)."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    target = jnp.clip(jnp.asarray(target, jnp.float32), 0.0, 1.0)
    n_l, n, i = len(lay.layers), lay.num_heads, lay.intermediate
    costs = jnp.concatenate([jnp.full((n,), lay.head_cost, jnp.int32),
                             jnp.full((i,), lay.neuron_cost, jnp.int32)])
    both = jnp.concatenate([scores["heads"], scores["neurons"]], axis=1)  # [L, n + I]
    if distribution == "global":
        budget = exact_topk.num_pruned(target, lay.total)
        keep = _prune_lowest(both.reshape(-1), jnp.tile(costs, n_l), budget).reshape(n_l, -1)
    else:
        budget = exact_topk.num_pruned(target, lay.layer_total)
        keep = jax.vmap(lambda s: _prune_lowest(s, costs, budget))(both)
    return {"heads": keep[:, :n], "neurons": keep[:, n:]}


def uniform_keep(lay: Layout, target: float) -> dict:
    """Host-side group masks that remove `target` of every layer's kernel entries, heads and
    neurons in the same proportion (the first units kept): a shape without a trained model
    (the bench's compact structured rows)."""
    heads = int(round(lay.num_heads * (1.0 - target)))
    neurons = int(round(lay.intermediate * (1.0 - target)))
    n_l = len(lay.layers)
    return {"heads": np.arange(lay.num_heads)[None].repeat(n_l, 0) < heads,
            "neurons": np.arange(lay.intermediate)[None].repeat(n_l, 0) < neurons}


# --- host side: what a model's weights still hold -------------------------------------------
def layer_prefixes(flat: dict) -> list:
    """The encoder layers' prefixes of a flat {path: array} dict, in layer order."""
    found = [(int(m.group(2)), m.group(1)) for p in flat if (m := _LAYER.match(p))]
    return [p for _, p in sorted(found)]


def _zero_cols(kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Per output column: the whole column and its bias are zero."""
    return ~np.any(kernel != 0, axis=0) & (bias == 0)


def kept_units(flat: dict, model_config) -> list:
    """Per encoder layer, (kept heads, kept neurons, kept dims within a head) as int64
    arrays. Exact to remove: a head whose attention-output rows are all zero and a neuron
    whose FFN-output row is zero (they add nothing to the layer's output), and a dim j of
    every kept head whose key column is zero (its score term is then the same for every key,
    which softmax ignores) or whose query column and bias are zero, and whose value column
    and bias or attention-output row are zero (nothing reaches the output): AutoTinyBERT's
    zero-padded heads (nas/extract.py), which a locked-pattern fine-tune keeps so (biases
    may train). The scores keep their 1/sqrt(head_dim) scaling."""
    d, out = model_config.head_dim, []
    for prefix in layer_prefixes(flat):
        w = {part: np.asarray(flat[f"{prefix}/{part}/kernel"]) for part in PARTS}
        b = {part: np.asarray(flat[f"{prefix}/{part}/bias"]) for part in QKV}
        o = w[ATT_OUT]
        n = o.shape[0] // d
        heads = np.flatnonzero(np.any(o.reshape(n, d, -1) != 0, axis=(1, 2)))
        neurons = np.flatnonzero(np.any(w[FFN_OUT] != 0, axis=1))
        key_const = ~np.any(w[QKV[1]] != 0, axis=0)  # k = its bias for every key
        qk = (_zero_cols(w[QKV[0]], b[QKV[0]]) | key_const).reshape(n, d)
        vo = (_zero_cols(w[QKV[2]], b[QKV[2]]) | ~np.any(o != 0, axis=1)).reshape(n, d)
        dims = np.flatnonzero(~np.all((qk & vo)[heads], axis=0))
        if not len(dims) or not len(heads):  # nothing any head does: no head, no dim
            heads, dims = heads[:0], dims[:0]
        out.append((heads.astype(np.int64), neurons.astype(np.int64), dims.astype(np.int64)))
    return out


def head_columns(heads: np.ndarray, head_dim: int, dims=None) -> np.ndarray:
    """Column (or row) indices of the given heads' blocks (only `dims` of each block)."""
    dims = np.arange(head_dim) if dims is None else np.asarray(dims)
    return (heads[:, None] * head_dim + dims[None]).reshape(-1).astype(np.int64)


def compact_size(flat: dict, model_config) -> dict:
    """Encoder parameters (kernels and biases of the six Linears) of the dense model and of
    its compact form (kept_units), and the per-layer shapes (heads, dims per head, FFN)."""
    h = model_config.hidden_size
    dense = compact = 0
    shapes = []
    per = lambda a, i: 3 * (h * a + a) + (a * h + h) + (h * i + i) + (i * h + h)  # noqa: E731
    for prefix, (heads, neurons, dims) in zip(layer_prefixes(flat),
                                              kept_units(flat, model_config)):
        width = flat[f"{prefix}/{FFN_IN}/kernel"].shape[1]
        dense += per(flat[f"{prefix}/attention/query/kernel"].shape[1], width)
        compact += per(len(heads) * len(dims), len(neurons))
        shapes.append({"heads": int(len(heads)), "head_dims": int(len(dims)),
                       "ffn": int(len(neurons))})
    return {"dense": int(dense), "compact": int(compact), "layers": shapes}
