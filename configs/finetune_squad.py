"""Downstream SQuAD v1.1 fine-tuning of a sparse pre-trained model, pattern locked.

  python -m prune_ofa_jax.main --config configs/finetune_squad.py --workdir runs/squad \
      --config.init.path=runs/prune_ofa_bert_base/model [--config.teacher.path=TASK_TEACHER]
2 epochs (--config.train.epochs), batch 12, 384 tokens, doc stride 128 (preset "reference").
Args: "" or "test".
"""

from prune_ofa_jax import recipes


def get_config(arg: str = ""):
    return recipes.finetune("squad", arg="test" if arg == "test" else "")
