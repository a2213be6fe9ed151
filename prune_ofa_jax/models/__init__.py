"""Flax Linen BERT / DistilBERT / RoBERTa encoders with task heads (`bert.BertFamily`)."""

from prune_ofa_jax.models import bert  # noqa: F401
from prune_ofa_jax.models import config  # noqa: F401
