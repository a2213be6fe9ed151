"""Supermask / masking as an alternative to fine-tuning (Zhao et al. 2020): the pre-trained
weights stay frozen, one real score per prunable weight, mask = 1[score > threshold]
(threshold 0.01) trained by the straight-through estimator, no regulariser. Scores start
uniform around the threshold so that a fraction `target` starts pruned (Zhao et al.'s
"initial sparsity"); the sparsity then drifts with training and is read from the report.
Only the task head trains besides the scores (frozen_weights by default)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from prune_ofa_jax.sparsity.methods import base


@base.register("supermask")
@dataclasses.dataclass(frozen=True)
class Supermask(base.Method):
    """Config: sparsity.target and sparsity.supermask.{lr, threshold, init_scale}."""
    target: float = 0.5        # sparsity.target: initial fraction at or below the threshold
    lr: float = 1e-3           # scores' Adam LR (x the run's LR schedule shape)
    threshold: float = 0.01    # mask = 1[score > threshold]
    init_scale: float = 0.02   # scores ~ threshold + init_scale * (U[0, 1) - target)

    learns_scores = True
    frozen_default = True
    sparsity_keys = ("target",)

    @classmethod
    def check(cls, config) -> None:
        super().check(config)
        base.check_score_learning(cls, config)
        base.require(config.sparsity.supermask.init_scale >= 0,
                     "sparsity.supermask.init_scale", "must be >= 0")

    @property
    def keeps_latent(self) -> bool:
        return True

    def init_scores(self, params, masks, rng):
        del params
        # Its own stream: AdaPrune draws its theta from `rng` itself, and a uniform and a
        # normal drawn from the same bits are monotone in each other, so at one run seed the
        # two methods' initial masks would coincide.
        keys = base.leaf_keys(jax.random.fold_in(rng, 1), masks)
        return base.map_scored(
            lambda m, k: self.threshold + self.init_scale * (
                jax.random.uniform(k, m.shape, jnp.float32) - self.target), masks, keys)

    def score_tx(self, lr_shape):
        return optax.adam(lambda step: self.lr * lr_shape(step))

    def masks(self, params, aux, masks, step):
        del params, masks, step
        return base.map_scored(lambda s: s > self.threshold, base.scores_of(aux))

    def forward_params(self, params, aux, masks):
        values = base.map_scored(lambda s, m: base.ste(m, s), base.scores_of(aux), masks)
        return base.masked_by_values(params, values)
