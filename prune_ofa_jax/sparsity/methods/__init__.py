"""Mask-learning methods behind one interface (base.Method): how masks are chosen, what the
forward sees, which weights train. One file per method, each registering itself under its
`config.sparsity.method` name with its config block and its own check (base.register):

- magnitude:     gradual magnitude pruning (GMP, today's Prune OFA default), |W| top-k;
- movement_hard: movement pruning, top-k of STE-trained scores, weights fine-tune;
- movement_soft: movement pruning, threshold on sigmoid(scores) + L1, weights fine-tune;
- adaprune:      Adapting by Pruning, frozen weights, sigmoid(t_l theta) masks, gamma push;
- supermask:     frozen weights, 1[score > 0.01] with STE (Zhao et al. 2020);
- random_mask:   a seeded random top-k, frozen weights: the learned masks' baseline.

A new method is one file in this folder (every module here is imported below, so the file
registers itself by being there), or a class in a user's own code, decorated with
`@methods.register("name")`; `--config.sparsity.method=name` then runs it. `check(config)`
validates `config.sparsity` against the registry and the method's own check;
`from_config(config, regrow)` builds the run's method (train/build.py adds its scores to the
train state's aux slot).
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings

from prune_ofa_jax import errors
from prune_ofa_jax.sparsity import patterns, schedules
from prune_ofa_jax.sparsity.methods import base

for _module in pkgutil.iter_modules(__path__):  # each method module registers its class
    importlib.import_module(f"{__name__}.{_module.name}")

AUX_KEY = base.AUX_KEY
DEFAULT = "magnitude"                # the one method that runs without sparsity.enabled
DEPRECATED = base.DEPRECATED         # the old sparsity.method values = distributions
REGISTRY = base.REGISTRY
Method = base.Method
register = base.register
config_blocks = base.config_blocks


def resolve_name(sp) -> tuple[str, str]:
    """(method, distribution) of `config.sparsity`; the old `method=uniform|global` still
    works (magnitude with that distribution), with a FutureWarning saying what to write."""
    if sp.method in DEPRECATED:
        warnings.warn(
            f"config.sparsity.method={sp.method!r} is deprecated: it now names the pruning "
            f"method; write --config.sparsity.method=magnitude "
            f"--config.sparsity.distribution={sp.method}", FutureWarning, stacklevel=2)
        return DEFAULT, sp.method
    return sp.method, sp.distribution


def frozen_weights(sp) -> bool:
    """sparsity.frozen_weights, or the method's default when unset (None)."""
    if sp.frozen_weights is not None:
        return bool(sp.frozen_weights)
    name, _ = resolve_name(sp)
    return sp.enabled and REGISTRY[name].frozen_default


def schedule(sp):
    return schedules.CubicSchedule(
        target=sp.target, initial=sp.initial, begin_step=sp.begin_step, end_step=sp.end_step,
        update_every=sp.update_every, freeze_step=sp.freeze_step)


def check(config) -> None:
    """errors.ConfigError naming the key: sparsity.method is registered (or a deprecated
    spelling, with its FutureWarning), the distribution is known, a method other than the
    default runs in a pruning run, and the method's own check passes."""
    sp = config.sparsity
    if sp.method not in REGISTRY and sp.method not in DEPRECATED:
        raise errors.ConfigError(REGISTRY.unknown(sp.method))
    name, distribution = resolve_name(sp)
    base.require(distribution in base.DISTRIBUTIONS, "sparsity.distribution",
                 f"{distribution!r} is not one of {base.DISTRIBUTIONS}")
    base.require(name == DEFAULT or sp.enabled, "sparsity.enabled",
                 f"sparsity.method={name!r} prunes in a pruning run only: set "
                 "--config.sparsity.enabled=True (and, in a fine-tuning recipe, "
                 "--config.sparsity.lock_pattern=False)")
    REGISTRY.check(config, name)


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
    return REGISTRY[name].from_sparsity(sp, **common)
