"""Downstream SQuAD v1.1 fine-tuning of a sparse pre-trained model, pattern locked.

  python -m prune_ofa_jax.main --config configs/finetune_squad.py --workdir runs/squad \
      --config.init.path=runs/prune_ofa_bert_base/model
Args: "" or "test".
"""

from prune_ofa_jax import recipes


def get_config(arg: str = ""):
    return recipes.finetune("squad", arg="test" if arg == "test" else "")
