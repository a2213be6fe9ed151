"""The mask-method interface: one small object of pure functions per pruning method.

The train step (train/steps.py) calls these hooks and nothing else about pruning:

  masks   = method.masks(params, aux, old_masks, step)   # this step's hard bool masks
  params, masks, mstate = method.prune(params, masks, mstate, step)  # weights too (OBS)
  loss(p, a): forward(method.forward_params(p, a, masks)) + method.penalty(a, masks, step)
  mstate  = method.observe(mstate, grads, masks, step)   # the step's gradient, unmasked
  grads   = method.weight_grads(grads, masks)             # before the optimizer
  params  = method.weights_after_update(old, new, masks)  # after it

A method's own trainable state (e.g. one score per prunable weight) is the aux part
`AUX_KEY` (train/aux.py): `init_scores` gives its initial value (params-structured, None
on leaves that are never pruned), `score_tx` its optimizer; the step differentiates it
together with the params and checkpoints it. In the spirit of jaxpruner's `BaseUpdater`
(scores -> masks under a schedule), but the scores are differentiable state here, so
movement pruning and learned masks over frozen weights fit the same step.

A method's own state that is NOT trained (OBS's running Fisher) is `state.method_state`:
`init_state(masks)` builds it (inside jit, with `state_shardings` for it), `observe` updates
it from every step's gradient and `prune` may change params, masks and state on the
method's update steps (under lax.cond). The base class has none ({}), and its `prune` and
`observe` return what they get, so the other methods' steps are what they were, bit for bit.
`mesh` is the run's mesh (train/build.py sets it), for state sharded over it; `model` the
run's ModelConfig (set there too), for methods whose units are heads and neurons.

This base class is the plain case: masks stay as they are (a dense run, or fine-tuning with
a locked pattern); magnitude.py adds the GMP schedule, the others learn scores.
`frozen_weights`: the pre-trained network (`FROZEN`, everything under backbone/) never
changes, bit for bit; the task heads still train (feature extraction, adaprune, supermask).

Every method registers itself under its config name (`@register("movement_hard")`, also
from a user's own code) and declares its config: its dataclass fields beyond the common
ones are the keys of its block `config.sparsity.<block>` (defaults = the field defaults;
config_base builds the blocks from the registry), `sparsity_keys` names fields read from
`config.sparsity` itself (e.g. target), and `check(config)` its own config errors.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from prune_ofa_jax import errors, registry
from prune_ofa_jax.sparsity import exact_topk
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.sparsity import patterns

AUX_KEY = "mask_scores"        # the state.aux entry holding a method's scores
FROZEN = r"^backbone/"         # what frozen_weights keeps fixed: the pre-trained network
DISTRIBUTIONS = ("uniform", "global")
DEPRECATED = DISTRIBUTIONS     # the old sparsity.method values: magnitude with a distribution
RESERVED = ("fixed",) + DEPRECATED


@dataclasses.dataclass(frozen=True)
class Method:
    """schedule: sparsity(step) and its update steps (None: masks never change);
    distribution: "uniform" (per tensor) | "global" (one selection over all tensors), for
    the top-k methods; pattern: unstructured, N:M or 1xK blocks (sparsity.patterns);
    frozen_weights: the backbone never trains; regrow: the magnitude method keeps dense
    latent weights (else hard zero: pruned weights are zeroed after every update)."""
    schedule: Any = None
    distribution: str = "uniform"
    pattern: Any = patterns.Unstructured()
    frozen_weights: bool = False
    regrow: bool = False
    mesh: Any = dataclasses.field(default=None, compare=False)  # set by train/build.py
    model: Any = dataclasses.field(default=None, compare=False)  # the ModelConfig, ditto

    name = "fixed"          # set by `register` to the config name
    learns_scores = False   # class constants: whether init_scores/score_tx are used
    frozen_default = False  # frozen_weights when the config leaves it unset
    # Structured patterns the method's mask selection supports; threshold methods: none.
    structured_patterns = False
    block = None            # its config block config.sparsity.<block>; None: its name
    sparsity_keys = ()      # own fields read from config.sparsity itself (e.g. "target")

    # --- config ------------------------------------------------------------------------
    @classmethod
    def config_fields(cls) -> tuple:
        """The method's own dataclass fields (beyond the common ones above)."""
        return tuple(f for f in dataclasses.fields(cls) if f.name not in _COMMON)

    @classmethod
    def block_name(cls) -> str:
        return cls.block or cls.name

    @classmethod
    def defaults(cls) -> dict:
        """Its block's keys and defaults: the fields not in `sparsity_keys`."""
        return {f.name: f.default for f in cls.config_fields()
                if f.name not in cls.sparsity_keys}

    @classmethod
    def settings(cls, sp) -> dict:
        """Its own field values from `config.sparsity` (the block's defaults where a config
        built before the method was registered lacks its block)."""
        block = cls.block_name()
        values = dict(sp[block]) if block in sp else {}
        out = {}
        for f in cls.config_fields():
            if f.name in cls.sparsity_keys:
                out[f.name] = sp[f.name]
            else:
                out[f.name] = values.get(f.name, f.default)
        return out

    @classmethod
    def from_sparsity(cls, sp, **common) -> "Method":
        """The method for `config.sparsity`; `common`: schedule, distribution, pattern,
        frozen_weights, regrow (methods.from_config)."""
        return cls(**common, **cls.settings(sp))

    @classmethod
    def check(cls, config) -> None:
        """errors.ConfigError (naming the key) when `config` does not suit this method; runs
        in validate, before anything compiles. The base: the pattern is one it can select."""
        sp = config.sparsity
        if sp.enabled and not cls.structured_patterns:
            structured = tuple(n for n, m in REGISTRY.items() if m.structured_patterns)
            require(patterns.parse(sp.pattern) == patterns.Unstructured(), "sparsity.pattern",
                    f"{cls.name!r} thresholds its scores per weight; N:M and blocks need one "
                    f"of {structured}")

    # --- state -------------------------------------------------------------------------
    def init_scores(self, params, masks, rng) -> Optional[Any]:
        """The scores' initial value (params-structured, None where masks are None)."""
        del params, masks, rng
        return None

    def score_tx(self, lr_shape: Callable) -> optax.GradientTransformation:
        """The scores' optimizer; lr_shape(step) is the run's LR schedule over its peak."""
        del lr_shape
        return optax.identity()

    # --- non-trainable state (state.method_state) ------------------------------------
    def init_state(self, masks) -> Any:
        """The method's own state (e.g. a Fisher) for a run with these masks (arrays or
        shapes); built inside jit, so zeros land directly in their shardings. {}: none."""
        del masks
        return {}

    def state_shardings(self, state) -> Any:
        """NamedShardings for an (abstract) `init_state` value; the base: replicated."""
        return jax.tree.map(lambda _: NamedSharding(self.mesh, P()), state)

    def describe_state(self, masks) -> str:
        """One line for the run's log about the state's memory ("": nothing to say)."""
        del masks
        return ""

    def prune(self, params, masks, state, step):
        """(params, masks, state) this step trains with, after `masks`: a method that
        changes the weights themselves when it prunes (OBS's update of the kept weights)
        does it here, on its update steps only; the base returns its arguments."""
        del step
        return params, masks, state

    def observe(self, state, grads, masks, step):
        """The state after this step's gradient (params-structured, the mean over the
        micro-batches, before any masking); the base keeps none."""
        del grads, masks, step
        return state

    # --- masks and the forward ---------------------------------------------------------
    def masks(self, params, aux, masks, step):
        """The hard bool masks this step uses (and the state keeps); outside the gradient."""
        del params, aux, step
        return masks

    def forward_params(self, params, aux, masks):
        """What the student's forward sees; differentiable in params and aux."""
        del aux
        return masks_lib.apply_masks(params, masks)

    def penalty(self, aux, masks, step):
        """(scalar added to the loss, metrics): a method's regulariser on its scores."""
        del aux, masks, step
        return jnp.zeros((), jnp.float32), {}

    # --- weights ---------------------------------------------------------------------------
    @property
    def keeps_latent(self) -> bool:
        """Pruned weights keep their values (masks only in the forward) instead of being
        zeroed after each update. Learned masks need it: a pruned weight can come back."""
        return self.regrow

    def weight_grads(self, grads, masks):
        """Weight gradients the optimizer sees: pruned entries and frozen leaves zeroed (so
        clipping and the logged norm count only what trains)."""
        grads = masks_lib.apply_masks(grads, masks)
        return _where_frozen(self.frozen_weights, grads, lambda g: jnp.zeros_like(g))

    def weights_after_update(self, old, new, masks):
        """Params after the optimizer: hard zero unless latent weights are kept; frozen
        leaves are the old arrays themselves (bit-identical, decay never touches them)."""
        if not self.keeps_latent:
            new = masks_lib.apply_masks(new, masks)
        if not self.frozen_weights:
            return new
        return jax.tree_util.tree_map_with_path(
            lambda path, o, n: o if _is_frozen(path) else n, old, new)


_COMMON = frozenset(f.name for f in dataclasses.fields(Method))


def require(cond: bool, key: str, msg: str) -> None:
    """errors.ConfigError `config.<key>: <msg>` unless `cond`."""
    if not cond:
        raise errors.ConfigError(f"config.{key}: {msg}")


def check_score_learning(cls, config) -> None:
    """What a score-learning method needs besides the base check: a target in (0, 1) and,
    when its block has an `lr`, a positive score learning rate."""
    require(0.0 < config.sparsity.target < 1.0, "sparsity.target",
            f"{cls.name!r} needs a target in (0, 1)")
    lr = cls.settings(config.sparsity).get("lr")
    require(lr is None or lr > 0, f"sparsity.{cls.block_name()}.lr", "must be > 0")


# --- the registry -----------------------------------------------------------------------
def _on_register(name: str, cls) -> None:
    """A method is a frozen dataclass subclass of Method whose config fields have defaults
    that agree with every other method sharing its block."""
    if not (isinstance(cls, type) and issubclass(cls, Method)
            and dataclasses.is_dataclass(cls)):
        raise TypeError(f"pruning method {name!r}: register a @dataclasses.dataclass("
                        f"frozen=True) subclass of sparsity.methods.base.Method, got {cls!r}")
    if name in RESERVED:
        raise ValueError(f"pruning method name {name!r} is reserved: {RESERVED}")
    for f in cls.config_fields():
        if f.default is dataclasses.MISSING:
            raise TypeError(f"pruning method {name!r}: field {f.name!r} needs a default (it is "
                            f"the default of config.sparsity.{cls.block or name}.{f.name})")
    block = cls.block or name
    own = {f.name: f.default for f in cls.config_fields() if f.name not in cls.sparsity_keys}
    for other_name, other in REGISTRY.items():
        if other_name == name or other.block_name() != block:
            continue
        for key, value in other.defaults().items():
            if key in own and own[key] != value:
                raise ValueError(
                    f"pruning method {name!r}: config.sparsity.{block}.{key} defaults to "
                    f"{own[key]!r}, but {other_name!r} (same block) says {value!r}")


REGISTRY = registry.Registry(
    "pruning method", "sparsity.method", on_register=_on_register,
    hint="add one with @prune_ofa_jax.sparsity.methods.register(name)")


def register(name: str):
    """Class decorator: registers a Method subclass as `config.sparsity.method=<name>` (sets
    its `name`), with its `check` and its config block (see the module docstring)."""
    def add(cls):
        REGISTRY.register(name, check=cls.check)(cls)
        cls.name = name
        return cls
    return add


def config_blocks() -> dict:
    """{block: {key: default}} over the registered methods (blocks shared by several
    methods merged): the method blocks of config.sparsity."""
    blocks: dict = {}
    for _, cls in REGISTRY.items():
        blocks.setdefault(cls.block_name(), {}).update(cls.defaults())
    return {k: v for k, v in blocks.items() if v}


def _is_frozen(path) -> bool:
    return re.search(FROZEN, masks_lib.path_str(path)) is not None


def _where_frozen(frozen: bool, tree, fn):
    if not frozen:
        return tree
    return jax.tree_util.tree_map_with_path(lambda p, x: fn(x) if _is_frozen(p) else x, tree)


# --- helpers the score-learning methods share -------------------------------------------
def scores_of(aux) -> Any:
    return aux[AUX_KEY]


def ste(keep: jax.Array, score: jax.Array) -> jax.Array:
    """Straight-through estimator: forward exactly the 0/1 mask `keep`, backward the
    identity, so dL/dscore = dL/dmask = dL/dW' * W for W' = W * mask (Bengio et al. 2013;
    movement pruning). `score - stop_gradient(score)` is exactly 0, so no rounding leaks
    into the forward."""
    return keep.astype(score.dtype) + (score - jax.lax.stop_gradient(score))


def masked_by_values(params, values):
    """params * values on the leaves where `values` (params-structured, None elsewhere)
    has an array; the mask values may carry gradients (STE, surrogate)."""
    return jax.tree.map(lambda p, v: p if v is None else p * v.astype(p.dtype), params,
                        values, is_leaf=lambda x: x is None)


def map_scored(fn, *trees):
    """fn over the leaves of params-structured trees whose first tree is not None there."""
    return jax.tree.map(lambda x, *rest: None if x is None else fn(x, *rest), *trees,
                        is_leaf=lambda x: x is None)


def topk_masks(scores, sparsity, distribution: str, pattern) -> Any:
    """Bool masks keeping the highest (signed) scores, with exact counts: per tensor
    (uniform) or one selection over all tensors (global); 1xK blocks are scored by the sum
    of their scores; N:M keeps the n highest of every m (a sparsity <= 0 keeps all)."""
    leaves, treedef = jax.tree.flatten(scores, is_leaf=lambda x: x is None)
    slots = [i for i, s in enumerate(leaves) if s is not None]
    chosen = [leaves[i] for i in slots]
    sparsity = jnp.asarray(sparsity, jnp.float32)
    if isinstance(pattern, patterns.NM):
        new = [jnp.where(sparsity > 0, _nm_keep(s, pattern), True) for s in chosen]
    else:
        units = [_block_sums(s, pattern) for s in chosen]
        keep = exact_topk.keep_masks(units, sparsity, per_tensor=distribution == "uniform",
                                     signed=True)
        new = [pattern.expand(k, s.shape) for k, s in zip(keep, chosen)]
    out = list(leaves)
    for i, m in zip(slots, new):
        out[i] = m
    return jax.tree.unflatten(treedef, out)


def _block_sums(s: jax.Array, pattern) -> jax.Array:
    if isinstance(pattern, patterns.Block):
        d_in, d_out = s.shape
        return jnp.sum(s.reshape(d_in // pattern.size, pattern.size, d_out), axis=1)
    return s


def _nm_keep(s: jax.Array, pattern) -> jax.Array:
    """The n highest scores of every m consecutive input entries per output column."""
    n, m = pattern.n, pattern.m
    if n in (0, m):
        return jnp.full(s.shape, n == m)
    d_in, d_out = s.shape
    groups = jnp.swapaxes(s.reshape(d_in // m, m, d_out), 1, 2)  # [G, out, m]
    _, idx = jax.lax.top_k(groups, n)
    onehot = jax.nn.one_hot(idx, m, dtype=jnp.int32).sum(axis=-2) > 0
    return jnp.swapaxes(onehot, 1, 2).reshape(d_in, d_out)


def pruned_count(masks) -> jax.Array:
    """Exact int32 count of pruned entries over every mask leaf."""
    leaves = [m for m in jax.tree.leaves(masks) if m is not None]
    return sum(m.size - jnp.sum(m, dtype=jnp.int32) for m in leaves)


def mask_size(masks) -> int:
    return sum(int(m.size) for m in jax.tree.leaves(masks) if m is not None)


def leaf_keys(rng, tree):
    """One independent key per leaf of `tree` (fold_in by leaf index)."""
    leaves, treedef = jax.tree.flatten(tree, is_leaf=lambda x: x is None)
    return jax.tree.unflatten(treedef, [jax.random.fold_in(rng, i) for i in range(len(leaves))])
