"""8-bit quantization-aware training (Q8BERT style) of a sparse model; the zeros stay zero
(pattern locked, zero-preserving symmetric weight quantisation). As the reference, the
quantised model trains from step 0 of the sparse fine-tune, in one run: init.path is the
sparse upstream model, and a task teacher adds KD 0.5/0.5, T=2 (preset "reference").

  python -m prune_ofa_jax.main --config configs/qat.py:sst2 --workdir runs/sst2_qat \
      --config.init.path=runs/prune_ofa_bert_base/model [--config.teacher.path=TASK_TEACHER]
Args: a GLUE task or "squad", optionally ",test".
"""

from prune_ofa_jax import recipes


def get_config(arg: str = "sst2"):
    parts = [p for p in arg.split(",") if p]
    test = "test" if "test" in parts else ""
    task = next((p for p in parts if p != "test"), "sst2")
    if task == "squad":
        return recipes.qat("squad", arg=test)
    return recipes.qat("glue", task, test)
