"""The fused all-token MLM distillation against the naive formula on full [B, L, V] logits:
loss, metrics and gradients (fp32, padding, chunk sizes that do not divide L), no gradient
into the teacher, bf16 inputs close to fp32, and no [B, L, V] array in a compiled step."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import train_helpers

from prune_ofa_jax.distill import fused_mlm, losses
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.train import build, synthetic

B, L, H, V, P, T = 3, 13, 8, 50, 4, 2.0


def _inputs(seed=0, dtype=jnp.float32):
    k = iter(jax.random.split(jax.random.key(seed), 8))
    y_s, y_t = (jax.random.normal(next(k), (B, L, H), dtype) for _ in range(2))
    e_s, e_t = (jax.random.normal(next(k), (V, H), jnp.float32) * 0.5 for _ in range(2))
    b_s, b_t = (jax.random.normal(next(k), (V,), jnp.float32) * 0.1 for _ in range(2))
    attention = np.ones((B, L), np.int32)
    attention[0, 9:] = 0                      # padding, with a masked slot left unused
    attention[2, 5:] = 0
    positions = np.array([[1, 4, 7, 0], [2, 3, 11, 12], [1, 2, 0, 0]], np.int32)
    weights = np.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]], np.float32)
    ids = np.asarray(jax.random.randint(next(k), (B, P), 0, V), np.int32)
    batch = {"attention_mask": jnp.asarray(attention), "masked_lm_positions": positions,
             "masked_lm_ids": ids, "masked_lm_weights": weights}
    return (y_s, e_s, b_s), (y_t, e_t, b_t), batch


def _naive(student, teacher, batch):
    """0.5 * CE at the masked positions + 0.5 * T^2 KL over non-padding tokens, full logits."""
    s = jnp.einsum("blh,vh->blv", student[0].astype(jnp.float32), student[1]) + student[2]
    t = jnp.einsum("blh,vh->blv", teacher[0].astype(jnp.float32), teacher[1]) + teacher[2]
    pos = batch["masked_lm_positions"]
    at_pos = jnp.take_along_axis(s, pos[..., None], axis=1)
    ce = losses.xent(at_pos, batch["masked_lm_ids"], batch["masked_lm_weights"])
    kd = losses.kd_kl(s, t, T, batch["attention_mask"])
    return 0.5 * ce + 0.5 * kd, (ce, kd)


def _fused(student, teacher, batch, chunk, shards=1):
    out = lambda m: {"mlm_hidden": m[0], "mlm_table": m[1], "mlm_bias": m[2]}  # noqa: E731
    loss, terms = fused_mlm.mlm_kd(out(student), out(teacher), batch, task_weight=0.5,
                                   kd_weight=0.5, temperature=T, chunk=chunk, shards=shards)
    return loss, (terms["mlm_loss"], terms["kd_mlm"])


@pytest.mark.parametrize("chunk,shards", [(1, 1), (4, 1), (5, 3), (13, 1), (64, 3)])
def test_fused_loss_and_grads_equal_the_naive_formula(chunk, shards):
    student, teacher, batch = _inputs()
    (want, want_terms), want_g = jax.value_and_grad(_naive, has_aux=True)(student, teacher,
                                                                         batch)
    fused = jax.jit(jax.value_and_grad(_fused, argnums=(0, 1), has_aux=True),
                    static_argnums=(3, 4))
    (got, got_terms), (got_g, teacher_g) = fused(student, teacher, batch, chunk, shards)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got_terms, want_terms, rtol=1e-6)
    for g, w in zip(got_g, want_g):  # d/d y_s, d/d table_s, d/d bias_s
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)
    assert all(not np.any(np.asarray(g)) for g in teacher_g)  # the teacher is frozen


def test_padding_and_unused_slots_are_ignored_even_if_the_teacher_is_not_finite():
    student, teacher, batch = _inputs()
    y_t = teacher[0].at[0, 10].set(jnp.inf).at[2, 7].set(jnp.nan)  # padding positions
    poisoned = (y_t,) + teacher[1:]
    loss, grads = jax.value_and_grad(lambda s: _fused(s, poisoned, batch, 4)[0])(student)
    np.testing.assert_allclose(loss, _naive(student, teacher, batch)[0], rtol=1e-6)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


def test_bf16_inputs_accumulate_in_fp32_close_to_fp32():
    student, teacher, batch = _inputs()
    low = lambda m: (m[0].astype(jnp.bfloat16),) + m[1:]  # noqa: E731
    want, _ = _fused(student, teacher, batch, 4)
    got, _ = jax.jit(_fused, static_argnums=3)(low(student), low(teacher), batch, 4)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=2e-2)
    g = jax.grad(lambda s: _fused(s, low(teacher), batch, 4)[0])(low(student))
    assert g[0].dtype == jnp.bfloat16 and np.isfinite(np.asarray(g[0], np.float32)).all()


def _shapes(hlo: str):
    for dims in re.findall(r"\[([\d,]+)\]", hlo):
        yield int(np.prod([int(d) for d in dims.split(",") if d]))


@pytest.mark.slow
def test_reference_step_never_holds_full_vocab_logits(tiny_ckpts):
    """The compiled Prune OFA step with all-token KD: fused, no array of B*L*V elements
    (the naive step, compiled the same way, has them: the check can fail)."""
    ckpt = tiny_ckpts["bert"]
    c = train_helpers.recipe("prune_ofa_bert_base", "test", init=ckpt, teacher=ckpt)
    c.distill.mlm_positions_only = False
    batch_size, seq = c.train.batch_size, c.data.seq_len
    local = synthetic.batch(c.task, batch_size, seq, 30522,
                            max_predictions=c.data.max_predictions, seed=0)
    mesh = mesh_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    biggest = {}
    for chunk in (8, 0):  # fused, then naive
        c.distill.fused_chunk = chunk
        run = build.build(c, mesh=mesh)
        hlo = run.step_fn.lower(run.state, run.teacher_params,
                                mesh_lib.global_batch(local, mesh)).compile().as_text()
        biggest[chunk] = max(_shapes(hlo))
    full = batch_size * seq * 30522
    assert biggest[0] >= full           # naive: [B, L, V] logits
    assert biggest[8] < full // 2, biggest  # fused: a chunk of 8 of the 32 positions at most


def _while_bodies(hlo: str) -> dict:
    """name -> text of every computation that is the body of a while loop."""
    comps = {c.split(" ", 2)[0].lstrip("%"): c for c in re.split(r"\n(?=\S)", hlo)}
    names = set(re.findall(r"body=%?([\w.\-]+)", hlo))
    return {n: comps[n] for n in names if n in comps}


def test_data_parallel_fused_step_reduces_across_devices_once(tiny_ckpts):
    """8-way data parallel: the chunk loop keeps its batch sums per device; nothing is
    all-reduced inside it (a plain sum all-reduced the [V, H] table gradient per chunk)."""
    c = train_helpers.recipe("prune_ofa_bert_base", "test", init=tiny_ckpts["bert"],
                             teacher=tiny_ckpts["bert"])
    c.distill.mlm_positions_only, c.distill.fused_chunk = False, 8
    local = synthetic.batch(c.task, c.train.batch_size, c.data.seq_len, 30522,
                            max_predictions=c.data.max_predictions, seed=0)
    mesh = mesh_lib.make_mesh(8, 1, 1)
    run = build.build(c, mesh=mesh)
    assert run.step_cfg.batch_shards == 8
    hlo = run.step_fn.lower(run.state, run.teacher_params,
                            mesh_lib.global_batch(local, mesh)).compile().as_text()
    bodies = _while_bodies(hlo)
    assert bodies  # the chunk scan is a while loop
    assert not [n for n, text in bodies.items() if " all-reduce" in text]
    assert " all-reduce" in hlo  # the gradients are still reduced, once, outside
