"""8-bit quantization-aware training (Q8BERT style) of a sparse fine-tuned model; the
zeros stay zero (pattern locked, zero-preserving symmetric weight quantisation).

  python -m prune_ofa_jax.main --config configs/qat.py:sst2 --workdir runs/sst2_qat \
      --config.init.path=runs/sst2/model
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
