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

from prune_ofa_jax.sparsity.methods import base, scored


@base.register("movement_soft")
@dataclasses.dataclass(frozen=True)
class MovementSoft(scored.SoftMovementScores):
    """Config: sparsity.movement.{lr, init, threshold, l1} (scored.py; the block hard
    movement shares)."""

    def masks(self, params, aux, masks, step):
        del params, masks
        tau = self.threshold * self.ramp(step)
        return base.map_scored(lambda s: jax.nn.sigmoid(s) > tau, base.scores_of(aux))

    def penalty(self, aux, masks, step):
        del masks
        means = [jnp.mean(jax.nn.sigmoid(s)) for s in jax.tree.leaves(base.scores_of(aux))]
        l1 = sum(means) / len(means)
        return self.l1 * self.ramp(step) * l1, {"mask_l1": l1}
