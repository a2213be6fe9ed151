"""Structured pruning: whole attention heads and whole FFN neurons (sparsity/groups.py), so the
exported model is simply smaller (runtime/onnx_export.py removes them) and every runtime gets
faster. `sparsity.target` is the fraction of the encoder's Linear kernel entries removed
(heads and neurons cost what they hold; groups.select), on the cubic schedule like GMP;
`sparsity.distribution` global (one ranking across layers, as the study runs it) or uniform
(each layer loses the same fraction). The pooler stays dense; N:M and block patterns do not
apply (the group is the unit).

- structured_magnitude: group magnitude, ranked by the group's mean squared weight (its
  squared L2 norm over its size), recomputed from the latent weights on the schedule's
  update steps; pruned weights hard-zeroed (regrow keeps them latent, as for GMP).
- structured_movement: group movement (hard), one learned score per weight trained by the
  straight-through estimator exactly as movement_hard; a group's score is the mean of its
  weights' scores (their sum is the first-order estimate of what removing the group costs);
  the lowest groups are removed on the update steps. Weights fine-tune (dense latent).
- structured_movement_soft: masks = sigmoid(group score) > tau(t), with tau and the L1
  penalty lambda(t) * (parameter-weighted mean of sigmoid(group score)) ramped along the
  cubic schedule as for movement_soft; the sparsity reached is the penalty's outcome.
The movement methods share `config.sparsity.movement.*` with the unstructured ones. KD
(distill.*) and int8 QAT (quant.enabled) combine as with any method.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from prune_ofa_jax.sparsity import groups
from prune_ofa_jax.sparsity.methods import base, scored

# The default structured level: the bench's compact structured rows and the structured
# study's middle level remove this fraction of the encoder's Linear weights.
DEFAULT_TARGET = 0.7


class _Structured(base.Method):
    """What the three share: the layout (from the run's model config), the check."""

    @classmethod
    def check(cls, config) -> None:
        super().check(config)
        base.require(0.0 <= config.sparsity.target < 1.0, "sparsity.target",
                     f"{cls.name!r} removes a fraction of the encoder's Linear weights in "
                     "[0, 1)")

    def layout(self, tree) -> groups.Layout:
        return groups.layout(tree, self.model)

    def init_state(self, masks):
        self.layout(masks)  # the layer check, while build() traces shapes: before any step
        return {}

    def _select(self, masks, scores, step):
        lay = self.layout(masks)
        keep = groups.select(lay, groups.group_means(lay, scores), self.schedule(step),
                             self.distribution)
        return groups.expand(lay, keep, masks)


@base.register("structured_magnitude")
@dataclasses.dataclass(frozen=True)
class StructuredMagnitude(_Structured):
    """Group magnitude (no state, no config block)."""

    def masks(self, params, aux, masks, step):
        del aux
        if self.schedule is None:
            return masks
        squares = base.map_scored(lambda m, p: jnp.square(p.astype(jnp.float32)), masks,
                                  params)
        return jax.lax.cond(self.schedule.is_update_step(step),
                            lambda: self._select(masks, squares, step), lambda: masks)


@dataclasses.dataclass(frozen=True)
class _Movement(scored.MovementScores, _Structured):
    """Movement's learned scores (scored.py), averaged over each head's or neuron's weights."""


@base.register("structured_movement")
@dataclasses.dataclass(frozen=True)
class StructuredMovement(_Movement):
    """Config: sparsity.movement.{lr, init} (shared with movement_hard)."""

    def masks(self, params, aux, masks, step):
        del params
        return jax.lax.cond(self.schedule.is_update_step(step),
                            lambda: self._select(masks, base.scores_of(aux), step),
                            lambda: masks)


@base.register("structured_movement_soft")
@dataclasses.dataclass(frozen=True)
class StructuredMovementSoft(scored.SoftMovementScores, _Movement):
    """Config: sparsity.movement.{lr, init, threshold, l1} (scored.py; shared with
    movement_soft)."""

    def _group_sigmoid(self, lay, aux):
        means = groups.group_means(lay, base.scores_of(aux))
        return {k: jax.nn.sigmoid(v) for k, v in means.items()}

    def masks(self, params, aux, masks, step):
        del params
        lay = self.layout(masks)
        tau = self.threshold * self.ramp(step)
        keep = {k: v > tau for k, v in self._group_sigmoid(lay, aux).items()}
        return groups.expand(lay, keep, masks)

    def penalty(self, aux, masks, step):
        lay = self.layout(masks)
        sig = self._group_sigmoid(lay, aux)
        kept = (jnp.sum(sig["heads"]) * lay.head_cost
                + jnp.sum(sig["neurons"]) * lay.neuron_cost) / lay.total
        return self.l1 * self.ramp(step) * kept, {"mask_l1": kept}
