"""The structured study (prune_ofa_jax/study/structured_study.py): score against measured
onnxruntime latency for every compression method we have, on SST-2 and the disaster tweets.

  python -m prune_ofa_jax.study structured --config configs/structured_study.py --workdir runs/structured --doc
Args: "" (the study measured on docs/studies/structured.md) or "test" (seconds: the suite's).
"""

from prune_ofa_jax.study import structured_study


def get_config(arg: str = ""):
    return structured_study.get_config(arg)
