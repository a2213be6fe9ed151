"""Skip a bad step instead of dying (train/guards.py, `train.skip_nonfinite`): a non-finite loss
or grad norm leaves params, optimizer state and masks unchanged inside the same jitted
(donating) computation, advances the step and data position, and is counted in the metrics;
the loop stops only after `train.max_consecutive_skips` skipped steps in a row."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
import train_helpers

from prune_ofa_jax import checkpoint as ckpt_lib
from prune_ofa_jax import jsonio
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.train import guards, inputs, loop
from prune_ofa_jax.train.state import TrainState


def _toy_run():
    """A tiny state and a jitted, donating step whose loss is the batch's sum."""
    mesh = mesh_lib.make_mesh(8, 1, 1)
    tx = optax.adam(0.1)
    params = {"w": jnp.arange(16.0).reshape(8, 2), "b": jnp.ones(2)}
    state = TrainState.create(params, tx, {"w": jnp.ones((8, 2), bool), "b": None})
    shardings = mesh_lib.replicated(mesh, state)
    state = jax.jit(lambda s: s, out_shardings=shardings)(state)

    def step(state, teacher_params, batch):
        loss = jnp.sum(batch["x"])
        grads = jax.tree.map(lambda p: p * loss, state.params)
        updates, opt = tx.update(grads, state.opt_state, state.params)
        return state.replace(step=state.step + 1, params=optax.apply_updates(
            state.params, updates), opt_state=opt, masks={"w": state.masks["w"] & (
                state.params["w"] > 3), "b": None}, data_position=state.data_position + 1), {
            "loss": loss, "grad_norm": optax.tree.norm(grads)}
    jitted = jax.jit(step, out_shardings=(shardings, None), donate_argnums=0)
    return types.SimpleNamespace(step_fn=jitted, state_shardings=shardings), state


def test_a_nonfinite_step_keeps_the_state_and_counts_the_skip():
    run, state = _toy_run()
    guarded = guards.skip_nonfinite(run)
    # copies: on CPU a numpy view of a device buffer would keep JAX from donating it
    host = lambda s: jax.tree.map(lambda x: np.array(x, copy=True), jax.device_get(s))  # noqa
    before = host(state)
    state, m = guarded(state, None, {"x": jnp.ones(4)})
    assert float(m[guards.SKIPPED]) == 0.0 and int(state.step) == 1
    assert not np.array_equal(host(state).params["w"], before.params["w"])
    good = host(state)
    old_leaf = state.params["w"]
    state, m = guarded(state, None, {"x": jnp.array([1.0, np.nan, 0.0, 0.0])})
    assert old_leaf.is_deleted()  # the state was donated, the old values kept inside
    assert float(m[guards.SKIPPED]) == 1.0 and not np.isfinite(float(m["loss"]))
    after = host(state)
    assert int(after.step) == 2 and int(after.data_position) == 2  # the batch is consumed
    jax.tree.map(np.testing.assert_array_equal, (after.params, after.opt_state, after.masks),
                 (good.params, good.opt_state, good.masks))
    with pytest.raises(Exception, match="skip_nonfinite"):
        guards.skip_nonfinite(types.SimpleNamespace(step_fn=lambda *a: a, state_shardings=None))


def test_the_loop_skips_bad_steps_and_stops_after_too_many_in_a_row(tiny_ckpts, tmp_path,
                                                                      monkeypatch):
    """NaN at steps 3, 5 and 6 with max_consecutive_skips=1: step 3 is skipped (its
    checkpoint holds step 3's params with the step counter at 4), step 5 too, and step 6,
    the second in a row, stops the run naming steps 5-6."""
    c = train_helpers.recipe("teacher_prep", "test", init=tiny_ckpts["bert"])
    c.update_from_flattened_dict({"train.steps": 8, "train.log_every": 4,
                                  "checkpoint.every": 1, "checkpoint.keep": 8,
                                  "train.skip_nonfinite": True,
                                  "train.max_consecutive_skips": 1})
    real = inputs.make_sources

    def poisoned(cfg):
        src = real(cfg)
        batch = src.train.batch

        def nan_at(step):
            out = dict(batch(step))
            if step in (3, 5, 6):
                out["masked_lm_weights"] = np.full_like(out["masked_lm_weights"], np.nan)
            return out
        src.train.batch = nan_at
        return src
    monkeypatch.setattr(inputs, "make_sources", poisoned)
    with pytest.raises(loop.NonFiniteLossError, match=r"at steps 5-6 \(2 in a row, more than "
                       r"train.max_consecutive_skips=1\)"):
        loop.run(c, tmp_path)
    manager = ckpt_lib.make_manager(tmp_path / "checkpoints", keep=8)
    assert manager.all_steps() == [1, 2, 3, 4, 5, 6]  # step 6 (the 6th) is the last kept

    def saved(step):
        return manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore()))["state"]
    s3, s4, s5 = saved(3), saved(4), saved(5)
    assert int(s4["step"]) == 4 and int(s4["data_position"]) == 4
    jax.tree.map(np.testing.assert_array_equal, (s3["params"], s3["opt_state"]),
                 (s4["params"], s4["opt_state"]))
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(s4["params"]),
                                                        jax.tree.leaves(s5["params"])))
    logged = {m["step"]: m for m in map(jsonio.loads_strict,
                                        (tmp_path / "metrics.jsonl").open())}
    assert logged[4]["skipped"] == 1.0 and logged[4]["grad_norm"] is None  # step 3
    assert logged[6]["skipped"] == 1.0 and 7 not in logged  # step 5; step 6 stopped the run
    assert "step 3 skipped (train.skip_nonfinite)" in (tmp_path / "log.txt").read_text()
