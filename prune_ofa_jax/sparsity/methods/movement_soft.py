"""Soft movement pruning (Sanh, Wolf & Rush 2020): masks = sigmoid(S) > tau(t), with the
straight-through estimator for S and an L1 penalty lambda(t) * mean sigmoid(S) (the mean
over each tensor, averaged over tensors, as their reference). tau ramps from 0 to
`threshold` and lambda from 0 to `l1` along the cubic schedule's shape (s(t) / target), so
the run starts dense. The sparsity reached is the penalty's outcome, NOT `sparsity.target`
(which only shapes the ramp): tune `l1` to land near a target, and read the reached
sparsity from the run's report. Weights fine-tune too (dense latent weights)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from prune_ofa_jax.sparsity.methods import base


@base.register("movement_soft")
@dataclasses.dataclass(frozen=True)
class MovementSoft(base.Method):
    """Config: sparsity.movement.{lr, init, threshold, l1} (the block hard movement shares)."""
    lr: float = 1e-2           # scores' Adam LR (x the run's LR schedule shape)
    init: float = 0.0          # constant initial score
    threshold: float = 0.1     # final tau on sigmoid(S) (their scripts: 0.1)
    l1: float = 400.0          # final lambda on mean sigmoid(S) (their scripts: 400 for ~90 %)

    learns_scores = True
    block = "movement"

    @classmethod
    def check(cls, config) -> None:
        super().check(config)
        base.check_score_learning(cls, config)
        base.require(0.0 < config.sparsity.movement.threshold < 1.0,
                     "sparsity.movement.threshold",
                     "a threshold on sigmoid(score) must be in (0, 1)")

    @property
    def keeps_latent(self) -> bool:
        return True

    def ramp(self, step) -> jax.Array:
        """0 -> 1 along the cubic schedule (1 throughout for a zero target)."""
        if self.schedule.target <= 0:
            return jnp.ones((), jnp.float32)
        return self.schedule(step) / jnp.float32(self.schedule.target)

    def init_scores(self, params, masks, rng):
        del params, rng
        return base.map_scored(lambda m: jnp.full(m.shape, self.init, jnp.float32), masks)

    def score_tx(self, lr_shape):
        return optax.adam(lambda step: self.lr * lr_shape(step))

    def masks(self, params, aux, masks, step):
        del params, masks
        tau = self.threshold * self.ramp(step)
        return base.map_scored(lambda s: jax.nn.sigmoid(s) > tau, base.scores_of(aux))

    def forward_params(self, params, aux, masks):
        values = base.map_scored(lambda s, m: base.ste(m, s), base.scores_of(aux), masks)
        return base.masked_by_values(params, values)

    def penalty(self, aux, masks, step):
        del masks
        means = [jnp.mean(jax.nn.sigmoid(s)) for s in jax.tree.leaves(base.scores_of(aux))]
        l1 = sum(means) / len(means)
        return self.l1 * self.ramp(step) * l1, {"mask_l1": l1}
