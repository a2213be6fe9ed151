"""Mutual-information lower bounds between student and teacher representations, and their
critics (Poole et al. 2019, "On Variational Bounds of Mutual Information"; used for
distillation by He et al. 2021, Distiller).

Every bound takes a critic score matrix over one batch of K paired samples:
`scores[i, j] = f(s_j, t_i)`: row i is teacher sample i, column j student sample j, so the
diagonal holds the K joint pairs and the off-diagonal the K(K-1) pairs from the product of
the marginals. A learned baseline, where a bound has one, is `log q(t_i) = log_baseline[i]`.

* `interpolated_bound` (MI-alpha):
    I_alpha = 1 + E_joint[log(e^f / (alpha m + (1 - alpha) q(t)))]
                - E_marginal[e^f / (alpha m + (1 - alpha) q(t))],
  with m the leave-one-out in-batch mean of e^f (the sample the term is evaluated at is
  left out of m, as Poole et al.'s estimator). alpha = 1: InfoNCE over K-1 samples (exactly
  the mean, over the left-out negative, of `infonce_bound` on K-1 of the K columns); alpha = 0:
  TUBA. Its variance is bounded by K / alpha. Everything is in log space: the leave-one-out
  log-mean-exp never subtracts two exponentials that could cancel.
* `infonce_bound` (van den Oord et al. 2018), `tuba_bound`, `nwj_bound` (TUBA with log q = 1).

Each bound is registered in `BOUNDS` under its `distill.intermediate` name, with one
signature `fn(scores, log_baseline, alpha) -> nats` (a bound ignores what it does not use);
`bound(kind, ...)` dispatches through it. A new bound is one function here (or in a user's
own code) decorated with `@mi.BOUNDS.register("name")`, optionally with `check=` for its
config keys.

Critics are separable, f(s, t) = scale * <g_S(h_S), g_T(h_T)>, with L2-normalised encoder
outputs and a learned scale; g is a small MLP on the masked mean of the tokens ("mlp") or a
one-layer transformer over the tokens, then pooled ("encoder"). Their params live in the
train state's aux slot (train/aux.py): trained with the student, checkpointed, never exported.
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prune_ofa_jax import errors, registry

Array = jax.Array

BOUNDS = registry.Registry("MI bound", "distill.intermediate",
                           hint="add one with @prune_ofa_jax.distill.mi.BOUNDS.register(name)")


def _offdiag(k: int) -> Array:
    return ~jnp.eye(k, dtype=bool)


def log_loo_mean(scores: Array) -> Array:
    """out[i, j] = log((1 / (K - 1)) * sum_{k != j} exp(scores[i, k])), in O(K^2), stable.

    Leaving out a column that is not the row's maximum keeps the maximum's term (= 1 after
    the shift) in the sum, so `total - e_j >= 1` loses no precision; leaving out the maximum
    itself sums the rest afresh around the second-largest score.
    """
    scores = jnp.asarray(scores, jnp.float32)
    k = scores.shape[-1]
    if k < 2:
        raise ValueError(f"a leave-one-out mean needs K >= 2 samples, got {k}")
    is_top = jnp.arange(k)[None, :] == jnp.argmax(scores, -1)[:, None]
    top = jax.lax.stop_gradient(jnp.max(scores, -1, keepdims=True))  # shifts cancel exactly
    rest = jnp.where(is_top, -jnp.inf, scores)
    second = jax.lax.stop_gradient(jnp.max(rest, -1, keepdims=True))
    without_top = second + jnp.log(jnp.sum(jnp.exp(rest - second), -1, keepdims=True))
    e = jnp.exp(scores - top)
    left = jnp.where(is_top, 1.0, jnp.sum(e, -1, keepdims=True) - e)  # 1: a safe dummy
    return jnp.where(is_top, without_top, top + jnp.log(left)) - math.log(k - 1)


def logmeanexp_offdiag(x: Array) -> Array:
    """log of the mean of exp(x) over the off-diagonal entries of a [K, K] matrix."""
    k = x.shape[0]
    off = _offdiag(k)
    top = jax.lax.stop_gradient(jnp.max(jnp.where(off, x, -jnp.inf)))
    safe = jnp.where(off, x, top)  # the diagonal never reaches exp (no inf * 0 in the grad)
    total = jnp.sum(jnp.where(off, jnp.exp(safe - top), 0.0))
    return top + jnp.log(total) - math.log(k * (k - 1))


def log_interpolate(log_a: Array, log_b: Array, alpha: float) -> Array:
    """log(alpha * a + (1 - alpha) * b) from log a and log b; alpha a static float."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha == 1.0:
        return jnp.broadcast_to(log_a, jnp.broadcast_shapes(log_a.shape, log_b.shape))
    if alpha == 0.0:
        return jnp.broadcast_to(log_b, jnp.broadcast_shapes(log_a.shape, log_b.shape))
    return jnp.logaddexp(math.log(alpha) + log_a, math.log1p(-alpha) + log_b)


def _check_scores(scores: Array) -> Array:
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
        raise ValueError(f"scores must be a square [K, K] matrix with K >= 2, got {scores.shape}")
    return jnp.asarray(scores, jnp.float32)


def _check_alpha(config) -> None:
    if not 0.0 <= config.distill.mi_alpha <= 1.0:
        raise errors.ConfigError(f"config.distill.mi_alpha: {config.distill.mi_alpha} must be "
                                 "in [0, 1] (1 = InfoNCE, 0 = TUBA)")


@BOUNDS.register("mi_alpha", check=_check_alpha)
def interpolated_bound(scores: Array, log_baseline: Optional[Array], alpha: float) -> Array:
    """I_alpha (MI-alpha) in nats; `log_baseline` [K] is log q(t_i) (unused when alpha = 1)."""
    scores = _check_scores(scores)
    k = scores.shape[0]
    if log_baseline is None:
        if alpha < 1.0:
            raise ValueError("alpha < 1 needs a learned baseline log q(t)")
        log_baseline = jnp.zeros((k,), jnp.float32)
    log_baseline = jnp.asarray(log_baseline, jnp.float32)
    nce = log_loo_mean(scores) if alpha > 0 else jnp.zeros_like(scores)
    base = log_interpolate(nce, log_baseline[:, None], alpha)   # [i, j]: j left out of m
    off = _offdiag(k)
    joint = jnp.sum(jnp.where(off, jnp.diagonal(scores)[:, None] - base, 0.0)) / (k * (k - 1))
    marginal = jnp.exp(logmeanexp_offdiag(scores - jnp.diagonal(base)[:, None]))
    return 1.0 + joint - marginal


@BOUNDS.register("infonce")
def infonce_bound(scores: Array, log_baseline: Optional[Array] = None,
                  alpha: Optional[float] = None) -> Array:
    """InfoNCE: mean_i [f(s_i, t_i) - log mean_k e^{f(s_k, t_i)}] (at most log K)."""
    del log_baseline, alpha
    scores = _check_scores(scores)
    k = scores.shape[0]
    return jnp.mean(jnp.diagonal(scores) - jax.nn.logsumexp(scores, -1)) + math.log(k)


@BOUNDS.register("nwj")
def nwj_bound(scores: Array, log_baseline: Optional[Array] = None,
              alpha: Optional[float] = None) -> Array:
    """NWJ (f-GAN KL): TUBA with the constant baseline log q = 1."""
    del log_baseline, alpha
    return tuba_bound(scores, jnp.ones((scores.shape[0],), jnp.float32))


@BOUNDS.register("tuba")
def tuba_bound(scores: Array, log_baseline: Array, alpha: Optional[float] = None) -> Array:
    """TUBA: 1 + E_joint[f - log q(t)] - E_marginal[e^{f - log q(t)}]."""
    del alpha
    scores = _check_scores(scores)
    shifted = scores - jnp.asarray(log_baseline, jnp.float32)[:, None]
    return 1.0 + jnp.mean(jnp.diagonal(shifted)) - jnp.exp(logmeanexp_offdiag(shifted))


def bound(kind: str, scores: Array, log_baseline: Optional[Array], alpha: float) -> Array:
    """The bound registered as `kind` (see BOUNDS) in nats."""
    return BOUNDS[kind](scores, log_baseline, alpha)


# --- critics ------------------------------------------------------------------------------

def masked_mean(h: Array, mask: Optional[Array]) -> Array:
    """[B, L, H] -> [B, H]: mean over real tokens (all tokens when mask is None)."""
    if mask is None:
        return jnp.mean(h, 1)
    m = jnp.asarray(mask, h.dtype)[..., None]
    return jnp.sum(h * m, 1) / jnp.maximum(jnp.sum(m, 1), 1.0)


def _pool(h: Array, mask: Optional[Array]) -> Array:
    """Token sequences are mean-pooled; [B, H] vectors pass through."""
    return h if h.ndim == 2 else masked_mean(h, mask)


class Encoder(nn.Module):
    """g: representation -> unit vector. kind "mlp": pooled -> Dense -> gelu -> Dense;
    kind "encoder": one pre-LN transformer layer over the tokens, pooled, then Dense."""
    hidden: int = 256
    out: int = 64
    kind: str = "mlp"
    heads: int = 4

    @nn.compact
    def __call__(self, h: Array, mask: Optional[Array] = None) -> Array:
        h = jnp.asarray(h, jnp.float32)
        if self.kind == "encoder" and h.ndim == 3:
            x = nn.Dense(self.hidden, name="in")(h)
            attn_mask = None if mask is None else jnp.asarray(mask, bool)[:, None, None, :]
            x = x + nn.MultiHeadDotProductAttention(self.heads, name="attn")(
                nn.LayerNorm(name="ln1")(x), mask=attn_mask)
            y = nn.Dense(2 * self.hidden, name="ffn_in")(nn.LayerNorm(name="ln2")(x))
            x = x + nn.Dense(self.hidden, name="ffn_out")(nn.gelu(y))
            z = nn.Dense(self.out, name="out")(masked_mean(x, mask))
        elif self.kind in ("mlp", "encoder"):
            x = nn.gelu(nn.Dense(self.hidden, name="hidden")(_pool(h, mask)))
            z = nn.Dense(self.out, name="out")(x)
        else:
            raise ValueError(f"unknown critic kind {self.kind!r}; mlp or encoder")
        return z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-6)


class Critic(nn.Module):
    """Separable critic + baseline for one (student layer, teacher layer) pair.

    Returns (scores [K, K] with scores[i, j] = f(s_j, t_i), log_baseline [K] = b(t_i)).
    The scale starts at `init_scale` (cosine / temperature 0.2) and is learned in log space.
    """
    hidden: int = 256
    out: int = 64
    kind: str = "mlp"
    init_scale: float = 5.0

    @nn.compact
    def __call__(self, h_s: Array, h_t: Array, mask: Optional[Array] = None):
        z_s = Encoder(self.hidden, self.out, self.kind, name="g_student")(h_s, mask)
        z_t = Encoder(self.hidden, self.out, self.kind, name="g_teacher")(h_t, mask)
        log_scale = self.param("log_scale", nn.initializers.constant(math.log(self.init_scale)),
                               ())
        scores = jnp.exp(log_scale) * (z_t @ z_s.T)
        pooled_t = _pool(jnp.asarray(h_t, jnp.float32), mask)
        b = nn.Dense(1, name="baseline_out")(
            nn.gelu(nn.Dense(self.hidden, name="baseline_hidden")(pooled_t)))
        return scores, b[:, 0]
