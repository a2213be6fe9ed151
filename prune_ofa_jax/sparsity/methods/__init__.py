"""Mask-learning methods behind one interface (base.Method): how masks are chosen, what the
forward sees, which weights train. One file per method:

- magnitude:     gradual magnitude pruning (GMP, today's Prune OFA default), |W| top-k;
- movement_hard: movement pruning, top-k of STE-trained scores, weights fine-tune;
- movement_soft: movement pruning, threshold on sigmoid(scores) + L1, weights fine-tune;
- adaprune:      Adapting by Pruning, frozen weights, sigmoid(t_l theta) masks, gamma push;
- supermask:     frozen weights, 1[score > 0.01] with STE (Zhao et al. 2020).

`from_config(config, regrow)` builds the run's method (train/build.py adds its scores to
the train state's aux slot).
"""

from __future__ import annotations

import warnings

from prune_ofa_jax.sparsity import patterns, schedules
from prune_ofa_jax.sparsity.methods import (adaprune, base, magnitude, movement_hard, movement_soft,
                                            supermask)

METHODS = {"magnitude": magnitude.Magnitude, "movement_hard": movement_hard.MovementHard,
           "movement_soft": movement_soft.MovementSoft, "adaprune": adaprune.AdaPrune,
           "supermask": supermask.Supermask}
DEPRECATED = ("uniform", "global")   # the old sparsity.method values = distributions
AUX_KEY = base.AUX_KEY


def resolve_name(sp) -> tuple[str, str]:
    """(method, distribution) of `config.sparsity`; the old `method=uniform|global` still
    works (magnitude with that distribution), with a FutureWarning saying what to write."""
    if sp.method in DEPRECATED:
        warnings.warn(
            f"config.sparsity.method={sp.method!r} is deprecated: it now names the pruning "
            f"method; write --config.sparsity.method=magnitude "
            f"--config.sparsity.distribution={sp.method}", FutureWarning, stacklevel=2)
        return "magnitude", sp.method
    return sp.method, sp.distribution


def frozen_weights(sp) -> bool:
    """sparsity.frozen_weights, or the method's default when unset (None)."""
    if sp.frozen_weights is not None:
        return bool(sp.frozen_weights)
    name, _ = resolve_name(sp)
    return sp.enabled and METHODS[name].frozen_default


def schedule(sp):
    return schedules.CubicSchedule(
        target=sp.target, initial=sp.initial, begin_step=sp.begin_step, end_step=sp.end_step,
        update_every=sp.update_every, freeze_step=sp.freeze_step)


def from_config(config, regrow: bool) -> base.Method:
    """The run's method. Without a pruning run (dense, or a locked pattern) the masks stay
    fixed (base.Method); `regrow` is the magnitude method's latent-weight switch."""
    sp = config.sparsity
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # said once, by validate
        name, distribution = resolve_name(sp)
        frozen = frozen_weights(sp)
    common = dict(frozen_weights=frozen, regrow=regrow)
    if not sp.enabled:
        return base.Method(**common)
    common.update(schedule=schedule(sp), distribution=distribution,
                  pattern=patterns.parse(sp.pattern))
    if name == "magnitude":
        return magnitude.Magnitude(**common)
    if name == "movement_hard":
        return movement_hard.MovementHard(**common, lr=sp.movement.lr, init=sp.movement.init)
    if name == "movement_soft":
        return movement_soft.MovementSoft(**common, lr=sp.movement.lr, init=sp.movement.init,
                                          threshold=sp.movement.threshold, l1=sp.movement.l1)
    if name == "adaprune":
        a = sp.adaprune
        return adaprune.AdaPrune(**common, target=sp.target, lr=a.lr, gamma=a.gamma,
                                 t_l=a.t_l, t_s=a.t_s, init_mean=a.init_mean,
                                 init_std=a.init_std)
    if name == "supermask":
        s = sp.supermask
        return supermask.Supermask(**common, target=sp.target, lr=s.lr, threshold=s.threshold,
                                   init_scale=s.init_scale)
    raise ValueError(f"config.sparsity.method: {name!r} is not one of {sorted(METHODS)}")
