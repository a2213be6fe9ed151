"""Shared recipe builders for configs/: Prune OFA upstream, downstream fine-tuning and QAT."""

from __future__ import annotations

from prune_ofa_jax import config_base, presets

# Prune OFA upstream, from the official scripts (IntelLabs Model-Compression-Research-Package,
# research/prune-once-for-all, BERT-Base 90%): 100k steps, batch 256, warmup 1% (1k steps),
# weight decay 0.01, cubic 0 -> target over steps 0-50k, a mask update every 1k steps, the last
# one at 80k (they prune while `global_step <= end_pruning_step`; our masks update at steps <
# freeze_step, hence 80_001), KD T=2 with 0.5/0.5 on MLM+NSP, LR rewinding inside the pruning
# window. The scripts set no learning rate, so the Hugging Face Trainer default (5e-5) applied.
# Sequence length, KD positions and regrow come from the preset (presets.py).
UPSTREAM = dict(steps=100_000, batch=256, end=50_000, every=1_000, freeze=80_001,
                warmup=1_000, lr=5e-5)


def upstream(model_name: str, target: float, arg: str = ""):
    """arg: "" = the paper's setting; "test" = the tiny variant the tests run.

    Preset "reference": 512 tokens throughout. BERT-style two phases (128 tokens, then 512)
    are two runs of this recipe. Phase 1 does all the pruning (masks frozen after 80k):
    `--config.data.seq_len=128 --config.train.steps=90000`. Phase 2 keeps its pattern:
    `--config.init.path=<phase 1>/model --config.data.seq_len=512 --config.train.steps=10000
    --config.sparsity.enabled=False --config.sparsity.lock_pattern=True
    --config.optim.warmup_steps=0` (its LR schedule starts afresh)."""
    c = config_base.base()
    c.preset = presets.REFERENCE
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
    """Downstream fine-tuning with the sparsity pattern locked (Prune OFA step 3), as the
    reference scripts: GLUE 3 epochs, batch 32, 128 tokens; SQuAD 2 epochs, batch 12, 384
    tokens (doc stride 128); warmup 10 %. With --config.teacher.path the preset adds KD
    0.5/0.5, T=2 (STS-B, a regression, distils with MSE instead of KL: see README)."""
    c = config_base.base()
    c.preset = presets.REFERENCE
    c.data.kind = kind
    c.sparsity.lock_pattern = True
    if kind == "squad":
        c.task = "qa"
        c.data.seq_len = 384
        c.train.batch_size = 12
        c.train.epochs = 2
        c.optim.lr = 1.5e-4
    else:
        c.task = "cls"
        c.data.glue_task = glue_task
        c.num_labels = GLUE_LABELS.get(glue_task, 2)
        c.data.seq_len = 128
        c.train.batch_size = 32
        c.train.epochs = 3
        c.optim.lr = 1e-4
    c.optim.warmup_fraction = 0.1     # of the steps the epochs resolve to
    c.train.eval_every = 0
    c.checkpoint.every = 1_000
    if arg == "test":
        config_base.shrink_for_test(c)
        c.data.seq_len = 64 if kind == "squad" else 32
    return c


def qat(kind: str, glue_task: str = "sst2", arg: str = ""):
    """8-bit QAT, pattern locked (Q8BERT-style fake-quant), as the reference: the quantised
    model trains from step 0 of the sparse fine-tune (init.path = the sparse upstream model),
    in one run, with the fine-tune's schedule and KD from a task teacher when one is given."""
    c = finetune(kind, glue_task, arg)
    c.quant.enabled = True
    if arg == "test":
        c.optim.lr = 1e-4
    return c


def small_run(c, p, steps: int):
    """The settings every small-scale stage shares (the demo's and the studies'): p's
    preset, seed, data, tokenizer, sequence length and batch; 10 % warmup; two checkpoints;
    p.devices (optional, default 0 = all) of the devices."""
    c.preset = p.preset  # "": config_base's defaults, not the paper's (see configs/demo.py)
    c.seed = p.seed
    c.data.root = p.data_root
    c.data.seq_len = p.seq_len
    c.data.max_predictions = max(1, round(0.15 * p.seq_len))
    c.data.tokenizer = p.tokenizer
    c.train.steps = steps
    c.train.epochs = 0
    c.train.batch_size = p.batch_size
    c.train.log_every = max(1, min(10, steps))
    c.train.eval_batch_size = p.eval_batch_size
    c.train.progress = p.progress
    c.optim.warmup_steps = max(0, steps // 10)
    c.optim.warmup_fraction = 0.0
    c.checkpoint.every = max(1, steps // 2)
    c.checkpoint.keep = 1
    c.mesh.data = -1
    c.mesh.devices = p.get("devices", 0)
    return c
