"""Mask methods (sparsity/methods): each binariser's forward and surrogate gradient against
hand-computed values; AdaPrune's constant push and stop rule on a toy problem whose optimal
mask is known; GMP through the interface equals the step before it, bit for bit; frozen
weights stay bit-identical through training, a kill and a resume; the layer-mix export
reloads in transformers with its zeros and our logits; config errors and the deprecation;
the methods' config blocks from the registry."""

import dataclasses
import functools
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
from prune_ofa_jax.sparsity import masks as masks_lib
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


# --- whole runs -------------------------------------------------------------------------
def _legacy_train_step(state, teacher_params, batch, *, model, teacher, tx, cfg, lr_fn,
                       schedule, prune_fn, regrow=False):
    """The train step before the method interface (commit 8c3020f), verbatim but for the
    aux slot (empty here): GMP under lax.cond, masked grads, hard zero unless regrow."""
    from prune_ofa_jax.train import objectives, steps
    rng = jax.random.fold_in(jax.random.key(cfg.seed), state.step)
    masks = jax.lax.cond(schedule.is_update_step(state.step),
                         lambda: prune_fn(state.params, state.masks, schedule(state.step)),
                         lambda: state.masks)

    def loss_and_grads(params, quant_stats, micro_batch, rng):
        t_out, _ = steps.forward(teacher, teacher_params, None, micro_batch,
                                 dataclasses.replace(cfg, qat=False), train=False)
        t_out = jax.lax.stop_gradient(t_out)

        def loss_fn(p):
            out, stats = steps.forward(model, masks_lib.apply_masks(p, masks), quant_stats,
                                       micro_batch, cfg, train=True, rng=rng)
            loss, terms = objectives.loss(cfg, out, t_out, micro_batch)
            return loss, ({"loss": loss, **terms}, stats)
        (_, (terms, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return grads, terms, stats

    def micro(carry, xs):
        grads_sum, stats = carry
        micro_batch, k = xs
        grads, terms, stats = loss_and_grads(state.params, stats, micro_batch,
                                             jax.random.fold_in(rng, k))
        return (jax.tree.map(jnp.add, grads_sum, grads), stats), terms

    accum = jax.tree.leaves(batch)[0].shape[0]
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (grads, quant_stats), terms = jax.lax.scan(micro, (zeros, state.quant_stats),
                                               (batch, jnp.arange(accum)))
    grads = masks_lib.apply_masks(jax.tree.map(lambda g: g / accum, grads), masks)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if not regrow:
        params = masks_lib.apply_masks(params, masks)
    metrics = {k: v.mean() for k, v in terms.items()}
    metrics.update(lr=lr_fn(state.step), grad_norm=optax.tree.norm(grads))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, masks=masks,
                         quant_stats=quant_stats,
                         data_position=state.data_position + 1), metrics


def test_gmp_through_the_interface_equals_the_step_before(tiny_ckpts):
    """The upstream Prune OFA recipe (GMP + KD, hard zero), 6 steps with mask updates at 0,
    2 and 4: the interface's step and the pre-interface step give the same state and
    metrics, bit for bit."""
    from prune_ofa_jax.parallel import mesh as mesh_lib
    from prune_ofa_jax.train import build, synthetic
    c = train_helpers.recipe("prune_ofa_bert_base", "test", init=tiny_ckpts["bert"],
                             teacher=tiny_ckpts["bert"])
    c.sparsity.end_step, c.sparsity.update_every, c.sparsity.freeze_step = 4, 2, 6
    c.sparsity.regrow = False
    run = build.build(c, mesh=mesh_lib.make_mesh(8, 1, 1))
    method = build.make_method(c)
    schedule = method.schedule
    assert method.name == "magnitude" and schedule == run.method.schedule
    legacy = jax.jit(functools.partial(
        _legacy_train_step, model=run.model, teacher=run.teacher, tx=run.tx,
        cfg=run.step_cfg, lr_fn=run.lr_fn, schedule=schedule,
        prune_fn=functools.partial(masks_lib.magnitude_masks, method="uniform",
                                   pattern="unstructured")))
    new, old = run.state, jax.tree.map(jnp.copy, run.state)  # the jitted step donates
    for i in range(6):
        batch = mesh_lib.global_batch(synthetic.batch(
            "pretraining", 16, 32, 30522, max_predictions=5, seed=i), run.mesh)
        new, m_new = run.step_fn(new, run.teacher_params, batch)
        old, m_old = legacy(old, run.teacher_params, batch)
        for k, v in m_old.items():
            assert float(m_new[k]) == float(v), (i, k)
    for key in ("params", "masks", "opt_state", "step"):
        jax.tree.map(np.testing.assert_array_equal, getattr(new, key), getattr(old, key))
    assert 0 < float(m_new["sparsity"])


def _learned_config(init_dir, method: str, **over):
    """finetune_glue:sst2,test turned into a mask-learning run of 8 steps that reaches its
    target (50 %) within them; checkpoints at 4 and 8."""
    c = train_helpers.recipe("finetune_glue", "sst2,test", init=init_dir)
    c.update_from_flattened_dict({
        "sparsity.lock_pattern": False, "sparsity.enabled": True, "sparsity.method": method,
        "sparsity.target": 0.5, "sparsity.end_step": 4, "sparsity.update_every": 1,
        "sparsity.freeze_step": 8, "sparsity.adaprune.lr": 1.0,
        "sparsity.adaprune.gamma": 3e-3, "sparsity.movement.lr": 0.1,
        "train.steps": 8, "checkpoint.every": 4, **over})
    return c


def _hf_zeros(hf_model) -> int:
    """Exact zeros in the exported encoder and pooler matrices (LayerNorm scales excluded)."""
    return sum(int((v == 0).sum()) for k, v in hf_model.state_dict().items()
               if k.endswith(".weight") and "LayerNorm" not in k
               and ("encoder." in k or "pooler." in k))


def test_adaprune_run_frozen_resume_and_layer_mix_export(tiny_ckpts, tmp_path, monkeypatch):
    """AdaPrune with the layer-mix head (mean-pooled) through the run loop: the backbone stays
    bit-identical to the loaded weights; killed at step 7 and resumed from step 4, it ends
    bit-identical to the straight run (params, scores, masks); the exported HF encoder
    reloads with exactly the masks' zeros and, with the exported head, gives our logits."""
    import torch
    import transformers

    from prune_ofa_jax.convert import hf as hf_convert
    from prune_ofa_jax.convert import layer_mix, params_ckpt
    from prune_ofa_jax.models import bert
    init = tiny_ckpts["bert"]
    c = _learned_config(init, "adaprune", **{"model.cls_head": "layer_mix_mean"})
    report = train_helpers.run_straight_and_killed(c, tmp_path, monkeypatch, kill_at=6)
    assert report["sparsity"]["global"] == 0.5  # the stop's exact count, within 8 steps
    a, mcfg, _ = params_ckpt.load_params(tmp_path / "straight" / "model")
    b, _, _ = params_ckpt.load_params(tmp_path / "resumed" / "model")
    jax.tree.map(np.testing.assert_array_equal, a, b)
    states = train_helpers.saved_states(tmp_path, 8)
    jax.tree.map(np.testing.assert_array_equal, states[0]["aux"], states[1]["aux"])
    # frozen: every kept backbone weight is the loaded one, bit for bit; pruned ones are 0
    w0, _, _ = params_ckpt.load_params(init)
    masks = states[0]["masks"]
    flat_m = dict(masks_lib.named_leaves(masks))
    for path, w in masks_lib.named_leaves(a["backbone"]):
        orig = np.asarray(dict(masks_lib.named_leaves(w0["backbone"]))[path])
        m = flat_m.get("backbone/" + path)
        want = orig if m is None else np.where(np.asarray(m), orig, 0.0)
        np.testing.assert_array_equal(np.asarray(w), want, err_msg=path)
    # export: HF BertModel with the zeros + the head file; reload and compare logits
    out = hf_convert.export_hf(a, mcfg, "cls", tmp_path / "hf")
    hf = transformers.AutoModel.from_pretrained(str(out)).eval()
    assert _hf_zeros(hf) == int(sum((~np.asarray(m)).sum() for m in jax.tree.leaves(masks)))
    ids = np.array([[101, 2023, 3185, 2003, 2307, 102, 0, 0], [101, 6659, 102, 0, 0, 0, 0, 0]])
    att = (ids > 0).astype(np.int64)
    with torch.no_grad():
        hidden = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(att),
                    output_hidden_states=True).hidden_states
    ref = layer_mix.TorchHead(out)(hidden, torch.tensor(att)).numpy()
    ours = bert.BertFamily(mcfg, "cls").apply({"params": a}, ids, att)["logits"]
    np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-5)


def test_movement_resumes_exactly_and_exports_zeros(tiny_ckpts, tmp_path, monkeypatch):
    """Movement pruning (weights and scores train, Adam on both), killed at step 7, resumed
    from step 4: the same params, scores, masks and optimizer states as a straight run; the
    HF export (standard head) reloads with exactly the masks' zeros. (movement_soft and
    supermask keep the same state; AdaPrune runs through the loop above, the random mask
    and hard movement in the mask study's :test, tests/test_mask_study.py.)"""
    import transformers

    from prune_ofa_jax.convert import hf as hf_convert
    from prune_ofa_jax.convert import params_ckpt
    c = _learned_config(tiny_ckpts["bert"], "movement_hard")
    train_helpers.run_straight_and_killed(c, tmp_path, monkeypatch, kill_at=6)
    states = train_helpers.saved_states(tmp_path, 8)
    for key in ("params", "aux", "masks", "aux_opt_state"):
        jax.tree.map(np.testing.assert_array_equal, states[0][key], states[1][key])
    pruned = int(sum((~np.asarray(m)).sum() for m in jax.tree.leaves(states[0]["masks"])))
    assert pruned > 0
    params, mcfg, _ = params_ckpt.load_params(tmp_path / "resumed" / "model")
    out = hf_convert.export_hf(params, mcfg, "cls", tmp_path / "hf")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(out))
    assert _hf_zeros(hf) == pruned
