"""Host-side data: tokenisation, pre-training (MLM + NSP), GLUE, SQuAD v1.1 and tweet datasets.

Every dataset yields numpy dicts and is random access: `batch(step)` depends only on (seed,
step, process_index, process_count) and returns this process's shard of the global batch.
Modules: common (DataError, batching), tokenization, text (corpora), instances + masking +
pretraining, classification + glue + tweets, squad + squad_features + squad_postprocess.
"""
