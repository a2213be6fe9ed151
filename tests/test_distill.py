"""Distillation losses: KD-KL by hand, padding, teacher gradients, task and intermediate terms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prune_ofa_jax.distill import intermediate, losses


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _rand(shape, seed=0, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, jnp.float32)


def test_kd_kl_matches_hand_computation():
    s = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    t = np.array([[3.0, 2.0, 1.0], [1.0, -1.0, 0.5]])
    w = np.array([1.0, 0.5])
    temp = 2.0
    ps = np.exp(s / temp) / np.exp(s / temp).sum(-1, keepdims=True)
    pt = np.exp(t / temp) / np.exp(t / temp).sum(-1, keepdims=True)
    kl = (pt * np.log(pt / ps)).sum(-1)
    expected = temp**2 * (w * kl).sum() / w.sum()
    got = losses.kd_kl(jnp.asarray(s), jnp.asarray(t), temp, jnp.asarray(w))
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    unweighted = losses.kd_kl(jnp.asarray(s), jnp.asarray(t), temp)
    np.testing.assert_allclose(float(unweighted), temp**2 * kl.mean(), rtol=1e-5)


def test_kd_kl_zero_iff_equal_and_positive_otherwise():
    s = _rand((3, 4, 11), 1)
    assert abs(float(losses.kd_kl(s, s, 3.0))) < 1e-6
    assert float(losses.kd_kl(s, _rand((3, 4, 11), 2), 3.0)) > 1e-3
    # A constant shift of the logits is the same distribution.
    assert abs(float(losses.kd_kl(s + 7.0, s, 1.0))) < 1e-5
    with pytest.raises(ValueError):
        losses.kd_kl(s, s, 0.0)


def test_kd_kl_ignores_padding_positions():
    s, t = _rand((2, 5, 7), 3), _rand((2, 5, 7), 4)
    w = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], jnp.float32)
    base = losses.kd_kl(s, t, 2.0, w)
    pad = w[..., None] == 0
    s2 = jnp.where(pad, 1e4, s).at[0, 4, 0].set(jnp.inf)
    t2 = jnp.where(pad, -3e3, t).at[1, 4, 2].set(jnp.nan)
    np.testing.assert_allclose(float(losses.kd_kl(s2, t2, 2.0, w)), float(base), rtol=1e-6)
    grad = jax.grad(losses.kd_kl)(s, t, 2.0, w)
    assert float(jnp.abs(jnp.where(pad, grad, 0.0)).max()) == 0.0
    assert float(jnp.abs(grad).max()) > 0.0
    # Equal to the mean over the kept positions only.
    keep = np.asarray(w).astype(bool)
    kept = losses.kd_kl(s[keep], t[keep], 2.0)
    np.testing.assert_allclose(float(base), float(kept), rtol=1e-5)


def test_no_gradient_flows_into_teacher():
    s, t = _rand((4, 9), 5), _rand((4, 9), 6)
    g_t = jax.grad(lambda tt: losses.kd_kl(s, tt, 2.0))(t)
    assert float(jnp.abs(g_t).max()) == 0.0
    h_s, h_t = _rand((2, 3, 8), 7), _rand((2, 3, 8), 8)
    for fn in (intermediate.hidden_mse, intermediate.hidden_cosine):
        assert float(jnp.abs(jax.grad(lambda x, f=fn: f(h_s, x))(h_t)).max()) == 0.0


def test_kd_kl_bf16_inputs_accumulate_in_float32():
    s, t = _rand((8, 64, 50), 9, 3.0), _rand((8, 64, 50), 10, 3.0)
    ref = losses.kd_kl(s.astype(jnp.bfloat16).astype(jnp.float32),
                       t.astype(jnp.bfloat16).astype(jnp.float32), 2.0)
    got = losses.kd_kl(s.astype(jnp.bfloat16), t.astype(jnp.bfloat16), 2.0)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-5)


def test_xent_matches_numpy_and_ignores_padding_labels():
    logits = np.random.default_rng(15).normal(size=(2, 3, 6))
    labels = np.array([[1, 5, -100], [0, 2, 3]])
    w = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    logp = _np_log_softmax(logits)
    nll = -np.take_along_axis(logp, np.clip(labels, 0, 5)[..., None], -1)[..., 0]
    expected = (nll * w).sum() / w.sum()
    got = losses.xent(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w))
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    perfect = jnp.asarray(np.eye(6)[[1, 2]] * 50.0)
    assert float(losses.xent(perfect, jnp.array([1, 2]))) < 1e-6
    assert float(losses.accuracy(perfect, jnp.array([1, 3]))) == 0.5


def test_mse_regression_and_weights():
    pred = jnp.array([[1.0], [2.0], [5.0]])
    target = jnp.array([0.0, 2.0, 0.0])
    np.testing.assert_allclose(float(losses.mse(pred, target)), (1 + 0 + 25) / 3, rtol=1e-6)
    w = jnp.array([1.0, 1.0, 0.0])
    np.testing.assert_allclose(float(losses.mse(pred, target, w)), 0.5, rtol=1e-6)
    with pytest.raises(ValueError):
        losses.mse(jnp.zeros((3, 2)), target)


def test_all_zero_weights_give_zero_not_nan():
    zero = losses.weighted_mean(jnp.array([jnp.nan, 1.0]), jnp.zeros(2))
    assert float(zero) == 0.0


def test_layer_map_uniform_and_explicit():
    assert intermediate.layer_map(6, 12) == ((0, 1), (1, 3), (2, 5), (3, 7), (4, 9), (5, 11))
    assert intermediate.layer_map(4, 4) == tuple((i, i) for i in range(4))
    assert intermediate.layer_map(5, 12)[-1] == (4, 11)
    assert intermediate.layer_map(2, 6, explicit=[0, 5]) == ((0, 0), (1, 5))
    for bad in ([0], [0, 6]):
        with pytest.raises(ValueError):
            intermediate.layer_map(2, 6, explicit=bad)
    with pytest.raises(ValueError):
        intermediate.layer_map(7, 6)


def test_hidden_terms_zero_when_equal_and_mask_padding():
    h = _rand((2, 4, 8), 16)
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]], jnp.float32)
    assert float(intermediate.hidden_mse(h, h, mask)) == 0.0
    assert abs(float(intermediate.hidden_cosine(2.0 * h, h, mask))) < 1e-6
    other = _rand((2, 4, 8), 17)
    assert float(intermediate.hidden_mse(h, other, mask)) > 0.1
    assert float(intermediate.hidden_cosine(h, other, mask)) > 0.1
    # Garbage at padded tokens changes nothing.
    junk = jnp.where(mask[..., None] == 0, 1e6, other)
    for fn in (intermediate.hidden_mse, intermediate.hidden_cosine):
        np.testing.assert_allclose(float(fn(h, junk, mask)), float(fn(h, other, mask)),
                                   rtol=1e-6)
    np.testing.assert_allclose(float(intermediate.hidden_mse(h, other, mask)),
                               float(jnp.mean(jnp.square(h - other)[mask == 1])), rtol=1e-6)
    with pytest.raises(ValueError):
        intermediate.hidden_mse(h, jnp.zeros((2, 4, 16)))


def _probs(seed, mask):
    logits = _rand((2, 2, 4, 4), seed, 2.0)
    logits = jnp.where(mask[:, None, None, :] == 0, -1e9, logits)
    return jax.nn.softmax(logits, -1)


def test_attention_terms():
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]], jnp.float32)
    a, b = _probs(18, mask), _probs(19, mask)
    for fn in (intermediate.attention_kl, intermediate.attention_mse):
        assert abs(float(fn(a, a, mask))) < 1e-6
        assert float(fn(a, b, mask)) > 1e-3
        # Rows of padded queries may hold anything.
        b_junk = jnp.where(mask[:, None, :, None] == 0, 0.5, b)
        np.testing.assert_allclose(float(fn(a, b_junk, mask)), float(fn(a, b, mask)),
                                   rtol=1e-6)
    # Hand check of one KL row against the full value with a single real query.
    one = jnp.array([[1, 0, 0, 0]], jnp.float32)
    pa, pb = np.asarray(a[:1]), np.asarray(b[:1])
    rows = (pb[0, :, 0, :1] * np.log(pb[0, :, 0, :1] / pa[0, :, 0, :1])).sum(-1)
    np.testing.assert_allclose(float(intermediate.attention_kl(a[:1], b[:1], one)),
                               rows.mean(), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError):
        intermediate.attention_kl(a[:, :1], b, mask)


def test_hidden_and_attention_loss_with_projection():
    mask = jnp.ones((2, 4), jnp.float32)
    student = tuple(_rand((2, 4, 8), 20 + i) for i in range(3))   # emb + 2 layers
    teacher = tuple(_rand((2, 4, 16), 30 + i) for i in range(5))  # emb + 4 layers
    lmap = intermediate.layer_map(2, 4)
    proj = intermediate.HiddenProjection(16)
    params = proj.init(jax.random.key(0), student[0])

    def loss(p):
        return intermediate.hidden_loss(student, teacher, lmap, mask, "mse",
                                  project=lambda h: proj.apply(p, h))

    value, grads = jax.value_and_grad(loss)(params)
    manual = np.mean([float(intermediate.hidden_mse(proj.apply(params, student[s + 1]),
                                                    teacher[t + 1], mask))
                      for s, t in lmap])
    np.testing.assert_allclose(float(value), manual, rtol=1e-6)
    assert float(jnp.abs(grads["params"]["dense"]["kernel"]).max()) > 0
    with_emb = intermediate.hidden_loss(student, teacher, lmap, mask, "cosine",
                                  project=lambda h: proj.apply(params, h),
                                  include_embeddings=True)
    assert np.isfinite(float(with_emb))
    s_attn = tuple(_probs(40 + i, mask) for i in range(2))
    t_attn = tuple(_probs(50 + i, mask) for i in range(4))
    att = intermediate.attention_loss(s_attn, t_attn, lmap, mask, "kl")
    manual_att = np.mean([float(intermediate.attention_kl(s_attn[s], t_attn[t], mask))
                          for s, t in lmap])
    np.testing.assert_allclose(float(att), manual_att, rtol=1e-6)
