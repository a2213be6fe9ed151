"""Trainable extras beside the model ("aux"): pytrees that a feature trains together with the
student, e.g. the scores of a learned-mask method or the critic of a mutual-information
objective. Each feature contributes a `Part` under its own name; the train state holds
`aux = {name: value}` and one optimizer state for all of them (`combine`). They are saved in
checkpoints (exact resume) and never exported: the final model is `state.params` alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


@dataclasses.dataclass(frozen=True)
class Part:
    """value: the initial pytree; shardings: a NamedSharding per leaf (None: replicated);
    tx: the optimizer of this part (its own learning rate, decay, ...)."""
    value: Any
    tx: optax.GradientTransformation
    shardings: Any = None


def combine(parts: dict, mesh) -> tuple[dict, optax.GradientTransformation, dict]:
    """(aux value, one transform over the whole aux dict, aux shardings) from named parts."""
    value = {k: p.value for k, p in parts.items()}
    replicated = NamedSharding(mesh, P())
    shardings = {k: (jax.tree.map(lambda _: replicated, p.value) if p.shardings is None
                     else p.shardings) for k, p in parts.items()}
    if not parts:
        return value, optax.identity(), shardings
    # Labels as a pytree, not a callable: optax.tree_map_params (the aux optimizer state's
    # shardings) calls init on a placeholder object that a callable could not walk.
    labels = {k: jax.tree.map(lambda _, k=k: k, v) for k, v in value.items()}
    return value, optax.multi_transform({k: p.tx for k, p in parts.items()}, labels), shardings
