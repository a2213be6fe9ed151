"""The pure training and evaluation steps (the one file to read to change the training).

`train_step(state, teacher_params, batch) -> (state, metrics)` with model, teacher, optimizer,
pruning method and config bound by `functools.partial` and compiled once by `jax.jit` with
shardings (train/loop.py). One Prune OFA step:
  1. rng = fold_in(seed, step); the batch arrives sharded, shaped [accum, micro_batch, ...];
  2. this step's masks from the pruning method (sparsity/methods): magnitude recomputes them
     under lax.cond on the schedule's update steps only, from the latent weights; learned
     methods derive them from their scores (state.aux); a locked pattern never changes; a
     method that also corrects the weights when it prunes (OBS) does it here, with its own
     non-trainable state (state.method_state: OBS's Fisher);
  3. the frozen teacher runs outside value_and_grad, under stop_gradient;
  4. loss(params, aux): the method's view of the params (masked; for learned masks the mask
     carries the gradient to the scores) -> student forward (fake-quant after masking in QAT,
     so zeros stay zero) -> task_weight * task + kd_weight * T^2 KL (+ the method's penalty,
     + the user's loss terms, cfg.loss_terms: train/objectives.py);
  5. the method observes the step's gradient (OBS: into its Fisher, in the window before
     each of its prunes); grads of pruned entries and frozen weights zeroed; AdamW update;
     the method then keeps frozen weights bit-identical and hard-zeroes pruned ones, unless
     it keeps dense latent weights (`regrow`, the Intel reference, every learned-mask method);
  6. metrics: each loss term, global sparsity, learning rate, grad norm.
Trainable extras beside the model (`state.aux`: learned-mask scores, MI critics; train/aux.py)
are differentiated in the same loss and updated by their own `aux_tx`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.train import objectives
from prune_ofa_jax.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static knobs of a step (hashable, bound with functools.partial)."""
    task: str
    num_labels: int = 2
    seed: int = 0
    task_weight: float = 1.0
    kd_weight: float = 0.0          # 0 disables distillation (and the teacher forward)
    temperature: float = 2.0
    mlm_positions_only: bool = True  # vocab projection only at masked positions
    fused_chunk: int = 32           # all-token MLM KD: positions per chunk (0 = unfused)
    batch_shards: int = 1           # devices the batch is split over (the mesh's data x fsdp)
    qat: bool = False                # carry/update the "quant_stats" collection
    distill: Any = None              # distill.spec.Spec: logit-KD kind, intermediate terms
    loss_terms: tuple = ()           # objectives.LossTerm from the user's code, in the loss


def forward(model, params, quant_stats, batch, cfg: StepConfig, *, train: bool, rng=None):
    """Student/teacher forward. Returns (outputs, new quant_stats)."""
    variables = {"params": params, **({"quant_stats": quant_stats} if cfg.qat else {})}
    kwargs = objectives.model_inputs(cfg, batch)
    rngs = {"dropout": rng} if train else {}
    if cfg.qat and train:
        out, updated = model.apply(variables, **kwargs, deterministic=False, rngs=rngs,
                                   mutable=["quant_stats"])
        return out, updated["quant_stats"]
    return model.apply(variables, **kwargs, deterministic=not train, rngs=rngs), quant_stats


def _loss_and_grads(params, aux, masks, quant_stats, teacher_params, batch, rng, step, *,
                    model, teacher, cfg: StepConfig, method):
    t_out = None
    if cfg.kd_weight > 0:
        t_out, _ = forward(teacher, teacher_params, None, batch,
                           dataclasses.replace(cfg, qat=False), train=False)
        t_out = jax.lax.stop_gradient(t_out)

    def loss_fn(p, a):  # a: the state's trainable extras (train/aux.py), {} if none
        out, stats = forward(model, method.forward_params(p, a, masks), quant_stats, batch,
                             cfg, train=True, rng=rng)
        loss, terms = objectives.loss(cfg, out, t_out, batch, a)
        reg, reg_terms = method.penalty(a, masks, step)  # learned masks' regulariser, or 0
        return loss + reg, ({"loss": loss + reg, **terms, **reg_terms}, stats)

    (_, (terms, stats)), grads = jax.value_and_grad(loss_fn, argnums=(0, 1),
                                                    has_aux=True)(params, aux)
    return grads, terms, stats


def train_step(state: TrainState, teacher_params: Any, batch: dict, *, model, teacher, tx,
               cfg: StepConfig, lr_fn: Callable, method, aux_tx=None):
    """One optimizer step over `batch` ([accum, micro_batch, ...]); pure. `method`: the
    pruning method (sparsity/methods/base.py), the only place masks are made."""
    rng = jax.random.fold_in(jax.random.key(cfg.seed), state.step)
    masks = method.masks(state.params, state.aux, state.masks, state.step)
    params, masks, method_state = method.prune(state.params, masks, state.method_state,
                                               state.step)

    def micro(carry, xs):
        grads_sum, stats = carry
        micro_batch, k = xs
        grads, terms, stats = _loss_and_grads(
            params, state.aux, masks, stats, teacher_params, micro_batch,
            jax.random.fold_in(rng, k), state.step, model=model, teacher=teacher, cfg=cfg,
            method=method)
        return (jax.tree.map(jnp.add, grads_sum, grads), stats), terms

    accum = jax.tree.leaves(batch)[0].shape[0]
    zeros = jax.tree.map(jnp.zeros_like, (params, state.aux))
    ((grads, aux_grads), quant_stats), terms = jax.lax.scan(
        micro, (zeros, state.quant_stats), (batch, jnp.arange(accum)))
    grads = jax.tree.map(lambda g: g / accum, grads)
    method_state = method.observe(method_state, grads, masks, state.step)
    grads = method.weight_grads(grads, masks)
    aux, aux_opt_state = state.aux, state.aux_opt_state
    if state.aux:  # static: the pytree structure, never a traced value
        aux_updates, aux_opt_state = aux_tx.update(
            jax.tree.map(lambda g: g / accum, aux_grads), aux_opt_state, aux)
        aux = optax.apply_updates(aux, aux_updates)

    updates, opt_state = tx.update(grads, state.opt_state, params)
    params = method.weights_after_update(params, optax.apply_updates(params, updates), masks)

    metrics = {k: v.mean() for k, v in terms.items()}
    metrics.update(lr=lr_fn(state.step), grad_norm=optax.tree.norm(grads),
                   sparsity=_global_sparsity(masks))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              masks=masks, quant_stats=quant_stats,
                              data_position=state.data_position + 1, aux=aux,
                              aux_opt_state=aux_opt_state, method_state=method_state)
    return new_state, metrics


def _global_sparsity(masks) -> jax.Array:
    leaves = [m for m in jax.tree.leaves(masks) if m is not None]
    if not leaves:
        return jnp.zeros((), jnp.float32)
    pruned = sum(m.size - jnp.sum(m, dtype=jnp.int32) for m in leaves)  # exact counts
    return pruned / jnp.float32(sum(m.size for m in leaves))


def eval_step(params, masks, quant_stats, batch, *, model, cfg: StepConfig):
    """Deterministic forward with masks applied; QAT ranges frozen. Returns the outputs
    (MLM logits at the masked positions only: that is all the MLM eval reads)."""
    cfg = dataclasses.replace(cfg, mlm_positions_only=True)
    out, _ = forward(model, masks_lib.apply_masks(params, masks), quant_stats, batch, cfg,
                     train=False)
    return {k: v for k, v in out.items()  # head outputs only: nothing large leaves the device
            if k not in ("hidden_states", "attentions", "last_hidden_state")}
