"""Gradual magnitude pruning (Zhu & Gupta 2017; the Prune OFA default): on the schedule's
update steps the masks are recomputed from |W| of the latent weights (per tensor or global,
any pattern); in between they stay. Pruned weights are zeroed after every update (hard zero)
unless `regrow` keeps dense latent weights (the Intel reference). Identical, bit for bit,
to the step before the method interface (tests/test_mask_method_runs.py).

With `frozen_weights` it is the magnitude baseline of Adapting by Pruning: masks from the
magnitudes of the frozen pre-trained weights, only the task head trains.
"""

from __future__ import annotations

import dataclasses

import jax

from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.sparsity.methods import base


@base.register("magnitude")
@dataclasses.dataclass(frozen=True)
class Magnitude(base.Method):
    """Scores = |W| (no state of its own, no config block); masks change only on the
    schedule's update steps."""
    structured_patterns = True

    def masks(self, params, aux, masks, step):
        del aux
        if self.schedule is None:
            return masks
        return jax.lax.cond(
            self.schedule.is_update_step(step),
            lambda: masks_lib.magnitude_masks(params, masks, self.schedule(step),
                                              method=self.distribution, pattern=self.pattern),
            lambda: masks)
