"""Sparsity schedules: cubic values, update steps, freezing, validation, no retracing."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prune_ofa_jax.sparsity import exact_topk
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.sparsity import schedules


def cubic(t, target, initial, t0, t1):
    return target + (initial - target) * (1 - (t - t0) / (t1 - t0)) ** 3


@pytest.mark.parametrize("initial", [0.0, 0.2])
def test_cubic_values(initial):
    sched = schedules.CubicSchedule(target=0.9, initial=initial, begin_step=10, end_step=110,
                                    update_every=10, freeze_step=150)
    values = {t: float(sched(t)) for t in (0, 9, 10, 60, 85, 110, 149, 150, 10_000)}
    assert values[0] == values[9] == 0.0  # nothing pruned before begin_step
    assert values[10] == pytest.approx(initial, abs=1e-7)
    assert values[60] == pytest.approx(cubic(60, 0.9, initial, 10, 110), rel=1e-6)
    assert values[85] == pytest.approx(cubic(85, 0.9, initial, 10, 110), rel=1e-6)
    if initial == 0.0:
        assert values[60] == pytest.approx(0.9 * (1 - 0.5**3), rel=1e-6)
    for t in (110, 149, 150, 10_000):
        assert values[t] == np.float32(0.9)  # exactly the target from end_step on
    ramp = [float(sched(t)) for t in range(10, 111)]
    assert all(a <= b for a, b in zip(ramp, ramp[1:]))
    assert sched(jnp.int32(60)).dtype == jnp.float32


def test_cubic_update_steps_and_freeze():
    sched = schedules.CubicSchedule(target=0.9, begin_step=10, end_step=110, update_every=10,
                                    freeze_step=150)
    steps = [t for t in range(400) if bool(sched.is_update_step(t))]
    assert steps == list(range(10, 150, 10))  # ramp updates, then re-selection until freeze
    assert sched.last_update_step == 140
    # Default freeze = end_step + 1; end_step off the grid still gets its final update.
    ragged = schedules.CubicSchedule(target=0.5, end_step=25, update_every=10)
    assert [t for t in range(100) if bool(ragged.is_update_step(t))] == [0, 10, 20, 25]
    assert ragged.last_update_step == 25
    traced = jax.jit(jax.vmap(sched.is_update_step))(jnp.arange(400, dtype=jnp.int32))
    assert np.nonzero(np.asarray(traced))[0].tolist() == steps


def test_one_shot_and_constant():
    one = schedules.OneShot(target=0.8, step=5)
    assert [float(one(t)) for t in (0, 4, 5, 100)] == [0.0, 0.0, np.float32(0.8), np.float32(0.8)]
    assert [t for t in range(50) if bool(one.is_update_step(t))] == [5]
    const = schedules.Constant(0.7)
    assert float(const(jnp.int32(3))) == np.float32(0.7)
    assert not any(bool(const.is_update_step(t)) for t in range(50))


@pytest.mark.parametrize("make,field", [
    (lambda: schedules.CubicSchedule(target=1.0, end_step=10, update_every=1), "target"),
    (lambda: schedules.CubicSchedule(target=-0.1, end_step=10, update_every=1), "target"),
    (lambda: schedules.CubicSchedule(target=0.5, initial=0.6, end_step=10, update_every=1),
     "initial"),
    (lambda: schedules.CubicSchedule(target=0.5, begin_step=10, end_step=10, update_every=1),
     "end_step"),
    (lambda: schedules.CubicSchedule(target=0.5, end_step=10, update_every=0), "update_every"),
    (lambda: schedules.CubicSchedule(target=0.5, end_step=10, update_every=1, freeze_step=5),
     "freeze_step"),
    (lambda: schedules.OneShot(target=1.5, step=3), "target"),
    (lambda: schedules.OneShot(target=0.5, step=-1), "step"),
    (lambda: schedules.Constant(1.0), "target"),
])
def test_bad_configs_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_schedule_with_masks_under_cond_traces_once():
    rng = np.random.default_rng(0)
    params = {"encoder": {"layer_0": {"ffn": {
        "intermediate": {"kernel": jnp.asarray(rng.standard_normal((8, 16)), jnp.float32),
                         "bias": jnp.zeros((16,))}}}}}
    masks = masks_lib.init_masks(params, include=(r"kernel$",))
    sched = schedules.CubicSchedule(target=0.75, begin_step=2, end_step=8, update_every=2)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step_fn(params, masks, step):
        sparsity = sched(step)
        masks = jax.lax.cond(sched.is_update_step(step),
                             lambda: masks_lib.magnitude_masks(params, masks, sparsity),
                             lambda: masks)
        return masks_lib.apply_masks(params, masks), masks

    pruned = []
    for step in range(10):
        _, masks = step_fn(params, masks, jnp.asarray(step, jnp.int32))
        pruned.append(128 - int(masks["encoder"]["layer_0"]["ffn"]["intermediate"]["kernel"].sum()))
    # Masks change only at update steps 2, 4, 6, 8 and follow the cubic ramp (exact counts).
    expected, current = [], 0
    for step in range(10):
        if bool(sched.is_update_step(step)):
            current = 128 - exact_topk.host_kept_count(128, float(sched(step)))
        expected.append(current)
    assert pruned == expected
    assert pruned[-1] == 96 and len(set(pruned)) == 4  # 0, s(4), s(6), 0.75
