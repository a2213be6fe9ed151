"""Prune OFA upstream for bert-base-uncased: GMP to the target sparsity with KD from the frozen dense
teacher (both initialised from the teacher-prepared checkpoint).

  python -m prune_ofa_jax.main --config configs/prune_ofa_bert_base.py:<target> --workdir runs/prune_ofa_bert_base \
      --config.init.path=TEACHER --config.teacher.path=TEACHER
Args: one of {85, 90} (percent sparsity; default 85), optionally ",test" for the tiny
variant the tests run (e.g. "85,test"), or just "test".
"""

from prune_ofa_jax import recipes

TARGETS = (85, 90, )


def get_config(arg: str = ""):
    parts = [p for p in arg.split(",") if p]
    test = "test" in parts
    pct = [int(p) for p in parts if p != "test"] or [85]
    if pct[0] not in TARGETS:
        raise ValueError(f"prune_ofa_bert_base: target {pct[0]} is not one of {TARGETS}")
    return recipes.upstream("bert-base-uncased", pct[0] / 100, "test" if test else "")
