"""Mask methods (sparsity/methods): each binariser's forward and surrogate gradient against
hand-computed values; AdaPrune's constant push and stop rule on a toy problem whose optimal
mask is known; config errors and the deprecation; the methods' config blocks from the
registry. Whole runs through the loop: tests/test_mask_method_runs.py."""

import dataclasses
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import train_helpers

from prune_ofa_jax import config_base, errors
from prune_ofa_jax.sparsity import exact_topk
from prune_ofa_jax.sparsity import methods, patterns, schedules
from prune_ofa_jax.sparsity.methods import (adaprune, base, magnitude, movement_hard, movement_soft,
                                            supermask)
from prune_ofa_jax.train import validate

KEY = methods.AUX_KEY


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def test_adaprune_binariser_forward_and_surrogate_gradient():
    theta = jnp.array([-0.01, -1e-5, 0.0, 2e-5, 0.01, 3.0], jnp.float32)
    fwd = np.asarray(adaprune.binarise(theta, 1e5, 1.0))
    want = [sigmoid(1e5 * t) for t in (-0.01, -1e-5, 0.0, 2e-5, 0.01, 3.0)]
    np.testing.assert_allclose(fwd, want, rtol=1e-6, atol=1e-30)
    assert fwd[0] == 0.0 and fwd[4] == 1.0 and fwd[2] == 0.5  # a step, but for |theta| < 2e-4
    upstream = jnp.array([1.0, -2.0, 3.0, 0.5, -1.0, 2.0])
    grad = np.asarray(jax.grad(lambda t: jnp.sum(upstream * adaprune.binarise(t, 1e5, 1.0)))(
        theta))
    # dL/dtheta = dL/dm * t_s * sigmoid(t_s theta) * (1 - sigmoid(t_s theta)), t_s = 1
    hand = [u * sigmoid(t) * (1 - sigmoid(t)) for u, t in
            zip((1.0, -2.0, 3.0, 0.5, -1.0, 2.0), (-0.01, -1e-5, 0.0, 2e-5, 0.01, 3.0))]
    np.testing.assert_allclose(grad, hand, rtol=1e-6)
    assert grad[2] == pytest.approx(0.75)  # 3 * 1/4 at theta = 0
    slope2 = jax.grad(lambda t: adaprune.binarise(t, 1e5, 2.0))(jnp.float32(0.5))
    assert float(slope2) == pytest.approx(2 * sigmoid(1.0) * (1 - sigmoid(1.0)), rel=1e-6)


def test_ste_movement_supermask_forward_and_gradient():
    w = jnp.array([[2.0, -3.0], [0.5, 4.0]])
    s = jnp.array([[0.3, -0.2], [0.1, -1.0]])
    c = jnp.array([[1.0, 2.0], [-1.0, 0.5]])
    keep = s > 0.0
    fwd = base.ste(keep, s)
    np.testing.assert_array_equal(np.asarray(fwd), [[1.0, 0.0], [1.0, 0.0]])  # exact 0/1
    # W' = W * mask, L = sum(c * W'): dL/dS = dL/dW' * W = c * W, through the threshold.
    grad = jax.grad(lambda s_: jnp.sum(c * w * base.ste(s_ > 0.0, s_)))(s)
    np.testing.assert_array_equal(np.asarray(grad), np.asarray(c * w))
    # supermask: 1[score > 0.01], a fraction `target` of the scores starts at or below it
    sm = supermask.Supermask(target=0.3, threshold=0.01, init_scale=0.02)
    scores = sm.init_scores(None, {"k": jnp.ones((100, 100), bool)}, jax.random.key(0))
    masks = sm.masks(None, {KEY: scores}, None, 0)
    assert float(1 - masks["k"].mean()) == pytest.approx(0.3, abs=0.02)
    np.testing.assert_array_equal(np.asarray(masks["k"]), np.asarray(scores["k"] > 0.01))


def test_movement_hard_topk_and_soft_threshold_with_l1():
    rng = np.random.default_rng(0)
    scores = {"a": jnp.asarray(rng.normal(size=(8, 6)), jnp.float32) - 3.0,  # all negative
              "b": jnp.asarray(rng.normal(size=(4, 4)), jnp.float32), "c": None}
    uni = base.topk_masks(scores, 0.75, "uniform", patterns.Unstructured())
    for k in ("a", "b"):  # exact count per tensor, and the highest (signed) scores kept
        n = scores[k].size
        kept = np.asarray(uni[k])
        assert kept.sum() == exact_topk.host_kept_count(n, 0.75)
        assert np.asarray(scores[k])[kept].min() > np.asarray(scores[k])[~kept].max()
    glob = base.topk_masks(scores, 0.5, "global", patterns.Unstructured())
    allv = np.concatenate([np.asarray(scores[k]).ravel() for k in ("a", "b")])
    kept = np.concatenate([np.asarray(glob[k]).ravel() for k in ("a", "b")])
    assert kept.sum() == 32 and allv[kept].min() > allv[~kept].max() and glob["c"] is None
    blocks = base.topk_masks({"a": scores["a"]}, 0.5, "uniform", patterns.Block(2))["a"]
    assert np.all(np.asarray(blocks)[0::2] == np.asarray(blocks)[1::2]) and blocks.sum() == 24
    nm = base.topk_masks({"a": scores["a"]}, 0.5, "uniform", patterns.NM(2, 4))["a"]
    assert np.all(np.asarray(nm).reshape(2, 4, 6).sum(axis=1) == 2)
    # soft: threshold tau(t) = 0.1 * s(t) / target, lambda(t) = l1 * s(t) / target
    sched = schedules.CubicSchedule(target=0.5, end_step=10, update_every=1)
    soft = movement_soft.MovementSoft(schedule=sched, threshold=0.1, l1=8.0)
    s2 = {"a": jnp.array([[-2.0, -2.3], [0.0, 5.0]]), "b": jnp.array([1.0])}
    ramp = float(sched(4)) / 0.5
    masks = soft.masks(None, {KEY: s2}, None, 4)
    np.testing.assert_array_equal(np.asarray(masks["a"]),
                                  [[sigmoid(-2.0) > 0.1 * ramp, sigmoid(-2.3) > 0.1 * ramp],
                                   [True, True]])
    assert soft.masks(None, {KEY: s2}, None, 0)["a"].all()  # tau = 0 at the start: dense
    reg, terms = soft.penalty({KEY: s2}, masks, 4)
    mean_a = np.mean([sigmoid(v) for v in (-2.0, -2.3, 0.0, 5.0)])
    l1 = (mean_a + sigmoid(1.0)) / 2  # mean per tensor, averaged over tensors
    assert float(terms["mask_l1"]) == pytest.approx(l1, rel=1e-6)
    assert float(reg) == pytest.approx(8.0 * ramp * l1, rel=1e-5)
    g = jax.grad(lambda a: soft.penalty({KEY: a}, masks, 4)[0])(s2)
    np.testing.assert_allclose(np.asarray(g["b"]), [8.0 * ramp * sigmoid(1.0)
                                                    * (1 - sigmoid(1.0)) / 2], rtol=1e-5)


def _toy_adaprune_run(method, w0, x, y, steps):
    """SGD on theta (the method's own transform) for the linear model y = x @ (w0 * m)."""
    params, masks = {"w": w0}, {"w": jnp.ones(w0.shape, bool)}
    aux = {KEY: method.init_scores(params, masks, jax.random.key(0))}
    tx = method.score_tx(lambda s: 1.0)
    opt = tx.init(aux[KEY])

    @jax.jit
    def step(aux, opt, masks, i):
        masks = method.masks(params, aux, masks, i)

        def loss(a):
            p = method.forward_params(params, a, masks)
            reg, _ = method.penalty(a, masks, i)
            return jnp.mean((x @ p["w"] - y) ** 2) + reg
        g = jax.grad(loss)(aux)
        upd, opt = tx.update(g[KEY], opt, aux[KEY])
        return {KEY: optax.apply_updates(aux[KEY], upd)}, opt, masks

    history = []
    for i in range(steps):
        aux, opt, masks = step(aux, opt, masks, i)
        history.append((np.asarray(aux[KEY]["w"]), np.asarray(masks["w"])))
    return history


def test_adaprune_constant_push_stop_rule_and_known_optimal_mask():
    rng = np.random.default_rng(0)
    d_in, d_out = 16, 4
    w0 = jnp.asarray(rng.uniform(0.5, 1.5, (d_in, d_out)) * rng.choice([-1, 1], (d_in, d_out)),
                     jnp.float32)
    best = rng.permutation(d_in * d_out).reshape(d_in, d_out) >= d_in * d_out // 4  # 25 % off
    x = jnp.asarray(rng.normal(size=(512, d_in)), jnp.float32)
    y = x @ (w0 * best)
    # 1) no data signal (x = 0): theta falls by exactly gamma per step, everywhere.
    quiet = adaprune.AdaPrune(target=0.25, lr=0.5, gamma=1e-3, init_mean=0.01, init_std=0.0)
    hist = _toy_adaprune_run(quiet, w0, jnp.zeros_like(x), jnp.zeros_like(y), 3)
    for t, (theta, _) in enumerate(hist, 1):
        np.testing.assert_allclose(theta, 0.01 - t * 1e-3, rtol=0, atol=1e-8)
    # 2) the data term prunes exactly the weights that hurt; the stop freezes masks and theta
    method = adaprune.AdaPrune(target=0.25, lr=0.05, gamma=2e-4, init_mean=0.01, init_std=1e-3)
    hist = _toy_adaprune_run(method, w0, x, y, 60)
    pruned = [int((~m).sum()) for _, m in hist]
    stop = next(i for i, n in enumerate(pruned) if n >= 16)
    assert pruned[stop:] == [16] * (60 - stop), pruned      # exactly the target count, kept
    assert stop < 55 and max(pruned[:stop]) < 16
    np.testing.assert_array_equal(hist[-1][1], best)          # the known optimal mask
    # the stop step's masks come from theta before it; from then on theta never moves
    np.testing.assert_array_equal(hist[stop - 1][0], hist[-1][0])
    assert not np.array_equal(hist[stop - 2][0], hist[stop - 1][0])


def test_method_configs_and_deprecated_spellings():
    c = train_helpers.recipe("finetune_glue", "sst2,test")
    c.sparsity.update_from_flattened_dict({"lock_pattern": False, "enabled": True,
                                           "method": "global", "target": 0.5, "end_step": 4})
    with pytest.warns(FutureWarning, match="sparsity.method=magnitude --config.sparsity"):
        validate.validate(c)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # built without a second warning
        m = methods.from_config(c, regrow=False)
    assert (m.name, m.distribution, m.frozen_weights) == ("magnitude", "global", False)
    for over, match in (({"method": "lottery"}, "config.sparsity.method"),
                        ({"method": "adaprune", "pattern": "2:4"}, "config.sparsity.pattern"),
                        ({"method": "supermask", "enabled": False}, "sparsity.enabled=True"),
                        ({"distribution": "layerwise"}, "config.sparsity.distribution")):
            bad = c.copy_and_resolve_references()
            bad.sparsity.update_from_flattened_dict({"method": "magnitude", **over})
            with pytest.raises(errors.ConfigError, match=match):
                validate.validate(bad)
    for name, frozen in (("movement_hard", False), ("movement_soft", False),
                         ("adaprune", True), ("supermask", True)):
        c.sparsity.method = name
        m = methods.from_config(c, regrow=False)
        assert (m.name, m.frozen_weights, m.keeps_latent) == (name, frozen, True)
    assert isinstance(methods.from_config(c, False), supermask.Supermask)
    c.sparsity.method, c.sparsity.frozen_weights = "movement_hard", True
    assert isinstance(methods.from_config(c, False), movement_hard.MovementHard)
    assert methods.from_config(c, False).frozen_weights


def test_method_blocks_come_from_the_registry_with_their_keys_and_defaults():
    """config.sparsity's method blocks are the registered methods' own fields, with the keys
    and defaults scripts use; methods sharing a block must agree on its defaults; a method
    registered from user code gets its block, its check and its fields (defaults where a
    config was built before it was registered)."""
    c = config_base.base()
    assert c.sparsity.movement.to_dict() == {"lr": 1e-2, "init": 0.0, "threshold": 0.1,
                                             "l1": 400.0}
    assert c.sparsity.adaprune.to_dict() == {"lr": 2e-5, "gamma": 2e-7, "t_l": 1e5, "t_s": 1.0,
                                             "init_mean": 0.01, "init_std": 0.001}
    assert c.sparsity.supermask.to_dict() == {"lr": 1e-3, "threshold": 0.01, "init_scale": 0.02}
    with pytest.raises(ValueError, match=r"config\.sparsity\.movement\.lr defaults to 0\.5"):
        @methods.register("movement_fast")
        @dataclasses.dataclass(frozen=True)
        class Fast(movement_hard.MovementHard):
            lr: float = 0.5
    assert "movement_fast" not in methods.REGISTRY

    @dataclasses.dataclass(frozen=True)
    class Shrunk(magnitude.Magnitude):
        factor: float = 0.5
        target: float = 0.0
        sparsity_keys = ("target",)

        @classmethod
        def check(cls, config):
            super().check(config)
            base.require(cls.settings(config.sparsity)["factor"] > 0,
                         "sparsity.shrunk_test.factor", "must be > 0")
    built_before = config_base.base()
    methods.register("shrunk_test")(Shrunk)
    try:
        c = config_base.base()
        assert c.sparsity.shrunk_test.to_dict() == {"factor": 0.5}
        for cfg in (c, built_before):
            cfg.sparsity.update(enabled=True, method="shrunk_test", target=0.4)
        c.sparsity.shrunk_test.factor = 2.0
        m = methods.from_config(c, regrow=False)
        assert (type(m), m.name, m.factor, m.target) == (Shrunk, "shrunk_test", 2.0, 0.4)
        assert methods.from_config(built_before, regrow=False).factor == 0.5
        c.sparsity.shrunk_test.factor = -1.0
        with pytest.raises(errors.ConfigError, match=r"^config\.sparsity\.shrunk_test\.factor"):
            methods.check(c)
        c.sparsity.update(method="movement_hard", pattern="2:4")  # structured: no error
        methods.check(c)
        c.sparsity.method = "movement_soft"
        with pytest.raises(errors.ConfigError, match=r"need one of \('magnitude', "):
            methods.check(c)
    finally:
        methods.REGISTRY.remove("shrunk_test")
