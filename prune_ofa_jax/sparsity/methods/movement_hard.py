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

from prune_ofa_jax.sparsity.methods import base, scored


@base.register("movement_hard")
@dataclasses.dataclass(frozen=True)
class MovementHard(scored.MovementScores):
    """Config: sparsity.movement.{lr, init} (scored.py; the block soft movement shares)."""

    structured_patterns = True

    def masks(self, params, aux, masks, step):
        del params
        scores = base.scores_of(aux)
        return jax.lax.cond(
            self.schedule.is_update_step(step),
            lambda: base.topk_masks(scores, self.schedule(step), self.distribution,
                                    self.pattern),
            lambda: masks)
