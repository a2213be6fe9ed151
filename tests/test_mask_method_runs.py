"""Mask methods through whole runs: GMP through the Method interface equals the train step
before it, bit for bit; AdaPrune (frozen weights bit-identical through training, a kill and
a resume; the layer-mix export reloads in transformers with its zeros and our logits) and
movement (exact resume, the HF export holds exactly the masks' zeros)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import train_helpers

from prune_ofa_jax.sparsity import masks as masks_lib


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
