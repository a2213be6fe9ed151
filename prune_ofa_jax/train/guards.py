"""Skip a bad step instead of stopping the run (`--config.train.skip_nonfinite`).

`skip_nonfinite(run)` wraps the run's jitted step in one more jitted computation: the step
runs as usual; when its loss or gradient norm is not finite, the new state is replaced, leaf
by leaf inside the same computation (`jnp.where`), by the old one, so params, optimizer
state, masks, QAT ranges and trainable extras stay as they were. The step counter and the
data position still advance: the batch is consumed, and the next step gets the next batch
(the LR and sparsity schedules move on with the step). The metrics gain `skipped` (1.0 for
a skipped step, else 0.0); the loop counts consecutive skips on the host and stops after
`train.max_consecutive_skips` of them (train/loop.py).

The old state must live until the selection, inside the computation that donates it: the
wrapper is jitted with `donate_argnums=0` itself (a donation of the inner jit does not
apply once it is inlined), and peak device memory may grow by up to one copy of the state.
With skip_nonfinite off the run's own step is used unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from prune_ofa_jax import errors

SKIPPED = "skipped"


def _finite(metrics: dict) -> jax.Array:
    return jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])


def keep_if_finite(step_fn):
    """(state, teacher_params, batch) -> (state, metrics): `step_fn`'s, or the old state
    (step and data position advanced) when its loss or grad norm is not finite."""
    def guarded(state, teacher_params, batch):
        new, metrics = step_fn(state, teacher_params, batch)
        ok = _finite(metrics)
        kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
        kept = kept.replace(step=new.step, data_position=new.data_position)
        return kept, {**metrics, SKIPPED: jnp.where(ok, 0.0, 1.0).astype(jnp.float32)}
    return guarded


def skip_nonfinite(run):
    """The run's step wrapped by keep_if_finite, jitted with the run's state shardings."""
    step_fn = run.step_fn
    if not hasattr(step_fn, "lower"):  # a precompiled step (the NAS supernet's buckets)
        raise errors.ConfigError(
            f"config.train.skip_nonfinite: this run's step ({type(step_fn).__name__}) is not a "
            "jitted function that can be wrapped; set it False")
    return jax.jit(keep_if_finite(step_fn), out_shardings=(run.state_shardings, None),
                   donate_argnums=0)
