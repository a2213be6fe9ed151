"""The train state: everything a run needs to resume exactly (the teacher is never in it)."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class TrainState:
    """params: latent weights; masks: bool tree beside them (None = never pruned);
    quant_stats: QAT EMA ranges ({} when QAT is off); data_position: index of the next
    global batch the data source serves (one per step, all microbatches included), saved so
    a resumed run continues the identical stream.

    aux: trainable extras beside the model, name -> pytree (e.g. learned-mask scores, MI
    critics). They are differentiated with the params in the same loss, updated by
    `aux_tx` (train/aux.py), saved in checkpoints and never exported. {} when a run has none.

    method_state: the pruning method's own state that is NOT trained (e.g. OBS's running
    Fisher and its count): the method updates it from each step's gradients
    (`Method.observe`) and uses it at its update steps (`Method.prune`); checkpointed for an
    exact resume, never exported, never differentiated. {} for every other method.

    A pytree whose children are the fields, keyed by name as a flax.struct dataclass keys
    them, except that an empty method_state is no node of the tree at all: the state of
    every method without such state (and so its checkpoints) is the tree it was before the
    field existed, and those checkpoints restore onto it.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    masks: Any
    quant_stats: Any
    data_position: jax.Array
    aux: Any = dataclasses.field(default_factory=dict)
    aux_opt_state: Any = dataclasses.field(default_factory=dict)
    method_state: Any = dataclasses.field(default_factory=dict)

    def replace(self, **updates) -> "TrainState":
        return dataclasses.replace(self, **updates)

    @classmethod
    def create(cls, params, tx, masks, quant_stats=None, aux=None,
               aux_tx: Optional[optax.GradientTransformation] = None,
               method_state=None) -> "TrainState":
        aux = aux if aux is not None else {}
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                   masks=masks, quant_stats=quant_stats if quant_stats is not None else {},
                   data_position=jnp.zeros((), jnp.int32), aux=aux,
                   aux_opt_state=aux_tx.init(aux) if aux_tx is not None and aux else {},
                   method_state=method_state if method_state is not None else {})


_FIELDS = tuple(f.name for f in dataclasses.fields(TrainState))
_OPTIONAL = "method_state"


def _present(state: TrainState) -> tuple:
    absent = isinstance(state.method_state, dict) and not state.method_state
    return tuple(n for n in _FIELDS if not (n == _OPTIONAL and absent))


def _flatten_with_keys(state: TrainState):
    names = _present(state)
    return [(jax.tree_util.GetAttrKey(n), getattr(state, n)) for n in names], names


def _unflatten(names: tuple, children) -> TrainState:
    return TrainState(**dict(zip(names, children)))


jax.tree_util.register_pytree_with_keys(
    TrainState, _flatten_with_keys, _unflatten,
    lambda s: ([getattr(s, n) for n in _present(s)], _present(s)))
