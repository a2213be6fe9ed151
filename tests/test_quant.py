"""Fake quantisation, the QAT dot_general, EMA ranges, integer simulation and QAT training."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prune_ofa_jax import quant
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as config_lib
from prune_ofa_jax.quant import fake_quant, qat


def _rand(shape, seed=0, scale=1.0, shift=0.0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale + shift,
                       jnp.float32)


def _pruned(shape, seed=0, frac=0.5):
    w = _rand(shape, seed)
    keep = np.random.default_rng(seed + 1).random(shape) > frac
    return w * keep


@pytest.mark.parametrize("channel_axes", [None, (-1,)])
def test_symmetric_fake_quant_grid_zeros_error_idempotent(channel_axes):
    w = _pruned((32, 16), 1).at[:, 3].set(0.0)  # one fully pruned output channel
    fq = fake_quant.fake_quant_symmetric(w, 8, channel_axes)
    scale = fake_quant.symmetric_scale(w, 8, channel_axes)
    assert scale.shape == ((1, 1) if channel_axes is None else (1, 16))
    assert bool(jnp.all(fq[w == 0] == 0.0))
    assert bool(jnp.all(jnp.abs(fq - w) <= scale / 2 * (1 + 1e-6)))
    levels = fq / scale
    np.testing.assert_allclose(levels, jnp.round(levels), atol=1e-4)
    assert float(jnp.max(jnp.abs(levels))) <= 127.0 + 1e-4
    # Idempotent: same integer levels, same values up to float rounding of the scale.
    np.testing.assert_array_equal(fake_quant.quantize_symmetric_int(fq, 8, channel_axes)[0],
                                  fake_quant.quantize_symmetric_int(w, 8, channel_axes)[0])
    np.testing.assert_allclose(fake_quant.fake_quant_symmetric(fq, 8, channel_axes), fq,
                               rtol=1e-6, atol=0)
    assert bool(jnp.all(jnp.isfinite(fq)))


def test_fewer_bits_give_larger_error():
    w = _rand((64, 64), 2)
    err = [float(jnp.mean(jnp.abs(fake_quant.fake_quant_symmetric(w, b) - w)))
           for b in (8, 4, 2)]
    assert err[0] < err[1] < err[2]


def test_asymmetric_fake_quant_range_zero_and_clipping():
    x = _rand((200,), 3, 2.0, 1.0)
    lo, hi = -1.5, 4.0
    fq = fake_quant.fake_quant_asymmetric(x, lo, hi, 8)
    scale, zp = fake_quant.asymmetric_params(lo, hi, 8)
    assert float(zp) == np.round(1.5 / float(scale)) and 0 <= float(zp) <= 255
    inside = (x >= lo) & (x <= hi)
    assert bool(jnp.all(jnp.abs(fq - x)[inside] <= scale / 2 * (1 + 1e-5)))
    assert float(jnp.min(fq)) >= lo - float(scale) and float(jnp.max(fq)) <= hi + float(scale)
    assert bool(jnp.all(jnp.abs(fq[~inside] - jnp.clip(x, lo, hi)[~inside]) <= scale))
    np.testing.assert_array_equal(fake_quant.fake_quant_asymmetric(fq, lo, hi, 8), fq)
    zeros = jnp.zeros((4,))
    assert bool(jnp.all(fake_quant.fake_quant_asymmetric(zeros, lo, hi) == 0.0))
    # A strictly positive range is widened to include 0, so 0 is still exact.
    assert float(fake_quant.fake_quant_asymmetric(jnp.array([0.0, 3.0]), 1.0, 3.0)[0]) == 0.0
    # Degenerate all-zero range: finite, everything -> 0.
    assert bool(jnp.all(fake_quant.fake_quant_asymmetric(x, 0.0, 0.0) == 0.0))


def test_ste_gradient_is_identity_even_when_clipped():
    """Chosen behaviour (Q8BERT): gradient 1 inside AND outside the range, not clipped."""
    x = jnp.array([-5.0, -0.3, 0.0, 0.7, 9.0])
    g = jax.grad(lambda v: jnp.sum(fake_quant.fake_quant_asymmetric(v, -1.0, 1.0) * 3.0))(x)
    np.testing.assert_array_equal(g, jnp.full_like(x, 3.0))
    gw = jax.grad(lambda v: jnp.sum(fake_quant.fake_quant_symmetric(v, 4) ** 2))(x)
    np.testing.assert_allclose(gw, 2 * fake_quant.fake_quant_symmetric(x, 4), rtol=1e-6)


def _dense(cfg, features=8, **kw):
    return nn.Dense(features, dot_general_cls=qat.dot_general_cls(cfg), **kw)


def test_ema_update_formula_and_counts():
    cfg = quant.QuantConfig(ema_decay=0.9)
    layer = _dense(cfg)
    x1, x2 = _rand((4, 16), 4, 1.0), _rand((4, 16), 5, 3.0, 0.5)
    v = layer.init(jax.random.key(0), x1)
    st0 = v["quant_stats"]["qat"]
    assert int(st0["count"]) == 0 and float(st0["input_min"]) == 0.0  # init never updates
    _, m1 = layer.apply(v, x1, mutable=["quant_stats"])
    st1 = m1["quant_stats"]["qat"]
    assert int(st1["count"]) == 1
    assert float(st1["input_min"]) == float(x1.min())  # first update = batch stats
    assert float(st1["input_max"]) == float(x1.max())
    y2, m2 = layer.apply({"params": v["params"], **m1}, x2, mutable=["quant_stats"])
    st2 = m2["quant_stats"]["qat"]
    assert int(st2["count"]) == 2
    np.testing.assert_allclose(float(st2["input_min"]),
                               0.9 * float(x1.min()) + 0.1 * float(x2.min()), rtol=1e-6)
    np.testing.assert_allclose(float(st2["input_max"]),
                               0.9 * float(x1.max()) + 0.1 * float(x2.max()), rtol=1e-6)
    # The batch is quantised with the *updated* range.
    xq = fake_quant.fake_quant_asymmetric(x2, st2["input_min"], st2["input_max"])
    wq = fake_quant.fake_quant_symmetric(v["params"]["kernel"])
    np.testing.assert_allclose(y2, xq @ wq + v["params"]["bias"], rtol=1e-5, atol=1e-6)


def test_eval_uses_frozen_ranges():
    cfg = quant.QuantConfig(ema_decay=0.5)
    layer = _dense(cfg)
    x = _rand((4, 16), 6, 2.0)
    v = layer.init(jax.random.key(0), x)
    eval_fn = jax.jit(lambda variables, inp: layer.apply(variables, inp))
    y_train, m = layer.apply(v, x, mutable=["quant_stats"])
    # Never-trained stats at eval -> dynamic (batch) range == first training forward.
    np.testing.assert_allclose(eval_fn(v, x), y_train, rtol=1e-6, atol=1e-6)
    trained = {"params": v["params"], **m}
    y_a, y_b = eval_fn(trained, x), eval_fn(trained, x)
    np.testing.assert_array_equal(y_a, y_b)
    # A wider input at eval is clipped to the frozen range, not re-ranged.
    wide = x * 3.0
    frozen = fake_quant.fake_quant_asymmetric(wide, m["quant_stats"]["qat"]["input_min"],
                                              m["quant_stats"]["qat"]["input_max"])
    expected = frozen @ fake_quant.fake_quant_symmetric(v["params"]["kernel"])
    np.testing.assert_allclose(eval_fn(trained, wide), expected + v["params"]["bias"],
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(eval_fn(trained, wide), eval_fn(v, wide), atol=1e-3)


@pytest.mark.parametrize("per_channel", [False, True])
def test_integer_simulation_matches_fake_quant(per_channel):
    cfg = quant.QuantConfig(per_channel=per_channel)
    layer = _dense(cfg, 8, use_bias=False)
    x = _rand((6, 16), 7, 1.5, 0.4)
    w = _pruned((16, 8), 8, 0.3)
    y, m = layer.apply({"params": {"kernel": w}, "quant_stats": layer.init(
        jax.random.key(0), x)["quant_stats"]}, x, mutable=["quant_stats"])
    st = m["quant_stats"]["qat"]
    qx, s_x, zp = fake_quant.quantize_asymmetric_int(x, st["input_min"], st["input_max"], 8)
    qw, s_w = fake_quant.quantize_symmetric_int(w, 8, (-1,) if per_channel else None)
    qx8 = np.asarray(qx).astype(np.uint8)
    qw8 = np.asarray(qw).astype(np.int8)
    assert np.array_equal(qx8.astype(np.int32), np.asarray(qx))  # really 8-bit values
    assert np.array_equal(qw8.astype(np.int32), np.asarray(qw))
    assert np.all(qw8[np.asarray(w) == 0] == 0)
    acc = qx8.astype(np.int32) @ qw8.astype(np.int32)  # int8 x int8 -> int32
    acc = acc - int(zp) * qw8.astype(np.int32).sum(0, keepdims=True)  # zero-point term
    y_int = acc.astype(np.float64) * float(s_x) * np.asarray(s_w, np.float64)
    step = float(s_x) * np.asarray(s_w)
    assert np.all(np.abs(np.asarray(y) - y_int) <= step)
    # And the quantised layer is close to the float one.
    assert float(jnp.max(jnp.abs(y - x @ w))) < 0.05 * float(jnp.max(jnp.abs(x @ w)))


def test_requantize_output_and_bf16():
    cfg = quant.QuantConfig(requantize_output=True)
    layer = _dense(cfg, 8, use_bias=False)
    x = _rand((4, 16), 9)
    v = layer.init(jax.random.key(0), x)
    y, m = layer.apply(v, x, mutable=["quant_stats"])
    st = m["quant_stats"]["qat"]
    assert {"input_min", "input_max", "output_min", "output_max", "count"} == set(st)
    scale, zp = fake_quant.asymmetric_params(st["output_min"], st["output_max"])
    levels = y / scale + zp
    np.testing.assert_allclose(levels, jnp.round(levels), atol=2e-3)
    bf = _dense(quant.QuantConfig(), 8, dtype=jnp.bfloat16)
    vb = bf.init(jax.random.key(0), x)
    yb, mb = bf.apply(vb, x.astype(jnp.bfloat16), mutable=["quant_stats"])
    assert yb.dtype == jnp.bfloat16
    assert mb["quant_stats"]["qat"]["input_min"].dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(yb.astype(jnp.float32))))


def test_quant_config_validation():
    for bad in (dict(weight_bits=1), dict(act_bits=17), dict(weight_bits=8.0),
                dict(ema_decay=1.0), dict(ema_decay=0.0), dict(include=("(",)),
                dict(exclude=["[a-"])):
        with pytest.raises(ValueError):
            quant.QuantConfig(**bad)
    cfg = quant.QuantConfig(include=["a", "b"], exclude="c")
    assert cfg.include == ("a", "b") and cfg.exclude == ("c",)
    hash(cfg)  # frozen and hashable (usable as a static jit argument)
    assert quant.QuantConfig.from_dict({"weight_bits": 4}).weight_bits == 4
    with pytest.raises(ValueError):
        quant.QuantConfig.from_dict({"bits": 4})


def test_injector_selects_contract_paths():
    inj = quant.make_injector(quant.QuantConfig(weight_bits=6))
    quantised = ["backbone/encoder/layer_0/attention/query",
                 "backbone/encoder/layer_11/attention/output",
                 "backbone/encoder/layer_3/ffn/intermediate", "backbone/encoder/layer_3/ffn/output",
                 "backbone/pooler/dense", "classifier", "classifier/dense", "qa_outputs",
                 "nsp_head/dense", "mlm_head/transform"]
    for path in quantised:
        factory = inj(path)
        assert factory is not None, path
        assert isinstance(factory(), qat.QatDotGeneral) and factory().weight_bits == 6
    for path in ("backbone/embeddings/word_embeddings", "backbone/encoder/layer_0/attention",
                 "backbone/encoder/layer_0/attention/layer_norm", "my_classifier"):
        assert inj(path) is None, path
    enc_only = quant.make_injector(quant.QuantConfig(exclude=qat.HEADS_INCLUDE))
    assert enc_only("classifier") is None and enc_only("qa_outputs") is None
    assert enc_only("backbone/encoder/layer_1/attention/key") is not None


def test_embedding_quant():
    assert quant.embedding_quant(quant.QuantConfig()) is None
    fn = quant.embedding_quant(quant.QuantConfig(quantize_embeddings=True, weight_bits=4))
    table = _pruned((10, 6), 10)
    out = fn(table)
    assert bool(jnp.all(out[table == 0] == 0))
    assert 0 < int(jnp.unique(out).size) <= 15


class _Mlp(nn.Module):
    injector: object

    @nn.compact
    def __call__(self, x):
        for i, f in enumerate((32, 32)):
            x = nn.gelu(nn.Dense(f, dot_general_cls=self.injector(f"encoder/layer_{i}/ffn/"
                                                                   "intermediate"),
                                 name=f"layer_{i}")(x))
        return nn.Dense(3, dot_general_cls=self.injector("classifier"), name="classifier")(x)


def _train(apply_fn, variables, batch, labels, steps=20, lr=3e-3):
    """Plain QAT train loop: params by Adam, quant_stats threaded as mutable state."""
    params, stats = variables["params"], variables["quant_stats"]
    tx = optax.adam(lr)
    opt = tx.init(params)

    def loss_fn(p, s):
        logits, new = apply_fn({"params": p, "quant_stats": s}, batch, mutable=["quant_stats"])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return ce, new["quant_stats"]

    @jax.jit
    def step(p, o, s):
        (loss, s), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s)
        upd, o = tx.update(g, o, p)
        return optax.apply_updates(p, upd), o, s, loss

    losses = []
    for _ in range(steps):
        params, opt, stats, loss = step(params, opt, stats)
        losses.append(float(loss))
    return params, stats, losses


def test_qat_mlp_trains_and_eval_is_frozen():
    model = _Mlp(quant.make_injector(quant.QuantConfig(ema_decay=0.9)))
    x = _rand((32, 16), 11)
    labels = jnp.asarray(np.random.default_rng(12).integers(0, 3, 32))
    v = jax.jit(model.init)(jax.random.key(0), x)
    assert set(v["quant_stats"]) == {"layer_0", "layer_1", "classifier"}
    params, stats, losses = _train(model.apply, v, x, labels)
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(int(s["qat"]["count"]) == 20 for s in stats.values())
    assert bool(qat.stats_initialized(stats)) and not bool(qat.stats_initialized(v["quant_stats"]))
    out = model.apply({"params": params, "quant_stats": stats}, x)
    np.testing.assert_array_equal(out, model.apply({"params": params, "quant_stats": stats}, x))
    zeros = jax.tree.map(jnp.zeros_like, qat.init_quant_stats(model, x))
    assert jax.tree.structure(zeros) == jax.tree.structure(stats)


def _tiny_bert(qcfg, **overrides):
    cfg = config_lib.by_name("bert-tiny", vocab_size=64, hidden_size=32, intermediate_size=64,
                             num_layers=2, num_heads=2, max_position_embeddings=16,
                             num_labels=2, hidden_dropout=0.0, attention_dropout=0.0,
                             **overrides)
    return bert.BertFamily(cfg, "cls", dense_injector=quant.make_injector(qcfg),
                           embedding_quant=quant.embedding_quant(qcfg))


def test_qat_bert_trains_and_eval_is_frozen():
    qcfg = quant.QuantConfig(ema_decay=0.9, quantize_embeddings=True)
    model = _tiny_bert(qcfg)
    rng = np.random.default_rng(13)
    ids = jnp.asarray(rng.integers(1, 64, (16, 8)), jnp.int32)
    mask = jnp.asarray(np.arange(8)[None, :] < rng.integers(4, 9, (16, 1)), jnp.int32)
    labels = (ids[:, 1] < 32).astype(jnp.int32)
    # jit: eager init of even this tiny model costs ~10 s of CPU.
    params = jax.jit(lambda key: bert.init_params(model, key))(jax.random.key(0))
    stats = qat.init_quant_stats(model, ids[:1])
    paths = {"/".join(k.key for k in p[:-2])
             for p, _ in jax.tree_util.tree_leaves_with_path(stats)}
    assert "backbone/encoder/layer_1/ffn/output" in paths and "classifier" in paths
    assert len(paths) == 2 * 6 + 2  # every encoder Dense + pooler + classifier

    def apply_fn(variables, batch, mutable=False):
        out = model.apply(variables, batch, mask, mutable=mutable)
        return (out[0]["logits"], out[1]) if mutable else out["logits"]

    params, stats, losses = _train(apply_fn, {"params": params, "quant_stats": stats},
                                   ids, labels, lr=5e-3)
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses
    assert bool(qat.stats_initialized(stats))
    eval_fn = jax.jit(lambda s, batch: apply_fn({"params": params, "quant_stats": s}, batch))
    other = jnp.asarray(rng.integers(1, 64, (16, 8)), jnp.int32)
    y_a, y_b = eval_fn(stats, other), eval_fn(stats, other)
    np.testing.assert_array_equal(y_a, y_b)
    # The frozen ranges are what eval uses: shrinking them changes the outputs.
    shrunk = jax.tree.map(lambda v: v if v.dtype == jnp.int32 else v * 0.25, stats)
    assert float(jnp.max(jnp.abs(eval_fn(shrunk, other) - y_a))) > 1e-3
