"""The pure training and evaluation steps (the one file to read to change the training).

`train_step(state, teacher_params, batch) -> (state, metrics)` with model, teacher, optimizer,
schedule and config bound by `functools.partial` and compiled once by `jax.jit` with
shardings (train/loop.py). One Prune OFA step:
  1. rng = fold_in(seed, step); the batch arrives sharded, shaped [accum, micro_batch, ...];
  2. on the schedule's update steps only (lax.cond), masks are recomputed from the latent
     weights; after the freeze step, or when fine-tuning with the pattern locked, never;
  3. the frozen teacher runs outside value_and_grad, under stop_gradient;
  4. loss(params): masked params -> student forward (fake-quant after masking in QAT, so
     zeros stay zero) -> task_weight * task + kd_weight * T^2 KL;
  5. grads masked; AdamW update; params masked again unless `regrow` (Intel reference: dense
     latent weights, masks only in the forward, a later mask update may revive weights);
  6. metrics: each loss term, global sparsity, learning rate, grad norm.
Trainable extras beside the model (`state.aux`: learned-mask scores, MI critics; train/aux.py)
are differentiated in the same loss and updated by their own `aux_tx`.
`pretrain_step` and `finetune_step` are this step with a pruning schedule or a locked pattern.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

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
    regrow: bool = False             # False: hard-zero params after every update
    qat: bool = False                # carry/update the "quant_stats" collection
    distill: Any = None              # distill.spec.Spec: logit-KD kind, intermediate terms


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


def _loss_and_grads(params, aux, masks, quant_stats, teacher_params, batch, rng, *, model,
                    teacher, cfg: StepConfig):
    t_out = None
    if cfg.kd_weight > 0:
        t_out, _ = forward(teacher, teacher_params, None, batch,
                           dataclasses.replace(cfg, qat=False), train=False)
        t_out = jax.lax.stop_gradient(t_out)

    def loss_fn(p, a):  # a: the state's trainable extras (train/aux.py), {} if none
        out, stats = forward(model, masks_lib.apply_masks(p, masks), quant_stats, batch, cfg,
                             train=True, rng=rng)
        loss, terms = objectives.loss(cfg, out, t_out, batch, a)
        return loss, ({"loss": loss, **terms}, stats)

    (_, (terms, stats)), grads = jax.value_and_grad(loss_fn, argnums=(0, 1),
                                                    has_aux=True)(params, aux)
    return grads, terms, stats


def train_step(state: TrainState, teacher_params: Any, batch: dict, *, model, teacher, tx,
               cfg: StepConfig, lr_fn: Callable, schedule=None,
               prune_fn: Optional[Callable] = None, aux_tx=None):
    """One optimizer step over `batch` ([accum, micro_batch, ...]); pure."""
    rng = jax.random.fold_in(jax.random.key(cfg.seed), state.step)
    masks = state.masks
    if schedule is not None:  # static: pruning run vs locked pattern, never a traced `if`
        masks = jax.lax.cond(schedule.is_update_step(state.step),
                             lambda: prune_fn(state.params, state.masks, schedule(state.step)),
                             lambda: state.masks)

    def micro(carry, xs):
        grads_sum, stats = carry
        micro_batch, k = xs
        grads, terms, stats = _loss_and_grads(
            state.params, state.aux, masks, stats, teacher_params, micro_batch,
            jax.random.fold_in(rng, k), model=model, teacher=teacher, cfg=cfg)
        return (jax.tree.map(jnp.add, grads_sum, grads), stats), terms

    accum = jax.tree.leaves(batch)[0].shape[0]
    zeros = jax.tree.map(jnp.zeros_like, (state.params, state.aux))
    ((grads, aux_grads), quant_stats), terms = jax.lax.scan(
        micro, (zeros, state.quant_stats), (batch, jnp.arange(accum)))
    grads = masks_lib.apply_masks(jax.tree.map(lambda g: g / accum, grads), masks)
    aux, aux_opt_state = state.aux, state.aux_opt_state
    if state.aux:  # static: the pytree structure, never a traced value
        aux_updates, aux_opt_state = aux_tx.update(
            jax.tree.map(lambda g: g / accum, aux_grads), aux_opt_state, aux)
        aux = optax.apply_updates(aux, aux_updates)

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if not cfg.regrow:
        params = masks_lib.apply_masks(params, masks)

    metrics = {k: v.mean() for k, v in terms.items()}
    metrics.update(lr=lr_fn(state.step), grad_norm=optax.tree.norm(grads),
                   sparsity=_global_sparsity(masks))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              masks=masks, quant_stats=quant_stats,
                              data_position=state.data_position + 1, aux=aux,
                              aux_opt_state=aux_opt_state)
    return new_state, metrics


def _global_sparsity(masks) -> jax.Array:
    leaves = [m for m in jax.tree.leaves(masks) if m is not None]
    if not leaves:
        return jnp.zeros((), jnp.float32)
    pruned = sum(m.size - jnp.sum(m, dtype=jnp.int32) for m in leaves)  # exact counts
    return pruned / jnp.float32(sum(m.size for m in leaves))


def pretrain_step(state, teacher_params, batch, **kw):
    """Prune OFA upstream: MLM (+NSP) + KD from the frozen dense teacher + GMP schedule."""
    return train_step(state, teacher_params, batch, **kw)


def finetune_step(state, teacher_params, batch, **kw):
    """Downstream: pattern locked (no schedule), optional task-teacher KD."""
    return train_step(state, teacher_params, batch, **{**kw, "schedule": None})


def eval_step(params, masks, quant_stats, batch, *, model, cfg: StepConfig):
    """Deterministic forward with masks applied; QAT ranges frozen. Returns the outputs
    (MLM logits at the masked positions only: that is all the MLM eval reads)."""
    cfg = dataclasses.replace(cfg, mlm_positions_only=True)
    out, _ = forward(model, masks_lib.apply_masks(params, masks), quant_stats, batch, cfg,
                     train=False)
    return {k: v for k, v in out.items()  # head outputs only: nothing large leaves the device
            if k not in ("hidden_states", "attentions", "last_hidden_state")}
