"""Second-order pruning, the Optimal BERT Surgeon (oBERT, Kurtic et al. 2022), as a pruning
method: `--config.sparsity.method=obs` (keys in `config.sparsity.obs`). The maths (block
Fisher, saliency, the OBS update) is sparsity/obs.py; this file says when it runs.

Gradual, as in the reference (neuralmagic/sparseml's OBSPruningModifier): on the schedule's
update steps (GMP's cubic schedule, freeze and all) the masks go to the schedule's sparsity
by the OBS saliency w_q^2 / (2 [F^-1]_qq), per tensor or globally (`distribution`), and the
kept weights of each block are corrected for the ones removed (pruned weights exactly 0).
The empirical Fisher is block diagonal over `block_size` consecutive weights of one output
neuron, from the gradients of the `num_grads` training steps before each prune (a window:
collected only there, reset by each prune), dampened by `damp` (relative to each block's
mean diagonal: obs_block.py). One gradient per step: the step's own, the mean over its
grad_accum micro-batches (a larger mini-batch; the Fisher's scale cancels in both the
saliency order and the update). The reference draws its num_grads mini-batches afresh at
the prune instead; here they are the training batches of the window, at weights that move
a little between them (the learning rate is small).

`recompute = k`: each update step's jump is made in k prunes, `num_grads` steps apart, the
last on the update step, each to the next of k equal steps from the sparsity reached so far
to the schedule's target there, with a Fisher collected afresh before each (the reference's
one-shot "recomputation"; with a zero learning rate it is exactly that). The window before
an update step is then k * num_grads steps; a window longer than the gap to the previous
prune starts at that prune (its reset), so it holds fewer gradients.

An update step before any gradient was collected (e.g. the schedule's begin_step 0) prunes
by |w| (OBS with a zero Fisher is magnitude pruning, with no update); one whose target is
not above the sparsity reached changes nothing (no work is done), but still resets the
Fisher. Masks are monotone: a pruned weight never returns (no dense latent weights:
`regrow` does not apply; OBS zeroes what it prunes and corrects the rest). KD, QAT (after
masking) and the locked pattern of a later fine-tune work as with GMP.

State: `state.method_state` is the obs.Fisher (float32 [blocks, B, B] per prunable kernel
and the gradient count), its blocks split over every device of the mesh (no device holds
the whole Fisher); its size is logged when the run starts (`describe_state`). A checkpoint
holds it, so a run resumes exactly even in the middle of a window; it restores onto a mesh
with the same number of devices (the blocks are padded to a multiple of it).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from prune_ofa_jax.sparsity import obs
from prune_ofa_jax.sparsity.methods import base


@base.register("obs")
@dataclasses.dataclass(frozen=True)
class OBS(base.Method):
    """Block size B (the reference's 50), gradients per Fisher, relative damp, prunes per
    update step; selection exact (GMP's counting rule), unstructured only."""
    block_size: int = 50
    num_grads: int = 64
    damp: float = 0.01
    recompute: int = 1

    @classmethod
    def check(cls, config) -> None:
        super().check(config)
        s = cls.settings(config.sparsity)
        block = f"sparsity.{cls.block_name()}"
        base.require(s["block_size"] >= 1, f"{block}.block_size", "must be >= 1")
        base.require(s["num_grads"] >= 1, f"{block}.num_grads", "must be >= 1")
        base.require(s["recompute"] >= 1, f"{block}.recompute", "must be >= 1")
        base.require(s["damp"] >= obs.MIN_DAMP, f"{block}.damp",
                     f"must be >= {obs.MIN_DAMP} (relative to each block's mean Fisher "
                     "diagonal, not the reference's absolute lambda; 0.01 is a sound start)")
        base.require(not config.sparsity.frozen_weights, "sparsity.frozen_weights",
                     "OBS corrects the kept weights when it prunes: it cannot keep them frozen")

    # --- state ---------------------------------------------------------------------------
    def init_state(self, masks) -> obs.Fisher:
        return obs.init(masks, self.block_size, self.mesh)

    def state_shardings(self, state) -> obs.Fisher:
        if self.mesh is None:
            return super().state_shardings(state)
        return obs.fisher_shardings(state, self.mesh)

    def describe_state(self, masks) -> str:
        shards = obs.num_shards(self.mesh)
        b = obs.fisher_bytes(masks, self.block_size, shards)
        return (f"OBS Fisher: {b['blocks']:,} blocks of {self.block_size}x{self.block_size}, "
                f"{b['total'] / 2**30:.2f} GiB in all, {b['per_device'] / 2**30:.3f} GiB per "
                f"device ({shards} device{'s' * (shards > 1)}); {self.num_grads} gradients "
                f"per prune, {self.recompute} prune(s) per update step, damp {self.damp:g}")

    @property
    def keeps_latent(self) -> bool:
        return False  # the update zeroes what it prunes; masks never regrow

    # --- when ----------------------------------------------------------------------------
    @property
    def window(self) -> int:
        """Steps whose gradients feed the prunes of one update step."""
        return self.recompute * self.num_grads

    def in_window(self, step) -> jax.Array:
        """An update step lies within the next `window` steps (bool scalar)."""
        ahead = jnp.asarray(step, jnp.int32) + jnp.arange(1, self.window + 1, dtype=jnp.int32)
        return jnp.any(self.schedule.is_update_step(ahead))

    def prune_point(self, step, current) -> tuple[jax.Array, jax.Array]:
        """(prune here?, sparsity to prune to): j * num_grads steps before an update step
        (j < recompute; the nearest one counts), the next of j + 1 equal steps from
        `current` to the schedule's sparsity there."""
        step = jnp.asarray(step, jnp.int32)
        hit, target = jnp.zeros((), bool), jnp.zeros((), jnp.float32)
        for j in reversed(range(self.recompute)):  # the nearest update step wins
            ahead = step + j * self.num_grads
            here = self.schedule.is_update_step(ahead)
            goal = current + (self.schedule(ahead) - current) / (j + 1)
            hit, target = hit | here, jnp.where(here, goal, target)
        return hit, target

    # --- the step's hooks ----------------------------------------------------------------
    def prune(self, params, masks, state, step):
        if self.schedule is None:
            return params, masks, state
        current = base.pruned_count(masks) / jnp.float32(base.mask_size(masks))
        point, target = self.prune_point(step, current)

        def reset(p, m):
            return p, m, jax.tree.map(jnp.zeros_like, state)

        def at_point():
            return jax.lax.cond(
                target > current,
                lambda: reset(*obs.prune(params, state, masks, target, self.damp,
                                         self.distribution, mesh=self.mesh)),
                lambda: reset(params, masks))

        return jax.lax.cond(point, at_point, lambda: (params, masks, state))

    def observe(self, state, grads, masks, step):
        if self.schedule is None:
            return state
        return jax.lax.cond(self.in_window(step),
                            lambda: obs.accumulate(state, grads, mesh=self.mesh),
                            lambda: state)
