"""Shared recipe builders for configs/: Prune OFA upstream, downstream fine-tuning and QAT."""

from __future__ import annotations

from prune_ofa_jax import config_base

# Prune OFA upstream, from the official scripts (IntelLabs Model-Compression-Research-Package,
# research/prune-once-for-all, BERT-Base 90%): 100k steps, batch 256, warmup 1% (1k steps),
# weight decay 0.01, cubic 0 -> target over steps 0-50k, a mask update every 1k steps, no mask
# update from 80k on, KD T=2 with 0.5/0.5 on MLM+NSP, LR rewinding inside the pruning window.
# The scripts set no learning rate, so the Hugging Face Trainer default (5e-5) applied there.
UPSTREAM = dict(steps=100_000, batch=256, end=50_000, every=1_000, freeze=80_000,
                warmup=1_000, lr=5e-5)


def upstream(model_name: str, target: float, arg: str = ""):
    """arg: "" = the paper's setting; "test" = the tiny variant the tests run."""
    c = config_base.base()
    c.model.name = model_name
    c.task = "mlm" if model_name.startswith(("distilbert", "roberta")) else "pretraining"
    c.data.nsp = c.task == "pretraining"
    c.data.kind = "text"
    c.data.text_files = ("wikitext2/*.txt", "text_gutenberg_nltk/*.txt",
                         "text_state_union/*.txt")
    c.distill.kd_weight = 0.5
    c.distill.task_weight = 0.5
    c.distill.temperature = 2.0
    c.sparsity.enabled = True
    c.sparsity.target = target
    c.sparsity.begin_step = 0
    c.sparsity.end_step = UPSTREAM["end"]
    c.sparsity.update_every = UPSTREAM["every"]
    c.sparsity.freeze_step = UPSTREAM["freeze"]
    c.optim.lr_rewind = True
    c.optim.lr = UPSTREAM["lr"]
    c.optim.warmup_steps = UPSTREAM["warmup"]
    c.train.steps = UPSTREAM["steps"]
    c.train.batch_size = UPSTREAM["batch"]
    c.checkpoint.every = 2_000
    if arg == "test":
        config_base.shrink_for_test(c)
    return c


def upstream_from_arg(model_name: str, arg: str, targets: tuple, default: int):
    """A configs/prune_ofa_*.py argument: "<percent>[,test]" or "test" -> upstream config."""
    parts = [p for p in arg.split(",") if p]
    pct = [int(p) for p in parts if p != "test"] or [default]
    if pct[0] not in targets:
        raise ValueError(f"{model_name}: target {pct[0]} is not one of {targets}")
    return upstream(model_name, pct[0] / 100, "test" if "test" in parts else "")


GLUE_LABELS = {"cola": 2, "sst2": 2, "mrpc": 2, "qqp": 2, "stsb": 1, "mnli": 3, "qnli": 2,
               "rte": 2, "wnli": 2}


def finetune(kind: str, glue_task: str = "sst2", arg: str = ""):
    """Downstream fine-tuning with the sparsity pattern locked (Prune OFA step 3)."""
    c = config_base.base()
    c.data.kind = kind
    c.sparsity.lock_pattern = True
    if kind == "squad":
        c.task = "qa"
        c.data.seq_len = 384
        c.train.batch_size = 12
        c.train.steps = 22_000          # ~3 epochs of SQuAD v1.1 train at batch 12
        c.optim.lr = 1.5e-4
    else:
        c.task = "cls"
        c.data.glue_task = glue_task
        c.num_labels = GLUE_LABELS.get(glue_task, 2)
        c.train.batch_size = 32
        c.train.steps = 3 * 2_000
        c.optim.lr = 1e-4
    c.optim.warmup_steps = int(0.1 * c.train.steps)
    c.train.eval_every = 0
    c.checkpoint.every = 1_000
    if arg == "test":
        config_base.shrink_for_test(c)
        c.data.seq_len = 64 if kind == "squad" else 32
    return c


def qat(kind: str, glue_task: str = "sst2", arg: str = ""):
    """8-bit QAT of a sparse fine-tuned model, pattern locked (Q8BERT-style fake-quant)."""
    c = finetune(kind, glue_task, arg)
    c.quant.enabled = True
    c.optim.lr = 1e-5 if arg != "test" else 1e-4
    if arg != "test":
        c.train.steps = c.train.steps // 3
        c.optim.warmup_steps = 0
    return c
