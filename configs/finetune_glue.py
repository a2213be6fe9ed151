"""Downstream GLUE fine-tuning of a sparse pre-trained model, pattern locked.

  python -m prune_ofa_jax.main --config configs/finetune_glue.py:sst2 --workdir runs/sst2 \
      --config.init.path=runs/prune_ofa_bert_base/model [--config.teacher.path=TASK_TEACHER]
3 epochs (--config.train.epochs; 0 = use --config.train.steps), batch 32, 128 tokens; a
teacher adds KD 0.5/0.5, T=2 (preset "reference"; --config.distill.kd_weight=0 turns it off).
Args: a GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli), optionally ",test".
"""

from prune_ofa_jax import recipes


def get_config(arg: str = "sst2"):
    parts = [p for p in arg.split(",") if p]
    test = "test" in parts
    task = next((p for p in parts if p != "test"), "sst2")
    if task not in recipes.GLUE_LABELS:
        raise ValueError(f"finetune_glue: unknown GLUE task {task!r}; one of "
                         f"{sorted(recipes.GLUE_LABELS)}")
    return recipes.finetune("glue", task, "test" if test else "")
