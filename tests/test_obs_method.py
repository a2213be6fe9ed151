"""OBS as a pruning method (sparsity/methods/second_order.py) and the generic hooks it uses:
the Fisher is collected in the window before each prune and reset by it, a prune equals
obs.prune on that Fisher, recomputation splits a jump; the same masks on 1 device and on
8 (data parallel x FSDP) with KD; an exact resume in the middle of a window, with QAT, and
exact zeros in the exported model; a checkpoint of the state without method_state restores;
config errors. (The OBS maths against numpy: tests/test_obs.py; GMP through the hooks bit
for bit: tests/test_mask_method_runs.py.)"""

import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import train_helpers

from prune_ofa_jax import checkpoint as ckpt_lib
from prune_ofa_jax import errors
from prune_ofa_jax.convert import params_ckpt
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.sparsity import exact_topk
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.sparsity import methods, obs, schedules
from prune_ofa_jax.sparsity.methods import second_order
from prune_ofa_jax.train import build, synthetic, validate
from prune_ofa_jax.train.state import TrainState

SHAPES = {"a": (10, 3), "b": (6, 8)}


def _run_hooks(method, steps, seed=0):
    """The step's hook order on a toy (no model): prune, then observe the step's gradient.
    Returns per step (params, masks, Fisher count) and the gradients used."""
    rng = np.random.default_rng(seed)
    params = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in SHAPES.items()}
    masks = {k: jnp.ones(s, bool) for k, s in SHAPES.items()}
    state = method.init_state(masks)
    grads = [{k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in SHAPES.items()}
             for _ in range(steps)]

    @jax.jit
    def step(params, masks, state, g, t):
        params, masks, state = method.prune(params, masks, state, t)
        return params, masks, method.observe(state, g, masks, t)

    out = []
    for t in range(steps):
        params, masks, state = step(params, masks, state, grads[t], t)
        out.append((params, masks, int(state.count)))
    return out, grads


def _pruned(masks) -> int:
    return int(sum((~np.asarray(m)).sum() for m in masks.values()))


def _uniform(sparsity) -> int:
    """Weights pruned at `sparsity` per tensor (GMP's exact counts)."""
    return sum(int(np.prod(s)) - exact_topk.host_kept_count(int(np.prod(s)), sparsity)
               for s in SHAPES.values())


def test_window_prune_reset_and_recompute_match_obs_prune():
    sched = schedules.CubicSchedule(target=0.5, initial=0.25, begin_step=3, end_step=5,
                                    update_every=2, freeze_step=6)
    m = second_order.OBS(schedule=sched, block_size=8, num_grads=2, damp=0.05)
    hist, grads = _run_hooks(m, 7)
    # gradients of steps 1-2 (before the prune at 3) and 3-4 (before 5), none after
    assert [c for _, _, c in hist] == [0, 1, 2, 1, 2, 0, 0]
    q, h = _uniform(0.25), _uniform(0.5)
    assert [_pruned(mk) for _, mk, _ in hist] == [0, 0, 0, q, q, h, h]
    # the prune at step 3 is obs.prune on the Fisher of exactly those two gradients
    masks0 = {k: jnp.ones(s, bool) for k, s in SHAPES.items()}
    fisher = obs.accumulate(obs.accumulate(obs.init(masks0, 8), grads[1]), grads[2])
    want_p, want_m = jax.jit(obs.prune)(hist[2][0], fisher, masks0, sched(3), 0.05)
    jax.tree.map(np.testing.assert_array_equal, hist[3][1], want_m)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7),
                 hist[3][0], want_p)
    for p, mk, _ in hist:  # pruned weights exactly 0 after every step
        assert all(np.all(np.asarray(p[k])[~np.asarray(mk[k])] == 0.0) for k in SHAPES)
    # recompute 2, one gradient each: the jump to 0.25 at step 3 is made at steps 2 and 3
    r = second_order.OBS(schedule=sched, block_size=8, num_grads=1, damp=0.05, recompute=2)
    hist_r, grads_r = _run_hooks(r, 4)
    assert [_pruned(mk) for _, mk, _ in hist_r] == [0, 0, _uniform(0.125), q]
    assert [c for _, _, c in hist_r] == [0, 1, 1, 1]  # step 3: the window of 5 begins
    f2 = obs.accumulate(obs.init(hist_r[2][1], 8), grads_r[2])  # fresh: only step 2's
    want_p, want_m = jax.jit(obs.prune)(hist_r[2][0], f2, hist_r[2][1], sched(3), 0.05)
    jax.tree.map(np.testing.assert_array_equal, hist_r[3][1], want_m)


def test_chunked_block_maths_are_the_whole_array_maths(monkeypatch):
    """obs runs its factorisations in cache-sized chunks of blocks (lax.map, then a tail):
    saliency and update equal the whole-array computation bit for bit."""
    rng = np.random.default_rng(5)
    w = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in SHAPES.items()}
    old = {k: jnp.asarray(rng.random(s) > 0.2) for k, s in SHAPES.items()}
    new = {k: old[k] & jnp.asarray(rng.random(s) > 0.5) for k, s in SHAPES.items()}
    grads = [{k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in SHAPES.items()}
             for _ in range(3)]
    fisher = obs.init(old, 8)
    for g in grads:
        fisher = obs.accumulate(fisher, g)

    def both():
        """Saliency and update jitted, as obs.prune runs them (one compile instead of
        hundreds of eager ones), traced afresh so that CHUNK_BYTES is read now."""
        fn = lambda w, f, o, n: (obs.saliency(w, f, o, 0.05),  # noqa: E731
                                 obs.update(w, f, o, n, 0.05))
        return jax.jit(fn)(w, fisher, old, new)

    whole = both()
    # leaves of 4 and 6 blocks: chunks of 2 (no tail), then chunks of 4 (b: one + a tail of 2)
    monkeypatch.setattr(obs, "CHUNK_BYTES", 4 * 8 * 8 * 2)
    jax.tree.map(np.testing.assert_array_equal, both(), whole)
    monkeypatch.setattr(obs, "CHUNK_BYTES", 4 * 8 * 8 * 4)
    jax.tree.map(np.testing.assert_array_equal, both(), whole)


@pytest.fixture(scope="module")
def one_layer_bert(tmp_path_factory) -> str:
    """train_helpers.save_tiny's BERT (real 30522 vocab) with one layer: the OBS steps below
    compile for these tests alone, and each layer's kernels add their own Fisher update and
    blockwise prune to the program."""
    mcfg = model_config.by_name("bert-base-uncased", **{**train_helpers.TINY, "num_layers": 1},
                                num_labels=2)
    directory = tmp_path_factory.mktemp("one_layer") / "bert"
    params = bert.init_params(bert.BertFamily(mcfg, "pretraining"), jax.random.key(0))
    params_ckpt.save_params(directory, params, mcfg, "pretraining")
    return str(directory)


def _obs_upstream(init_dir):
    """prune_ofa_bert_base:test (KD from a teacher) with OBS: a prune to 30 % at step 1 on
    the Fisher of step 0's gradient."""
    c = train_helpers.recipe("prune_ofa_bert_base", "test", init=init_dir, teacher=init_dir)
    c.model.overrides.num_layers = 1  # the checkpoint's
    c.sparsity.update_from_flattened_dict({
        "method": "obs", "initial": 0.3, "target": 0.6, "begin_step": 1, "end_step": 3,
        "update_every": 1, "freeze_step": 4, "obs.num_grads": 1, "obs.block_size": 16})
    return c


def test_same_masks_on_1_device_dp_and_fsdp(one_layer_bert):
    c = _obs_upstream(one_layer_bert)
    meshes = {"single": mesh_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1]),
              "dp2_fsdp4": mesh_lib.make_mesh(2, 4, 1)}
    masks, losses = {}, {}
    for key, mesh in meshes.items():
        run = build.build(c, mesh=mesh)
        state, losses[key] = run.state, []
        for step in range(2):
            batch = mesh_lib.global_batch(synthetic.batch(
                "pretraining", 16, 32, 30522, max_predictions=5, seed=step), mesh)
            state, m = run.step_fn(state, run.teacher_params, batch)
            losses[key].append(float(m["loss"]))
        masks[key] = jax.device_get(state.masks)
        if key == "dp2_fsdp4":  # no device holds a whole Fisher leaf
            for leaf in jax.tree.leaves(state.method_state.sums):
                assert {s.data.shape[0] for s in leaf.addressable_shards} == {
                    leaf.shape[0] // 8}
    jax.tree.map(np.testing.assert_array_equal, masks["dp2_fsdp4"], masks["single"])
    np.testing.assert_allclose(losses["dp2_fsdp4"], losses["single"], rtol=0, atol=1e-5)
    leaves = jax.tree.leaves(masks["single"])
    kept = sum(int(x.sum()) for x in leaves)
    assert kept == pytest.approx(0.7 * sum(x.size for x in leaves), rel=1e-2)


def test_exact_resume_mid_window_with_qat_and_exact_zeros(one_layer_bert, tmp_path):
    """QAT fine-tune turned into an OBS run (window steps 2-5 before the prune at 6): the
    state saved after step 4 (the Fisher holds two gradients) and restored onto a fresh
    build continues bit-identically to the straight run; pruned weights are exactly 0."""
    c = train_helpers.recipe("qat", "sst2,test", init=one_layer_bert)
    c.update_from_flattened_dict({
        "model.overrides.num_layers": 1,  # the checkpoint's
        "sparsity.lock_pattern": False, "sparsity.enabled": True, "sparsity.method": "obs",
        "sparsity.target": 0.5, "sparsity.initial": 0.5, "sparsity.begin_step": 6,
        "sparsity.end_step": 7, "sparsity.update_every": 1, "sparsity.freeze_step": 8,
        "sparsity.obs.num_grads": 4, "sparsity.obs.block_size": 16})
    mesh = mesh_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    run = build.build(c, mesh=mesh)
    batches = [mesh_lib.global_batch(synthetic.batch("cls", 16, 32, 30522, num_labels=2,
                                                     seed=i), mesh) for i in range(8)]
    manager = ckpt_lib.make_manager(tmp_path / "ckpt", async_save=False)
    state = run.state
    for i in range(8):
        state, _ = run.step_fn(state, None, batches[i])
        if i == 3:
            assert int(state.method_state.count) == 2  # in the middle of the window
            ckpt_lib.save(manager, 4, state, {"signature": {}})
            manager.wait_until_finished()
    resumed = ckpt_lib.restore(manager, state).state  # (state: its shapes and shardings)
    assert int(resumed.step) == 4 and int(resumed.method_state.count) == 2
    for i in range(4, 8):
        resumed, _ = run.step_fn(resumed, None, batches[i])
    for key in ("params", "masks", "opt_state", "quant_stats", "method_state"):
        jax.tree.map(np.testing.assert_array_equal, getattr(state, key), getattr(resumed, key))
    leaves = [m for m in jax.tree.leaves(state.masks)]
    assert sum(int((~m).sum()) for m in leaves) == pytest.approx(
        0.5 * sum(m.size for m in leaves), abs=len(leaves))
    for w, m in zip(jax.tree.leaves(masks_lib.mask_like(state.params, state.masks)), leaves):
        assert np.all(np.asarray(w)[~np.asarray(m)] == 0.0)


@flax.struct.dataclass
class _StateBefore:
    """TrainState as it was before method_state (a flax.struct dataclass)."""
    step: jax.Array
    params: object
    opt_state: object
    masks: object
    quant_stats: object
    data_position: jax.Array
    aux: object = flax.struct.field(default_factory=dict)
    aux_opt_state: object = flax.struct.field(default_factory=dict)


def test_a_checkpoint_without_method_state_restores(tiny_ckpts, tmp_path):
    c = train_helpers.recipe("finetune_glue", "sst2,test", init=tiny_ckpts["bert"])
    run = build.build(c, mesh=mesh_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    assert run.state.method_state == {}
    fields = {k: getattr(run.state, k) for k in _StateBefore.__dataclass_fields__}
    old = _StateBefore(**fields)
    paths = lambda t: [jax.tree_util.keystr(k) for k, _ in  # noqa: E731
                       jax.tree_util.tree_leaves_with_path(t)]
    assert paths(old) == paths(run.state)  # the same tree, so the same checkpoint
    manager = ckpt_lib.make_manager(tmp_path / "ckpt", async_save=False)
    ckpt_lib.save(manager, 3, old, {"signature": {}})
    manager.wait_until_finished()
    restored = ckpt_lib.restore(manager, run.state)
    assert isinstance(restored.state, TrainState) and restored.state.method_state == {}
    jax.tree.map(np.testing.assert_array_equal, restored.state.params, run.state.params)


def test_config_errors_name_the_key():
    c = train_helpers.recipe("finetune_glue", "sst2,test")
    c.sparsity.update_from_flattened_dict({"lock_pattern": False, "enabled": True,
                                           "method": "obs", "target": 0.5, "end_step": 4})
    validate.validate(c)
    m = methods.from_config(c, regrow=True)
    assert isinstance(m, second_order.OBS) and not m.keeps_latent  # never dense latents
    assert (m.block_size, m.num_grads, m.damp, m.recompute) == (50, 64, 0.01, 1)
    for over, match in (({"obs.damp": 1e-7}, r"config\.sparsity\.obs\.damp: must be >= "),
                        ({"obs.num_grads": 0}, r"config\.sparsity\.obs\.num_grads"),
                        ({"frozen_weights": True}, r"config\.sparsity\.frozen_weights"),
                        ({"pattern": "2:4"}, r"config\.sparsity\.pattern")):
        bad = c.copy_and_resolve_references()
        bad.sparsity.update_from_flattened_dict(over)
        with pytest.raises(errors.ConfigError, match=match):
            validate.validate(bad)
