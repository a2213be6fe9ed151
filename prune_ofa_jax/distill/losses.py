"""Distillation and task losses: pure jnp, float32 accumulation, explicit padding weights.

Conventions shared by every function here:
* `weights` (optional) has the leading shape of the per-position values (e.g. [B, L] for
  [B, L, V] logits, [B, P] for masked-LM logits gathered at P positions, [B] for sentence
  heads). Positions with weight 0 are ignored entirely, even if their inputs are inf/nan;
  the result is `sum(w * value) / sum(w)` (0 when all weights are 0). `None` = plain mean.
* Inputs may be bf16; everything is upcast to float32 before any reduction.
* Teacher tensors go through `stop_gradient` inside the loss, so nothing differentiates
  through the teacher even if the caller forgets.

The logit KD losses a run can select (`config.distill.logit_loss`) are registered in
LOGIT_LOSSES, each a function `(student_logits, teacher_logits, temperature, weights)` with
its own config check; `kd_logits(kind, ...)` dispatches by name. A new one is one decorated
function here (or in a user's own code). Intermediate-representation terms (hidden states,
attention maps, layer maps) live in `distill.intermediate`.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from prune_ofa_jax import errors, registry
from prune_ofa_jax.distill import reduction

Array = jax.Array

weighted_mean = reduction.weighted_mean

LOGIT_LOSSES = registry.Registry(
    "logit KD loss", "distill.logit_loss",
    hint="add one with @prune_ofa_jax.distill.losses.LOGIT_LOSSES.register(name)")


@LOGIT_LOSSES.register("kl")
def kd_kl(student_logits: Array, teacher_logits: Array, temperature: float = 2.0,
          weights: Optional[Array] = None) -> Array:
    """`T^2 * mean_w KL(softmax(t/T) || softmax(s/T))` over the last (class) axis.

    The T^2 factor (Hinton et al.) keeps gradient magnitudes comparable across T.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    teacher = jax.lax.stop_gradient(teacher_logits)
    log_ps = jax.nn.log_softmax(jnp.asarray(student_logits, jnp.float32) / temperature, -1)
    log_pt = jax.nn.log_softmax(jnp.asarray(teacher, jnp.float32) / temperature, -1)
    pt = jnp.exp(log_pt)
    # where(): classes the teacher gives probability exactly 0 contribute 0, not 0 * inf.
    kl = jnp.sum(jnp.where(pt > 0, pt * (log_pt - log_ps), 0.0), axis=-1)
    return temperature**2 * weighted_mean(kl, weights)


def nll(logits: Array, labels: Array) -> Array:
    """Per-position negative log-likelihood of integer `labels` (clipped into range)."""
    logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), -1)
    safe = jnp.clip(labels.astype(jnp.int32), 0, logits.shape[-1] - 1)
    return -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]


def xent(logits: Array, labels: Array, weights: Optional[Array] = None) -> Array:
    """Mean (over weighted positions) cross-entropy of integer `labels` under `logits`.

    Works for MLM ([B, P, V] logits, masked_lm_ids, masked_lm_weights) and classification
    ([B, C], [B]). Labels at weight-0 positions may be anything (e.g. -100 or padding).
    """
    return weighted_mean(nll(logits, labels), weights)


def mixed_xent(logits: Array, labels: Array, mix_labels: Array, lam: Array,
               weights: Optional[Array] = None) -> Array:
    """Cross-entropy to the soft label lam * onehot(labels) + (1 - lam) * onehot(mix_labels)
    (mixup), per row, then the weighted mean."""
    lam = jnp.asarray(lam, jnp.float32)
    per_row = lam * nll(logits, labels) + (1 - lam) * nll(logits, mix_labels)
    return weighted_mean(per_row, weights)


@LOGIT_LOSSES.register("soft_ce")
def kd_soft_ce(student_logits: Array, teacher_logits: Array, temperature: float = 2.0,
               weights: Optional[Array] = None) -> Array:
    """`T^2 * mean_w CE(softmax(t/T), softmax(s/T))`: KD-KL plus the teacher's entropy (a
    constant), so the same gradient; the value is Distiller's / TextBrewer's `kd_ce_loss`."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    teacher = jax.lax.stop_gradient(jnp.asarray(teacher_logits, jnp.float32))
    log_ps = jax.nn.log_softmax(jnp.asarray(student_logits, jnp.float32) / temperature, -1)
    pt = jax.nn.softmax(teacher / temperature, -1)
    return temperature**2 * weighted_mean(-jnp.sum(pt * log_ps, -1), weights)


def _sentence_heads_only(config) -> None:
    if config.task != "cls":
        raise errors.ConfigError(
            "config.distill.logit_loss: mse on the logits is for sentence heads (task cls); "
            "the MLM/QA heads distil with kl or soft_ce")


@LOGIT_LOSSES.register("mse", check=_sentence_heads_only)
def kd_mse(student_logits: Array, teacher_logits: Array, temperature: float = 2.0,
           weights: Optional[Array] = None) -> Array:
    """Mean squared error between the logits (no temperature), for sentence heads."""
    del temperature
    return mse(student_logits, jax.lax.stop_gradient(teacher_logits), weights)


def kd_logits(kind: str, student_logits: Array, teacher_logits: Array, temperature: float,
              weights: Optional[Array] = None) -> Array:
    """Logit KD by its registered name (LOGIT_LOSSES: kl, soft_ce, mse, ...)."""
    return LOGIT_LOSSES[kind](student_logits, teacher_logits, temperature, weights)


def accuracy(logits: Array, labels: Array, weights: Optional[Array] = None) -> Array:
    """Weighted fraction of positions whose argmax equals the label (a metric, no grad)."""
    hit = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return weighted_mean(hit, weights)


def mse(pred: Array, target: Array, weights: Optional[Array] = None) -> Array:
    """Weighted mean squared error, e.g. regression logits [B, 1] against labels [B].

    A trailing singleton axis on `pred` that `target` lacks is squeezed; any axes beyond
    `weights` are averaged (so for [B, L, H] states with [B, L] weights it is the mean
    over H, then the weighted mean over tokens).
    """
    pred = jnp.asarray(pred, jnp.float32)
    target = jnp.asarray(target, jnp.float32)
    if pred.ndim == target.ndim + 1 and pred.shape[-1] == 1:
        pred = pred[..., 0]
    if pred.shape != target.shape:
        raise ValueError(f"mse shapes differ: {pred.shape} vs {target.shape}")
    return weighted_mean(jnp.square(pred - target), weights)
