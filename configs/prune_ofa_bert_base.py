"""Prune OFA upstream for bert-base-uncased: GMP to the target sparsity with KD from the frozen dense
teacher (both initialised from the teacher-prepared checkpoint).

  python -m prune_ofa_jax.main --config configs/prune_ofa_bert_base.py:<target> --workdir runs/prune_ofa_bert_base \
      --config.init.path=TEACHER --config.teacher.path=TEACHER
Args: one of {85, 90} (percent sparsity; default 85), optionally ",test" for the tiny
variant the tests run (e.g. "85,test"), or just "test".

Preset "reference" (512 tokens, KD on every token, regrow; --config.preset=fast: 128 tokens,
KD at the masked positions, hard zero). Two phases, as BERT pre-training (128 then 512
tokens): --config.data.seq_len=128 --config.train.steps=90000, then a second run with
--config.init.path=<phase 1>/model --config.data.seq_len=512 and the pattern locked (the
exact flags: recipes.upstream).
"""

from prune_ofa_jax import recipes


def get_config(arg: str = ""):
    return recipes.upstream_from_arg("bert-base-uncased", arg, (85, 90,), 85)
