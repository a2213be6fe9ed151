"""Movement pruning's learned scores (Sanh, Wolf & Rush 2020), shared by every method that
trains them (hard and soft movement, unstructured and structured): one score per covered
weight, starting at a constant `init`, trained by Adam at `lr` times the run's LR schedule
shape, reaching the forward through the straight-through estimator (dL/dS = dL/dW' * W for
W' = W * mask). The weights keep dense latent values: a pruned weight comes back if its
score rises again. Config block `sparsity.movement`; how masks follow from the scores is
each method's own."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from prune_ofa_jax.sparsity.methods import base


@dataclasses.dataclass(frozen=True)
class MovementScores(base.Method):
    lr: float = 1e-2           # scores' Adam LR (x the run's LR schedule shape)
    init: float = 0.0          # constant initial score

    learns_scores = True
    block = "movement"

    @classmethod
    def check(cls, config) -> None:
        super().check(config)
        base.check_score_learning(cls, config)

    @property
    def keeps_latent(self) -> bool:
        return True

    def init_scores(self, params, masks, rng):
        del params, rng
        return base.map_scored(lambda m: jnp.full(m.shape, self.init, jnp.float32), masks)

    def score_tx(self, lr_shape):
        return optax.adam(lambda step: self.lr * lr_shape(step))

    def forward_params(self, params, aux, masks):
        values = base.map_scored(lambda s, m: base.ste(m, s), base.scores_of(aux), masks)
        return base.masked_by_values(params, values)


@dataclasses.dataclass(frozen=True)
class SoftMovementScores(MovementScores):
    """Soft movement's schedule (Sanh et al.): masks are sigmoid(S) > tau(t) and an L1
    penalty lambda(t) pushes the scores down; tau ramps 0 -> `threshold` and lambda
    0 -> `l1` along the cubic schedule's shape, so the run starts dense."""
    threshold: float = 0.1     # final tau on sigmoid(S) (their scripts: 0.1)
    l1: float = 400.0          # final lambda on mean sigmoid(S) (their scripts: 400 for ~90 %)

    @classmethod
    def check(cls, config) -> None:
        super().check(config)
        base.require(0.0 < config.sparsity.movement.threshold < 1.0,
                     "sparsity.movement.threshold",
                     "a threshold on sigmoid(score) must be in (0, 1)")

    def ramp(self, step) -> jax.Array:
        """0 -> 1 along the cubic schedule (1 throughout for a zero target)."""
        if self.schedule.target <= 0:
            return jnp.ones((), jnp.float32)
        return self.schedule(step) / jnp.float32(self.schedule.target)
