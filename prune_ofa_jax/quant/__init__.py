"""8-bit quantisation-aware training (Q8BERT style) injected into the models' Dense layers.

`quant.fake_quant` holds the pure STE fake-quant functions; `quant.qat` the config, the
`QatDotGeneral` linen module and the injectors. The main names are re-exported here.
"""

from prune_ofa_jax.quant.qat import (QatDotGeneral, QuantConfig, embedding_quant,  # noqa: F401
                                     init_quant_stats, make_injector)
