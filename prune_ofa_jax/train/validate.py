"""Config checks that run before anything compiles; each error names the offending key.
The extension points check their own keys: the pruning method (sparsity/methods) and the
distillation terms (distill/spec.py) through their registries."""

from __future__ import annotations

import re

from prune_ofa_jax import errors, presets
from prune_ofa_jax.distill import augment_batches
from prune_ofa_jax.distill import spec as distill_spec
from prune_ofa_jax.sparsity import methods, patterns

TASKS = ("pretraining", "mlm", "cls", "qa")
DATA_KINDS = ("text", "glue", "squad", "tweets")
CLS_HEADS = ("default", "layer_mix", "layer_mix_mean")


def _check(cond: bool, key: str, msg: str):
    if not cond:
        raise errors.ConfigError(f"config.{key}: {msg}")


def validate(c) -> None:
    _check(c.task in TASKS, "task", f"{c.task!r} is not one of {TASKS}")
    _check(c.data.kind in DATA_KINDS, "data.kind", f"{c.data.kind!r} is not one of {DATA_KINDS}")
    _check(c.data.source in ("local", "tfds"), "data.source",
           f"{c.data.source!r} is not local or tfds")
    _check(c.num_labels >= 1, "num_labels", f"must be >= 1, got {c.num_labels}")
    _check(c.train.steps > 0, "train.steps", f"must be > 0, got {c.train.steps}")
    _check(c.train.epochs >= 0, "train.epochs", f"must be >= 0 (0 = train.steps), got "
           f"{c.train.epochs}")
    _check(c.train.batch_size > 0, "train.batch_size", f"must be > 0, got {c.train.batch_size}")
    _check(c.train.grad_accum >= 1 and c.train.batch_size % c.train.grad_accum == 0,
           "train.grad_accum", f"{c.train.grad_accum} must divide train.batch_size "
           f"{c.train.batch_size}")
    _check(c.train.log_every > 0, "train.log_every", "must be > 0")
    _check(c.optim.lr > 0, "optim.lr", f"must be > 0, got {c.optim.lr}")
    if c.train.epochs == 0:  # with epochs, presets.resolve_steps checks once steps are known
        presets.check_warmup(c)
    _check(0 <= c.optim.warmup_fraction < 1, "optim.warmup_fraction",
           f"{c.optim.warmup_fraction} must be in [0, 1)")
    _check(c.optim.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    _check(c.data.seq_len >= 8, "data.seq_len", f"must be >= 8, got {c.data.seq_len}")
    _check(not c.data.prepared or c.data.kind == "text", "data.prepared",
           f"a prepared corpus is pre-training text; data.kind is {c.data.kind!r}")
    _check(not (c.data.prepared and c.data.whole_word_mask), "data.whole_word_mask",
           "whole-word masking is not vectorised for data.prepared yet; set it False")
    _check(c.data.worker_count >= 0 and c.data.prefetch >= 1, "data.worker_count",
           f"need worker_count >= 0 and data.prefetch >= 1, got {c.data.worker_count}, "
           f"{c.data.prefetch}")
    _check(0 < c.data.max_predictions <= c.data.seq_len, "data.max_predictions",
           f"{c.data.max_predictions} must be in (0, data.seq_len]")
    _check(c.distill.kd_weight >= 0 and c.distill.task_weight >= 0, "distill.kd_weight",
           "loss weights must be >= 0")
    _check(c.distill.temperature > 0, "distill.temperature", "must be > 0")
    _check(c.distill.fused_chunk >= 0, "distill.fused_chunk",
           f"positions per chunk must be >= 0 (0 = unfused), got {c.distill.fused_chunk}")
    _check(c.distill.kd_weight == 0 or bool(c.teacher.path), "teacher.path",
           "distillation (distill.kd_weight > 0) needs a teacher path")
    _check(c.model.dtype in ("float32", "bfloat16"), "model.dtype",
           f"{c.model.dtype!r} is not float32 or bfloat16")
    _check(c.task != "pretraining" or c.data.nsp, "data.nsp",
           "task 'pretraining' (MLM+NSP) needs data.nsp=True; use task 'mlm' without NSP")
    distill_spec.check(c)
    augment_batches.check(c)
    sp = c.sparsity
    _check(not (sp.enabled and sp.lock_pattern), "sparsity.lock_pattern",
           "a pruning run (sparsity.enabled) cannot also lock the pattern")
    if sp.enabled:
        _check(0.0 <= sp.target < 1.0, "sparsity.target", f"{sp.target} is outside [0, 1)")
        _check(sp.end_step <= c.train.steps, "sparsity.end_step",
               f"{sp.end_step} is after train.steps {c.train.steps}")
        try:
            patterns.parse(sp.pattern)
        except ValueError as e:
            raise errors.ConfigError(f"config.sparsity.pattern: {e}") from e
    _check(c.model.cls_head in CLS_HEADS, "model.cls_head",
           f"{c.model.cls_head!r} is not one of {CLS_HEADS}")
    methods.check(c)  # sparsity.method: registered, and the method's own check
    for key in ("include", "exclude"):
        for rx in getattr(sp, key):
            try:
                re.compile(rx)
            except re.error as e:
                raise errors.ConfigError(f"config.sparsity.{key}: bad regex {rx!r}: {e}") from e
    for axis in ("data", "fsdp", "tensor"):
        v = getattr(c.mesh, axis)
        _check(v == -1 or v >= 1, f"mesh.{axis}", f"must be -1 or >= 1, got {v}")
    _check(c.checkpoint.every > 0, "checkpoint.every", "must be > 0")
