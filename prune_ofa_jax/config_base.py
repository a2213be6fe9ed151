"""Every config key with its default. Recipes in configs/ start from `base()` and override;
the command line overrides further (`--config.sparsity.target=0.9`)."""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from prune_ofa_jax import presets
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.sparsity import methods


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # None (a placeholder of its type) = "from the preset": presets.resolve fills it from the
    # preset's table, so anything set explicitly wins. Preset "" = config_base's defaults.
    c.preset = ""                   # reference | fast | "" (see presets.py)
    c.seed = 0
    c.task = "pretraining"          # pretraining (MLM+NSP) | mlm | cls | qa
    c.num_labels = 2                # cls: 1 = regression

    c.model = ml_collections.ConfigDict()
    c.model.name = "bert-base-uncased"   # used when init.path is empty (random init)
    c.model.overrides = ml_collections.ConfigDict()  # e.g. num_layers=2 for :test
    c.model.dtype = "float32"            # compute dtype; params stay float32
    c.model.cls_head = "default"         # cls task head: default (the family's, as HF) |
    #                                      layer_mix (Adapting by Pruning: softmax-weighted
    #                                      mean of every layer's [CLS] -> 1-hidden-layer MLP)
    #                                      | layer_mix_mean (mean-pooled tokens, not [CLS])

    c.init = ml_collections.ConfigDict()
    c.init.path = ""                  # HF model dir or params checkpoint; "" = random init
    c.init.init_missing_heads = False  # e.g. add an MLM head to a bare BertModel

    c.teacher = ml_collections.ConfigDict()
    c.teacher.path = ""               # frozen dense teacher; never checkpointed

    c.distill = ml_collections.ConfigDict()
    c.distill.kd_weight = config_dict.placeholder(float)  # Prune OFA: 0.5 * task + 0.5 *
    #                                 T^2 KL; preset: 0.5 with a teacher.path, "": 0
    c.distill.task_weight = 0.5       # used only when kd_weight > 0
    c.distill.temperature = 2.0
    c.distill.mlm_positions_only = config_dict.placeholder(bool)  # True: vocab projection +
    #                                 KD at masked positions only; False: KD on every token
    c.distill.fused_chunk = 32        # all-token MLM KD, fused: positions per chunk; 0 = naive
    # Distiller (distill/spec.py): the logit loss and the intermediate-representation terms.
    c.distill.logit_loss = "kl"       # kl | soft_ce (same gradient) | mse (task cls only)
    c.distill.intermediate = ""       # "" | mi_alpha | infonce | nwj | tuba | mse | cosine | pkd
    c.distill.intermediate_weight = 1.0
    c.distill.mi_alpha = 0.9          # MI-alpha mixture: 1 = InfoNCE, 0 = TUBA (Distiller: 0.9)
    c.distill.layer_map = "skip"      # skip | last | emd (many-to-many, earth mover's plan)
    c.distill.attention_weight = 0.0  # > 0: + attention-map KL over the skip/last map
    c.distill.critic = "mlp"          # MI critics: mlp (pooled) | encoder (1 transformer layer)
    c.distill.critic_hidden = 256
    c.distill.critic_dim = 64         # critic embedding width (L2-normalised)
    c.distill.critic_lr_scale = 1.0   # critics' LR = this x the student's schedule

    # Augmentation of classification data (distill/augment.py); off when kinds is empty.
    c.augment = ml_collections.ConfigDict()
    c.augment.kinds = ()              # any of swap, delete, contextual, mixup
    c.augment.fraction = 0.5          # share of each batch that is augmented rows
    c.augment.copies = 1              # offline augmented copies of each training row
    c.augment.pool_rows = 0           # > 0: augment only this many rows (a seeded subset)
    c.augment.rate = 0.15             # share of words swapped / deleted / substituted
    c.augment.mlm_path = ""           # contextual: a masked-LM checkpoint (e.g. teacher prep)
    c.augment.mlm_top_k = 20          # contextual: sample among the MLM's top k words
    c.augment.mixup_alpha = 0.4       # mixup: lambda ~ Beta(alpha, alpha) per row

    c.data = ml_collections.ConfigDict()
    c.data.kind = "text"              # text | glue | squad | tweets
    c.data.source = "local"           # local files under data.root | tfds
    c.data.root = ""                  # "" = $PRUNE_OFA_DATA or ../shared/data
    c.data.text_files = ("wikitext2/valid.txt",)  # globs under root (kind=text)
    c.data.glue_task = "sst2"
    c.data.tokenizer = ""             # "" = init.path's own, else MiniLM's (its vocab only)
    c.data.seq_len = config_dict.placeholder(int)  # preset: 512 (reference, MLM), else 128
    c.data.max_predictions = config_dict.placeholder(int)  # round(0.15 * seq_len); "": 20
    c.data.nsp = True
    c.data.whole_word_mask = False
    c.data.train_subset = 0           # 0 = all rows
    c.data.eval_subset = 0
    c.data.split_seed = 0             # which rows are train / dev / held out (subsets, the
    #                                 tweets split, the MLM held-out text): never the run's
    #                                 seed, so every seed scores on the same dev rows
    c.data.eval_files = ()            # kind text: globs under root; set, the MLM eval reads
    #                                 these (text the run never trains on) instead of a
    #                                 held-out 5 % of data.text_files
    c.data.eval_batches = 8           # MLM eval: number of held-out batches
    c.data.prepared = ""              # dir (local or gs://) from `python -m
    #                                 prune_ofa_jax.data.prepare`: stream it with Grain
    #                                 instead of tokenising data.text_files in memory
    c.data.worker_count = 2           # Grain worker processes per host (0 = in the loop's)
    c.data.prefetch = 2               # batches buffered per Grain worker

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    c.train.epochs = 0                # > 0: steps = epochs * steps per epoch (from the data)
    c.train.batch_size = 32           # global
    c.train.grad_accum = 1
    c.train.log_every = 50
    c.train.eval_every = 0            # 0 = only at the end
    c.train.eval_batch_size = 64
    c.train.progress = True
    c.train.skip_nonfinite = False    # True: a step with a non-finite loss or grad norm leaves
    #                                 params, optimizer state and masks as they were (its
    #                                 batch consumed), logged as `skipped` (train/guards.py)
    c.train.max_consecutive_skips = 10  # skip_nonfinite: this many skipped steps in a row
    #                                 are tolerated; one more stops the run

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 5e-5
    c.optim.warmup_steps = 0
    c.optim.warmup_fraction = 0.0     # > 0 (and warmup_steps 0): warmup = fraction * steps
    c.optim.weight_decay = 0.01
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = config_dict.placeholder(float)  # preset: 1e-8; "": 1e-6
    c.optim.grad_clip = 1.0
    c.optim.lr_rewind = False         # Prune OFA: rewind LR at each mask update in the window

    c.sparsity = ml_collections.ConfigDict()
    c.sparsity.enabled = False        # gradual magnitude pruning (upstream)
    c.sparsity.lock_pattern = False   # fine-tune: keep the zeros of the loaded weights
    c.sparsity.target = 0.85
    c.sparsity.initial = 0.0
    c.sparsity.begin_step = 0
    c.sparsity.end_step = 500
    c.sparsity.update_every = 100
    c.sparsity.freeze_step = 800
    c.sparsity.method = methods.DEFAULT  # magnitude (GMP) | movement_hard | movement_soft |
    #                                   adaprune | supermask | any registered method
    #                                   (sparsity/methods/); the old uniform | global still
    #                                   work (deprecated): magnitude
    c.sparsity.distribution = "uniform"  # top-k methods: uniform (per tensor, Prune OFA) |
    #                                   global (one selection over all prunable tensors)
    c.sparsity.frozen_weights = config_dict.placeholder(bool)  # the backbone never trains,
    #                                   only heads (and scores) do; None = the method's own
    #                                   (adaprune, supermask: True; else False). Also for a
    #                                   dense run: feature extraction
    c.sparsity.embeddings = False     # coverage: also prune the embedding tables
    c.sparsity.pattern = "unstructured"  # unstructured | "N:M" (e.g. "2:4") | "1xK[:l1|l2]"
    c.sparsity.regrow = config_dict.placeholder(bool)  # False: hard zero (pruned weights
    #                                 stay 0); True: dense latent weights, masks in the forward
    c.sparsity.include = masks_lib.DEFAULT_INCLUDE  # Prune OFA: encoder Linear kernels + pooler
    c.sparsity.exclude = ()
    # Each pruning method's own block (sparsity.movement, .adaprune, .supermask, and any
    # method registered before this runs): its config fields and their defaults (their
    # papers' settings), declared by the method (sparsity/methods/*.py).
    for block, defaults in methods.config_blocks().items():
        if block in c.sparsity:
            raise ValueError(f"a pruning method's block config.sparsity.{block} would replace "
                             "a sparsity key: set the method's `block` to another name")
        c.sparsity[block] = ml_collections.ConfigDict(defaults)

    c.quant = ml_collections.ConfigDict()
    c.quant.enabled = False           # Q8BERT-style fake-quant QAT
    c.quant.weight_bits = 8
    c.quant.act_bits = 8
    c.quant.per_channel = False
    c.quant.ema_decay = config_dict.placeholder(float)  # preset: 0.99; "": 0.9999
    c.quant.quantize_embeddings = False
    c.quant.requantize_output = config_dict.placeholder(bool)  # fake-quantise Dense outputs
    c.quant.requantize_after_bias = config_dict.placeholder(bool)  # ... after the bias
    c.quant.requantize_exclude = config_dict.placeholder(tuple)  # path regexes not requantised

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.devices = 0                # 0: every device; N: the first N (one process), e.g.
    #                                 1 for a small run that sharding would only slow
    c.mesh.rules = mesh_lib.DEFAULT_RULES

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 500
    c.checkpoint.keep = 2
    c.checkpoint.async_save = True

    # Resume (train/resume.py): a change of any other key than its ALLOWED list since the
    # checkpoint is an error; these keys (or prefixes, e.g. "sparsity") may change anyway.
    c.resume = ml_collections.ConfigDict()
    c.resume.allow_changes = ()       # e.g. ("train.steps",); on the command line
    #                                 --config.resume.allow_changes=train.steps,data.seq_len
    return c


def shrink_for_test(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The `:test` variant of a recipe: a tiny model of the recipe's family, a few steps,
    the real tokenizer and data. A "reference" recipe runs its tiny variant with preset
    "fast" (KD at the masked positions, hard zero): its steps take seconds, and the reference
    step has tests of its own (tests/test_fused_mlm.py, tests/test_presets.py)."""
    if c.preset == presets.REFERENCE:
        c.preset = presets.FAST
    c.model.overrides = ml_collections.ConfigDict(
        {"num_layers": 2, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64,
         "max_position_embeddings": 64})
    c.data.text_files = ("wikitext2/valid.txt",)
    c.data.seq_len = 32
    c.data.max_predictions = 5
    c.data.train_subset = 256
    c.data.eval_subset = 64
    c.data.eval_batches = 2
    c.train.steps = 8
    c.train.batch_size = 16
    c.train.log_every = 2
    c.train.eval_batch_size = 32
    c.train.progress = False
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 0
    c.optim.warmup_fraction = 0.0
    c.train.epochs = 0
    c.checkpoint.every = 4
    c.checkpoint.async_save = False
    if c.sparsity.enabled:
        c.sparsity.begin_step = 0
        c.sparsity.end_step = 4
        c.sparsity.update_every = 2
        c.sparsity.freeze_step = 6
    return c
