"""Teacher preparation (Prune OFA step 1): continue masked-LM (+NSP) training of the dense
model on the pre-training text so the teacher has well-trained LM heads.

  python -m prune_ofa_jax.main --config configs/teacher_prep.py --workdir runs/teacher \
      --config.init.path=/path/to/bert-base-uncased
Args: "" (BERT-Base, Wikipedia/BookCorpus-scale settings) or "test" (tiny, seconds).
No preset (config_base's defaults: 128 tokens, 20 masked positions); --config.preset=reference
gives 512 tokens and 77 masked positions.
"""

from prune_ofa_jax import config_base


def get_config(arg: str = ""):
    c = config_base.base()
    c.task = "pretraining"
    c.init.init_missing_heads = True   # a bare BertModel (e.g. MiniLM) gets fresh MLM/NSP heads
    c.data.kind = "text"
    c.data.text_files = ("wikitext2/*.txt", "text_gutenberg_nltk/*.txt",
                         "text_state_union/*.txt")
    c.train.steps = 100_000
    c.train.batch_size = 256
    c.optim.lr = 5e-5            # reference script: HF Trainer default; warmup ratio 0.01
    c.optim.warmup_steps = 1_000
    c.checkpoint.every = 2_000
    if arg == "test":
        config_base.shrink_for_test(c)
    return c
