"""The compiled train step: same loss on 1 device, 8-way data parallel and 8-way FSDP; the
teacher is untouched; the loss falls; no retracing; the locked pattern survives updates."""

import jax
import numpy as np
import pytest
import train_helpers

from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.train import build, synthetic


@pytest.fixture(scope="module")
def ckpts(tiny_ckpts):
    return tiny_ckpts


# prune_ofa_bert_large:test is prune_ofa_bert_base:test with another target (both shrink to
# the same tiny model): the same program, so it is not built again here.
RECIPES = [("teacher_prep", "test", "bert"), ("prune_ofa_bert_base", "test", "bert"),
           ("prune_ofa_distilbert", "test", "distilbert"),
           ("finetune_glue", "sst2,test", "bert"), ("finetune_squad", "test", "bert"),
           ("qat", "sst2,test", "bert")]


def _batch(c, seed=0):
    return synthetic.batch(c.task, c.train.batch_size, c.data.seq_len, 30522,
                           max_predictions=c.data.max_predictions, num_labels=c.num_labels,
                           seed=seed)


@pytest.mark.parametrize("name,arg,family", RECIPES)
def test_step_same_loss_on_1_device_dp_and_fsdp(ckpts, name, arg, family):
    """Three steps on one device and on 8 (2-way data parallel x 4-way FSDP: the batch split 8
    ways, params and optimizer state sharded 4 ways); the pruning recipes recompute masks at
    steps 0 and 2 (the second at a nonzero sparsity), so the FSDP mask update with its
    collectives is covered too."""
    c = train_helpers.recipe(name, arg, init=ckpts[family])
    if c.distill.kd_weight > 0:
        c.teacher.path = ckpts[family]
    meshes = {"single": mesh_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1]),
              "dp2_fsdp4": mesh_lib.make_mesh(2, 4, 1)}
    losses, kept = {}, {}
    for key, mesh in meshes.items():
        run = build.build(c, mesh=mesh)
        if key == "dp2_fsdp4":  # the FSDP run must really shard params
            specs = [s.spec for s in jax.tree.leaves(run.state_shardings.params)]
            assert any("fsdp" in str(s) for s in specs)
        state, losses[key] = run.state, []
        for step in range(3):
            batch = mesh_lib.global_batch(_batch(c, seed=step), mesh)
            state, metrics = run.step_fn(state, run.teacher_params, batch)
            losses[key].append(float(metrics["loss"]))
        # counted on the host: a device sum would compile a reduction per shape and sharding
        kept[key] = [int(np.asarray(m).sum()) for m in jax.tree.leaves(state.masks)]
    assert np.all(np.isfinite(losses["single"]))
    np.testing.assert_allclose(losses["dp2_fsdp4"], losses["single"], rtol=0, atol=1e-5)
    assert kept["dp2_fsdp4"] == kept["single"]
    if c.sparsity.enabled and not c.sparsity.lock_pattern:  # step 2 really pruned
        assert sum(kept["single"]) < sum(m.size for m in jax.tree.leaves(state.masks))


def test_pattern_lock_keeps_every_zero(ckpts, tmp_path):
    # A pruned model: zero 70% of each prunable kernel, then fine-tune with the lock.
    c = train_helpers.recipe("finetune_glue", "sst2,test", init=ckpts["bert"])
    run = build.build(c, mesh=mesh_lib.make_mesh(8, 1, 1))
    pruned = masks_lib.magnitude_masks(run.state.params, masks_lib.init_masks(
        run.state.params), 0.7)
    params = jax.device_get(masks_lib.apply_masks(run.state.params, pruned))
    from prune_ofa_jax.convert import params_ckpt
    params_ckpt.save_params(tmp_path / "pruned", params, run.model_config, "cls")
    c.init.path = str(tmp_path / "pruned")
    run = build.build(c, mesh=run.mesh)
    zeros_before = jax.tree.map(lambda p, m: None if m is None else np.asarray(p) == 0,
                                run.state.params, run.state.masks)
    state = run.state
    for i in range(5):
        state, _ = run.step_fn(state, None, mesh_lib.global_batch(_batch(c, i), run.mesh))
    for z, p in zip(jax.tree.leaves(zeros_before), jax.tree.leaves(
            jax.tree.map(lambda p, m: None if m is None else p, state.params, state.masks))):
        assert z.mean() > 0.69
        assert np.all(np.asarray(p)[z] == 0)


@pytest.mark.slow
def test_teacher_frozen_loss_falls_no_retrace_grad_accumulation_and_bf16(ckpts):
    """One build (8-way data parallel, prune_ofa_bert_base:test with KD) fits one batch for 30
    steps: compiled once, the teacher untouched, the loss falls, the masks reach the target.
    Its first step is the reference for 2 accumulated microbatches (same loss and gradient
    norm) and for a bf16 model (finite, close loss, fp32 master weights)."""
    c = train_helpers.recipe("prune_ofa_bert_base", "test", init=ckpts["bert"],
                             teacher=ckpts["bert"])
    c.model.overrides.hidden_dropout = 0.0     # microbatches draw other dropout masks
    c.model.overrides.attention_dropout = 0.0
    c.train.steps = 30
    c.optim.lr = 5e-3  # one batch fitted repeatedly: the loss must fall well below its start
    c.sparsity.end_step, c.sparsity.update_every, c.sparsity.freeze_step = 10, 5, 20
    mesh = mesh_lib.make_mesh(8, 1, 1)
    local = _batch(c)
    run = build.build(c, mesh=mesh)
    teacher_before = jax.tree.map(np.array, run.teacher_params)
    batch = mesh_lib.global_batch(local, mesh)  # one batch, fitted repeatedly
    state, losses, metrics = run.state, [], {}
    for i in range(c.train.steps):
        state, m = run.step_fn(state, run.teacher_params, batch)
        if i == 0:
            metrics[1] = jax.device_get(m)
        losses.append(float(m["loss"]))
    assert run.step_fn._cache_size() == 1  # traced and compiled once for all 30 steps
    jax.tree.map(np.testing.assert_array_equal, teacher_before,
                 jax.tree.map(np.array, run.teacher_params))
    assert losses[-1] < 0.8 * losses[0], losses
    stats = masks_lib.sparsity_report(state.params, state.masks)
    assert stats["global"] == pytest.approx(c.sparsity.target, abs=1e-3)

    c.train.grad_accum = 2
    run = build.build(c, mesh=mesh)
    _, m = run.step_fn(run.state, run.teacher_params,
                       mesh_lib.global_batch(local, mesh, accum=2))
    metrics[2] = jax.device_get(m)
    assert metrics[2]["loss"] == pytest.approx(metrics[1]["loss"], rel=1e-5)
    assert metrics[2]["grad_norm"] == pytest.approx(metrics[1]["grad_norm"], rel=1e-4)
    c.train.grad_accum = 1
    c.model.dtype = "bfloat16"
    run = build.build(c, mesh=mesh)
    state, m = run.step_fn(run.state, run.teacher_params, mesh_lib.global_batch(local, mesh))
    assert np.isfinite(float(m["loss"]))
    assert float(m["loss"]) == pytest.approx(float(metrics[1]["loss"]), rel=0.05)
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(state.params))  # fp32 masters
