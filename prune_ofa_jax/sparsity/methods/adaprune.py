"""Adapting by Pruning (Gao, Colombo & Wang 2021, arXiv 2105.03343): the pre-trained weights
w0 stay frozen and only masks are learned (plus the task head).

One real score theta per prunable weight. Forward mask m = sigmoid(t_l * theta), t_l = 1e5
(numerically 1[theta > 0] but for |theta| < ~2e-4); backward a surrogate slope:
dL/dtheta = dL/dm * t_s * sigmoid(t_s theta) (1 - sigmoid(t_s theta)), t_s = 1 (`binarise`).
Update theta <- theta - alpha * dL/dtheta - gamma: plain SGD plus a constant push toward
pruning, written as the gradient of a zero-valued regulariser (gamma / alpha) * sum(theta -
stop_gradient(theta)), so the loss it reports is the task loss. theta0 ~ N(init_mean,
init_std^2), all positive in practice: training starts dense.

No schedule: training of theta stops when the fraction of pruned scores (theta <= 0) over
all covered weights reaches `target`. At that step the masks become exactly the target's
count (the lowest theta pruned: a step may push several thetas past 0 at once, and an
overshoot would make runs incomparable) and stay fixed; theta gets no gradient and no push
from then on, the head keeps training. Until then a pruned weight comes back whenever its
theta rises above 0. The stop is read from the masks themselves (pruned count >= the
target's), so it is part of the checkpointed state and resumes exactly.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax

from prune_ofa_jax.sparsity import exact_topk, patterns
from prune_ofa_jax.sparsity.methods import base


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def binarise(theta: jax.Array, t_l: float, t_s: float) -> jax.Array:
    """sigmoid(t_l * theta) forward; the surrogate t_s * sigmoid'(t_s * theta) backward."""
    return jax.nn.sigmoid(t_l * theta)


def _binarise_fwd(theta, t_l, t_s):
    return binarise(theta, t_l, t_s), theta


def _binarise_bwd(t_l, t_s, theta, g):
    del t_l
    s = jax.nn.sigmoid(t_s * theta)
    return (g * t_s * s * (1.0 - s),)


binarise.defvjp(_binarise_fwd, _binarise_bwd)


@base.register("adaprune")
@dataclasses.dataclass(frozen=True)
class AdaPrune(base.Method):
    """Config: sparsity.target and sparsity.adaprune.{lr, gamma, t_l, t_s, init_mean,
    init_std}."""
    target: float = 0.5        # sparsity.target: the fraction pruned when theta stops
    lr: float = 2e-5           # alpha: plain SGD on theta
    gamma: float = 2e-7        # constant push toward pruning per step
    t_l: float = 1e5           # forward mask sigmoid(t_l * theta)
    t_s: float = 1.0           # surrogate slope of the backward
    init_mean: float = 0.01    # theta0 ~ N(init_mean, init_std^2): starts dense
    init_std: float = 0.001

    learns_scores = True
    frozen_default = True
    sparsity_keys = ("target",)

    @classmethod
    def check(cls, config) -> None:
        super().check(config)
        base.check_score_learning(cls, config)
        a = config.sparsity.adaprune
        base.require(a.t_l > 0 and a.t_s > 0, "sparsity.adaprune.t_l",
                     "temperatures t_l and t_s must be > 0")
        base.require(a.init_std >= 0, "sparsity.adaprune.init_std", "must be >= 0")

    @property
    def keeps_latent(self) -> bool:
        return True

    def init_scores(self, params, masks, rng):
        del params
        keys = base.leaf_keys(rng, masks)
        return base.map_scored(
            lambda m, k: self.init_mean + self.init_std * jax.random.normal(k, m.shape,
                                                                            jnp.float32),
            masks, keys)

    def score_tx(self, lr_shape):
        del lr_shape  # a constant alpha, as the paper
        return optax.sgd(self.lr)

    def stopped(self, masks) -> jax.Array:
        """The target is reached: masks hold (at least) the target's pruned count."""
        k = exact_topk.num_pruned(self.target, base.mask_size(masks))
        return base.pruned_count(masks) >= k

    def masks(self, params, aux, masks, step):
        del params, step
        theta = base.scores_of(aux)

        def running():
            positive = base.map_scored(lambda t: t > 0, theta)
            reached = base.pruned_count(positive) >= exact_topk.num_pruned(
                self.target, base.mask_size(masks))
            return jax.lax.cond(
                reached,
                lambda: base.topk_masks(theta, self.target, "global", patterns.Unstructured()),
                lambda: positive)
        return jax.lax.cond(self.stopped(masks), lambda: masks, running)

    def forward_params(self, params, aux, masks):
        stopped = self.stopped(masks)
        values = base.map_scored(
            lambda t, m: jnp.where(stopped, m.astype(t.dtype), binarise(t, self.t_l, self.t_s)),
            base.scores_of(aux), masks)
        return base.masked_by_values(params, values)

    def penalty(self, aux, masks, step):
        del step
        running = 1.0 - self.stopped(masks).astype(jnp.float32)
        zero = sum(jnp.sum(t - jax.lax.stop_gradient(t))
                   for t in jax.tree.leaves(base.scores_of(aux)))
        return (self.gamma / self.lr) * running * zero, {}
