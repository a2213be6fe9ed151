"""A random mask: the baseline every learned mask must beat. On the schedule's update steps the
masks keep the highest of fixed, seeded uniform scores, with the exact counts of the other
top-k methods (per tensor, or one selection over all tensors with `distribution=global`; N:M
and 1xK blocks too), so a random row covers and counts exactly as magnitude or movement
does. The scores ignore the weights and the data; one draw per run (`sparsity.random_mask.seed`)
means a pruned weight stays pruned as the sparsity rises.

Frozen weights by default (the pre-trained network never changes, the task head trains): the
random counterpart of frozen magnitude and of Adapting by Pruning's learned masks. With
`--config.sparsity.frozen_weights=False` it is random pruning of weights that fine-tune.
"""

from __future__ import annotations

import dataclasses

import jax

from prune_ofa_jax.sparsity.methods import base


@base.register("random_mask")
@dataclasses.dataclass(frozen=True)
class RandomMask(base.Method):
    """Config: sparsity.random_mask.seed (the draw), and the cubic schedule's keys (one shot at
    step 0: initial = target, end_step 1, update_every 1)."""
    seed: int = 0

    frozen_default = True
    structured_patterns = True

    @classmethod
    def check(cls, config) -> None:
        super().check(config)
        base.require(0.0 <= config.sparsity.target < 1.0, "sparsity.target",
                     "'random_mask' needs a target in [0, 1)")
        base.require(cls.settings(config.sparsity)["seed"] >= 0, "sparsity.random_mask.seed",
                     "must be >= 0")

    def scores(self, masks):
        """One uniform score per covered weight (None elsewhere), the same for every step."""
        keys = base.leaf_keys(jax.random.key(self.seed), masks)
        return base.map_scored(lambda m, k: jax.random.uniform(k, m.shape), masks, keys)

    def masks(self, params, aux, masks, step):
        del params, aux
        if self.schedule is None:
            return masks
        return jax.lax.cond(
            self.schedule.is_update_step(step),
            lambda: base.topk_masks(self.scores(masks), self.schedule(step), self.distribution,
                                    self.pattern),
            lambda: masks)
