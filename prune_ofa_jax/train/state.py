"""The train state: everything a run needs to resume exactly (the teacher is never in it)."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


class TrainState(flax.struct.PyTreeNode):
    """params: latent weights; masks: bool tree beside them (None = never pruned);
    quant_stats: QAT EMA ranges ({} when QAT is off); data_position: index of the next
    global batch the data source serves (one per step, all microbatches included), saved so
    a resumed run continues the identical stream."""

    step: jax.Array
    params: Any
    opt_state: Any
    masks: Any
    quant_stats: Any
    data_position: jax.Array

    @classmethod
    def create(cls, params, tx, masks, quant_stats=None) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                   masks=masks, quant_stats=quant_stats if quant_stats is not None else {},
                   data_position=jnp.zeros((), jnp.int32))
