"""Disaster tweets (Kaggle "NLP with Disaster Tweets"): fine-tune any BERT-family model.

  python -m prune_ofa_jax.main --config configs/finetune_tweets.py --workdir runs/tweets \
      --config.init.path=HF_DIR_OR_PARAMS_CKPT
The shared train.csv is split 90/10, stratified by target and seeded (config.seed); dev
metrics: accuracy and the positive class's F1 (Kaggle's metric). init.path takes an HF model
dir of any BERT family (BERT, DistilBERT, RoBERTa: a missing classification head is
initialised) or one of our params checkpoints, e.g. a Prune OFA sparse model (add
--config.sparsity.lock_pattern=True to keep its zeros; the sparse row of the study does).
The tokenizer is the one in init.path when it holds one, else MiniLM's WordPiece.
Kaggle predictions for test.csv: `python -m prune_ofa_jax.study.tweets --model DIR/model
--out submission.csv`. Args: "" or "test" (a tiny model, a few steps).
"""

from prune_ofa_jax import recipes


def get_config(arg: str = ""):
    c = recipes.finetune("glue", "sst2", "test" if arg == "test" else "")
    c.data.kind = "tweets"
    c.num_labels = 2
    c.init.init_missing_heads = True  # an HF encoder or MLM checkpoint has no cls head
    c.sparsity.lock_pattern = False   # a dense model by default; True for a sparse init
    if arg != "test":
        c.data.seq_len = 64           # tweets are <= 280 characters: 99 % fit in 64 tokens
    return c
