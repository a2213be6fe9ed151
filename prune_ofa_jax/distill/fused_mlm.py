"""The reference Prune OFA masked-LM objective, fused: cross-entropy at the masked positions
plus T^2 * KL(teacher || student) over EVERY non-padding token, without ever holding the
[B, L, V] logits of either model.

The tied decoders are applied inside: from the MLM heads' hidden states `y` ([B, L, H],
before the vocabulary projection), each model's table [V, H] and bias [V]. A `lax.scan` over
chunks of `chunk` positions computes, per chunk, both models' logits ([B, chunk, V], fp32
accumulation from bf16 or fp32 inputs), the log-sum-exps, the CE and KL terms, and right
away the student's gradient with respect to its logits. That gradient is contracted on the
spot into the gradients of `y`, the table and the bias (the bias gradient as a matrix-vector
product, as in `models.heads.vocab_projection`), so the backward pass only scales them by
the incoming cotangent: the matmul work equals the naive step's (two projections forward,
two for the student's gradient) and no [B, L, V] array exists in either pass.

The loss is `ce_coef * sum(ce_w * CE) + kd_coef * sum(kd_w * KL)`; the coefficients carry
the normalisation and the 0.5 / 0.5 * T^2 weights (`mlm_kd` below computes them). Positions
with weight 0 are ignored entirely, as everywhere in `distill.losses`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


def _pad_positions(x: Array, length: int) -> Array:
    pad = length - x.shape[1]
    return x if pad == 0 else jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))


def _chunks(x: Array, chunk: int) -> Array:
    """[B, L', ...] -> [L'/chunk, B, chunk, ...]: the scan runs over position chunks, so the
    batch axis (the one sharded over devices) stays in every chunk."""
    b, length = x.shape[:2]
    return jnp.moveaxis(x.reshape((b, length // chunk, chunk) + x.shape[2:]), 1, 0)


def _unchunk(x: Array) -> Array:
    n, b, c = x.shape[:3]
    return jnp.moveaxis(x, 0, 1).reshape((b, n * c) + x.shape[3:])


def _logits(y, table, bias):
    return jnp.einsum("bch,vh->bcv", y, table.astype(y.dtype),
                      preferred_element_type=jnp.float32) + bias.astype(jnp.float32)


def _chunk_terms(ys, yt, labels, ce_w, kd_w, table_s, bias_s, table_t, bias_t, temperature):
    """Per-position CE and KL of one chunk, plus what the student gradient needs."""
    s = _logits(ys, table_s, bias_s)
    t = jax.lax.stop_gradient(_logits(yt, table_t, bias_t))
    log_p1 = jax.nn.log_softmax(s, -1)                          # CE at T = 1
    lab = jnp.clip(labels, 0, s.shape[-1] - 1)
    ce = -jnp.take_along_axis(log_p1, lab[..., None], -1)[..., 0]
    log_ps = jax.nn.log_softmax(s / temperature, -1)
    log_pt = jax.nn.log_softmax(t / temperature, -1)
    pt = jnp.exp(log_pt)
    kl = jnp.sum(jnp.where(pt > 0, pt * (log_pt - log_ps), 0.0), -1)
    ce = jnp.where(ce_w > 0, ce, 0.0) * ce_w
    kl = jnp.where(kd_w > 0, kl, 0.0) * kd_w
    return ce, kl, (log_p1, lab, log_ps, pt)


def _forward(temperature, chunk, shards, with_grads, ce_coef, kd_coef, ys, table_s, bias_s,
             yt, table_t, bias_t, labels, ce_w, kd_w):
    length = -(-ys.shape[1] // chunk) * chunk
    xs = tuple(_chunks(_pad_positions(a, length), chunk)
               for a in (ys, yt, labels, ce_w.astype(jnp.float32), kd_w.astype(jnp.float32)))
    vocab, hidden = table_s.shape
    # The sums over the batch are kept per batch shard ([shards, ...], the leading batch
    # rows of each device) inside the scan and added up once after it: a plain sum is
    # all-reduced across the data-parallel devices in every chunk (the table gradient is
    # [V, H]; seen in the compiled HLO on 8 devices).

    def body(carry, x):
        ys_c, yt_c, lab_c, cew_c, kdw_c = x
        ce, kl, (log_p1, lab, log_ps, pt) = _chunk_terms(
            ys_c, yt_c, lab_c, cew_c, kdw_c, table_s, bias_s, table_t, bias_t, temperature)
        ce_sum, kd_sum, d_table, d_bias = carry
        ce_sum = ce_sum + ce.reshape(shards, -1).sum(-1)
        kd_sum = kd_sum + kl.reshape(shards, -1).sum(-1)
        if not with_grads:
            return (ce_sum, kd_sum, d_table, d_bias), None
        # d loss / d logits: softmax minus one-hot for CE, (p_s - p_t) / T for T^2-free KL.
        g_ce = jnp.where(cew_c[..., None] > 0, jnp.exp(log_p1)
                         - jax.nn.one_hot(lab, vocab, dtype=jnp.float32), 0.0)
        g_kd = jnp.where(kdw_c[..., None] > 0, (jnp.exp(log_ps) - pt) / temperature, 0.0)
        g = (ce_coef * cew_c)[..., None] * g_ce + (kd_coef * kdw_c)[..., None] * g_kd
        g_k = g.reshape(shards, -1, vocab)                         # [shards, n, V]
        y_k = ys_c.reshape(shards, -1, hidden)
        d_y = jnp.einsum("bcv,vh->bch", g.astype(ys_c.dtype), table_s.astype(ys_c.dtype),
                         preferred_element_type=jnp.float32).astype(ys_c.dtype)
        d_table = d_table + jnp.einsum("knv,knh->kvh", g_k.astype(ys_c.dtype), y_k,
                                       preferred_element_type=jnp.float32)
        d_bias = d_bias + jnp.einsum("n,knv->kv", jnp.ones((g_k.shape[1],), jnp.float32), g_k)
        return (ce_sum, kd_sum, d_table, d_bias), d_y

    zero = jnp.zeros((shards,), jnp.float32)
    init = (zero, zero, jnp.zeros((shards, vocab, hidden) if with_grads else (), jnp.float32),
            jnp.zeros((shards, vocab) if with_grads else (), jnp.float32))
    (ce_sum, kd_sum, d_table, d_bias), d_y = jax.lax.scan(body, init, xs)
    ce_sum, kd_sum = ce_sum.sum(), kd_sum.sum()
    loss = ce_coef * ce_sum + kd_coef * kd_sum
    if not with_grads:
        return loss, ce_sum, kd_sum
    d_y = _unchunk(d_y)[:, :ys.shape[1]]
    return (loss, ce_sum, kd_sum), (d_y, d_table.sum(0).astype(table_s.dtype),
                                    d_bias.sum(0).astype(bias_s.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _fused(temperature, chunk, shards, ce_coef, kd_coef, ys, table_s, bias_s, yt, table_t,
           bias_t, labels, ce_w, kd_w):
    return _forward(temperature, chunk, shards, False, ce_coef, kd_coef, ys, table_s, bias_s,
                    yt, table_t, bias_t, labels, ce_w, kd_w)


def _fused_fwd(temperature, chunk, shards, *args):
    out, grads = _forward(temperature, chunk, shards, True, *args)
    return out, (grads, args)


def _fused_bwd(temperature, chunk, shards, res, cotangents):
    """The gradients were formed in the forward pass: scale them by the loss cotangent. The
    two sums leave `fused_mlm_kd` under stop_gradient, so their cotangents are zero."""
    del temperature, chunk, shards
    (d_y, d_table, d_bias), args = res
    ct = cotangents[0]
    out = [jnp.zeros(a.shape, jax.dtypes.float0) if not jnp.issubdtype(a.dtype, jnp.floating)
           else jnp.zeros_like(a) for a in args]
    out[2:5] = [(ct * d_y).astype(d_y.dtype), (ct * d_table).astype(d_table.dtype),
                (ct * d_bias).astype(d_bias.dtype)]  # ys, table_s, bias_s
    return tuple(out)


_fused.defvjp(_fused_fwd, _fused_bwd)


def fused_mlm_kd(y_s: Array, table_s: Array, bias_s: Array, y_t: Array, table_t: Array,
                 bias_t: Array, labels: Array, ce_w: Array, kd_w: Array, *, ce_coef,
                 kd_coef, temperature: float, chunk: int = 32, shards: int = 1):
    """(loss, ce_sum, kd_sum): loss = ce_coef * ce_sum + kd_coef * kd_sum, with
    ce_sum = sum ce_w * CE(student, labels) and kd_sum = sum kd_w * KL(teacher || student at
    temperature T), over [B, L] positions. Differentiable in the student's y, table and bias
    (the teacher gets no gradient; the two sums are for logging, without gradient).
    `shards`: how many devices the batch axis is split over (it must divide B); the batch
    sums are then formed per device and reduced once, not once per chunk."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 position, got {chunk}")
    if shards < 1 or y_s.shape[0] % shards:
        raise ValueError(f"shards={shards} must divide the batch size {y_s.shape[0]}")
    chunk = min(chunk, y_s.shape[1])
    loss, ce_sum, kd_sum = _fused(
        float(temperature), int(chunk), int(shards), jnp.asarray(ce_coef, jnp.float32),
        jnp.asarray(kd_coef, jnp.float32), y_s, table_s, bias_s,
        jax.lax.stop_gradient(y_t), jax.lax.stop_gradient(table_t),
        jax.lax.stop_gradient(bias_t), labels.astype(jnp.int32), ce_w, kd_w)
    return loss, jax.lax.stop_gradient(ce_sum), jax.lax.stop_gradient(kd_sum)


def dense_labels(positions: Array, ids: Array, weights: Array, length: int):
    """Masked-LM targets at [B, P] positions scattered to [B, L] (labels, weights)."""
    b = positions.shape[0]
    rows = jnp.arange(b)[:, None]
    w = jnp.where(weights > 0, weights, 0).astype(jnp.float32)
    labels = jnp.zeros((b, length), jnp.int32).at[rows, positions].max(
        jnp.where(w > 0, ids.astype(jnp.int32), 0))
    return labels, jnp.zeros((b, length), jnp.float32).at[rows, positions].add(w)


def mlm_kd(student: dict, teacher: dict, batch: dict, *, task_weight: float, kd_weight: float,
           temperature: float, chunk: int, shards: int = 1):
    """The reference objective on the models' fused-mode outputs (see BertFamily's
    `mlm_hidden`): task_weight * CE (mean over masked tokens) + kd_weight * T^2 * KL (mean
    over non-padding tokens). Returns (loss, {"mlm_loss", "kd_mlm"})."""
    length = student["mlm_hidden"].shape[1]
    labels, ce_w = dense_labels(batch["masked_lm_positions"], batch["masked_lm_ids"],
                                batch["masked_lm_weights"], length)
    kd_w = batch["attention_mask"].astype(jnp.float32)
    ce_den, kd_den = jnp.maximum(ce_w.sum(), 1e-9), jnp.maximum(kd_w.sum(), 1e-9)
    loss, ce_sum, kd_sum = fused_mlm_kd(
        student["mlm_hidden"], student["mlm_table"], student["mlm_bias"], teacher["mlm_hidden"],
        teacher["mlm_table"], teacher["mlm_bias"], labels, ce_w, kd_w,
        ce_coef=task_weight / ce_den, kd_coef=kd_weight * temperature**2 / kd_den,
        temperature=temperature, chunk=chunk, shards=shards)
    return loss, {"mlm_loss": ce_sum / ce_den, "kd_mlm": temperature**2 * kd_sum / kd_den}
