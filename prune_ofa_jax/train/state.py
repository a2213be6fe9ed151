"""The train state: everything a run needs to resume exactly (the teacher is never in it)."""

from __future__ import annotations

from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
    """params: latent weights; masks: bool tree beside them (None = never pruned);
    quant_stats: QAT EMA ranges ({} when QAT is off); data_position: index of the next
    global batch the data source serves (one per step, all microbatches included), saved so
    a resumed run continues the identical stream.

    aux: trainable extras beside the model, name -> pytree (e.g. learned-mask scores, MI
    critics). They are differentiated with the params in the same loss, updated by
    `aux_tx` (train/aux.py), saved in checkpoints and never exported. {} when a run has none.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    masks: Any
    quant_stats: Any
    data_position: jax.Array
    aux: Any = flax.struct.field(default_factory=dict)
    aux_opt_state: Any = flax.struct.field(default_factory=dict)

    @classmethod
    def create(cls, params, tx, masks, quant_stats=None, aux=None,
               aux_tx: Optional[optax.GradientTransformation] = None) -> "TrainState":
        aux = aux if aux is not None else {}
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                   masks=masks, quant_stats=quant_stats if quant_stats is not None else {},
                   data_position=jnp.zeros((), jnp.int32), aux=aux,
                   aux_opt_state=aux_tx.init(aux) if aux_tx is not None and aux else {})
