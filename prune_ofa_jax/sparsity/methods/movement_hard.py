"""Hard movement pruning (Sanh, Wolf & Rush 2020): one score S per prunable weight, trained by
the straight-through estimator (dL/dS = dL/dW' * W for W' = W * TopK(S)); the masks keep the
highest scores, per tensor (or globally, or in N:M / 1xK units), at the cubic schedule's
sparsity, recomputed on its update steps. Weights fine-tune as well (dense latent weights:
a pruned weight keeps its value and comes back if its score rises again). Scores start at a
constant (all tied: nothing is pruned before the schedule's first nonzero sparsity) and are
trained by Adam at `lr` times the run's LR schedule shape (Sanh et al.: 1e-2 vs 3e-5).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from prune_ofa_jax.sparsity.methods import base


@base.register("movement_hard")
@dataclasses.dataclass(frozen=True)
class MovementHard(base.Method):
    """Config: sparsity.movement.{lr, init} (the block soft movement shares)."""
    lr: float = 1e-2           # scores' Adam LR (x the run's LR schedule shape)
    init: float = 0.0          # constant initial score

    learns_scores = True
    structured_patterns = True
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

    def masks(self, params, aux, masks, step):
        del params
        scores = base.scores_of(aux)
        return jax.lax.cond(
            self.schedule.is_update_step(step),
            lambda: base.topk_masks(scores, self.schedule(step), self.distribution,
                                    self.pattern),
            lambda: masks)

    def forward_params(self, params, aux, masks):
        values = base.map_scored(lambda s, m: base.ste(m, s), base.scores_of(aux), masks)
        return base.masked_by_values(params, values)
