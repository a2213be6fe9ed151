"""Sparsity schedules: frozen dataclasses evaluated on a traced step (no retrace, no `if`).

Every schedule has `sched(step) -> float32 sparsity` and `sched.is_update_step(step) ->
bool`, both jnp scalars for an int (python or traced) step. The train step recomputes
masks under `lax.cond(sched.is_update_step(step), ...)` with `sched(step)`.

- `CubicSchedule` (Zhu & Gupta 2017, Prune OFA):
  s(t) = target + (initial - target) * (1 - (t - begin) / (end - begin))**3 on
  [begin, end], `target` after end, 0.0 before begin (nothing is pruned yet).
  Updates at begin, begin + k*update_every, and at end itself (so the target is reached
  even when end - begin is no multiple of update_every), for steps < freeze_step only.
  freeze_step defaults to end + 1: masks are fixed right after the final update. A
  later freeze_step keeps re-selecting masks at the target sparsity every update_every
  steps (useful in regrow mode) until it.
- `OneShot(target, step)`: 0.0 before `step`, target from it on; one update, at `step`.
- `Constant(target)`: target at every step; never an update step (fixed masks, e.g.
  pattern-locked fine-tuning with masks from `masks.masks_from_nonzero`).
"""

import dataclasses
from typing import Optional, Union

import jax
import jax.numpy as jnp


def _check_target(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def _check_step(name: str, value: int, minimum: int = 0, why: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{why}, got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CubicSchedule:
    """Zhu-Gupta cubic ramp from `initial` at begin_step to `target` at end_step."""

    target: float
    initial: float = 0.0
    begin_step: int = 0
    end_step: int
    update_every: int
    freeze_step: Optional[int] = None

    def __post_init__(self):
        _check_target("target", self.target)
        _check_target("initial", self.initial)
        if self.initial > self.target:
            raise ValueError(f"initial ({self.initial}) must be <= target ({self.target})")
        _check_step("begin_step", self.begin_step)
        _check_step("end_step", self.end_step, self.begin_step + 1, " (> begin_step)")
        _check_step("update_every", self.update_every, 1)
        if self.freeze_step is not None:
            _check_step("freeze_step", self.freeze_step, self.end_step + 1,
                        " (> end_step, so the final update at end_step happens)")

    @property
    def last_update_step(self) -> int:
        """Masks never change after this step."""
        freeze = self.end_step + 1 if self.freeze_step is None else self.freeze_step
        last = self.begin_step + (freeze - 1 - self.begin_step) // self.update_every * (
            self.update_every)
        return max(last, self.end_step)

    def __call__(self, step) -> jax.Array:
        t = jnp.asarray(step, jnp.float32)
        frac = jnp.clip((t - self.begin_step) / (self.end_step - self.begin_step), 0.0, 1.0)
        s = self.target + (self.initial - self.target) * (1.0 - frac) ** 3
        return jnp.where(t < self.begin_step, 0.0, s).astype(jnp.float32)

    def is_update_step(self, step) -> jax.Array:
        step = jnp.asarray(step, jnp.int32)
        freeze = self.end_step + 1 if self.freeze_step is None else self.freeze_step
        on_grid = (step - self.begin_step) % self.update_every == 0
        return (step >= self.begin_step) & (step < freeze) & (on_grid | (step == self.end_step))


@dataclasses.dataclass(frozen=True)
class OneShot:
    """Prune to `target` at `step` (0.0 before), masks fixed afterwards."""

    target: float
    step: int = 0

    def __post_init__(self):
        _check_target("target", self.target)
        _check_step("step", self.step)

    def __call__(self, step) -> jax.Array:
        step = jnp.asarray(step, jnp.int32)
        return jnp.where(step >= self.step, self.target, 0.0).astype(jnp.float32)

    def is_update_step(self, step) -> jax.Array:
        return jnp.asarray(step, jnp.int32) == self.step


@dataclasses.dataclass(frozen=True)
class Constant:
    """A fixed sparsity (reported) with fixed masks: never an update step."""

    target: float

    def __post_init__(self):
        _check_target("target", self.target)

    def __call__(self, step) -> jax.Array:
        return jnp.full(jnp.shape(step), self.target, jnp.float32)

    def is_update_step(self, step) -> jax.Array:
        return jnp.zeros(jnp.shape(step), bool)


Schedule = Union[CubicSchedule, OneShot, Constant]
