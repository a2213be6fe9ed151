"""Config checks that run before anything compiles; each error names the offending key.
The extension points check their own keys: the pruning method (sparsity/methods) and the
distillation terms (distill/spec.py) through their registries.

`validate(c)` also checks the config against the devices (batch sizes that split over the
mesh's data x fsdp devices and the processes); `check_models(c)` against the models it names
(data.seq_len within their position embeddings, model.overrides that agree with init.path;
it reads their configs, not their weights); `explicit(c, keys)` settles
an explicit command-line value beside a recipe's value of a key that would override it
(train.steps beside train.epochs, optim.warmup_fraction beside optim.warmup_steps).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re

import jax

from prune_ofa_jax import errors, presets
from prune_ofa_jax.convert import loader
from prune_ofa_jax.distill import augment_batches
from prune_ofa_jax.distill import spec as distill_spec
from prune_ofa_jax.models import config as model_config_lib
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.sparsity import methods, patterns
from prune_ofa_jax.train import build as build_lib

log = logging.getLogger(__name__)

TASKS = ("pretraining", "mlm", "cls", "qa")
DATA_KINDS = ("text", "glue", "squad", "tweets")
CLS_HEADS = ("default", "layer_mix", "layer_mix_mean")


def _check(cond: bool, key: str, msg: str):
    if not cond:
        raise errors.ConfigError(f"config.{key}: {msg}")


def validate(c, device_count: int | None = None, process_count: int | None = None) -> None:
    """Every check; the device and process counts default to this run's (jax's)."""
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
        if c.train.epochs == 0:  # with epochs: check_steps, once they are resolved
            check_steps(c)
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
    _check(c.checkpoint.keep >= 1, "checkpoint.keep",
           f"must be >= 1 (the checkpoints kept), got {c.checkpoint.keep}")
    _check(c.train.max_consecutive_skips >= 1, "train.max_consecutive_skips",
           f"must be >= 1, got {c.train.max_consecutive_skips}")
    _check(all(isinstance(k, str) for k in c.resume.allow_changes), "resume.allow_changes",
           f"want config keys (strings), got {c.resume.allow_changes!r}")
    _check(c.train.eval_batch_size > 0, "train.eval_batch_size",
           f"must be > 0, got {c.train.eval_batch_size}")
    device_count = jax.device_count() if device_count is None else device_count
    process_count = jax.process_count() if process_count is None else process_count
    n = c.mesh.devices
    _check(n == 0 or (1 <= n <= device_count and process_count == 1), "mesh.devices",
           f"{n}: want 0 (every device) or 1..{device_count} in a single-process run"
           + (f" ({process_count} processes: every device)" if process_count > 1 else ""))
    check_devices(c, n or device_count, process_count)


def mesh_shape(c, device_count: int) -> dict:
    """{axis: size} of the mesh config.mesh makes over `device_count` devices."""
    sizes = dict(zip(mesh_lib.AXES, (c.mesh.data, c.mesh.fsdp, c.mesh.tensor)))
    known = math.prod(v for v in sizes.values() if v != -1)
    fits = (device_count % known == 0 if -1 in sizes.values() else known == device_count)
    _check(list(sizes.values()).count(-1) <= 1 and fits, "mesh",
           f"data={c.mesh.data}, fsdp={c.mesh.fsdp}, tensor={c.mesh.tensor} do not fit the "
           f"{device_count} devices (one axis may be -1: the rest)")
    return {k: device_count // known if v == -1 else v for k, v in sizes.items()}


def check_devices(c, device_count: int, process_count: int = 1) -> None:
    """Train microbatches and eval batches split evenly over the mesh's data x fsdp devices,
    and every process reads the same number of rows."""
    shape = mesh_shape(c, device_count)
    shards = shape["data"] * shape["fsdp"]
    bs, accum, ebs = c.train.batch_size, c.train.grad_accum, c.train.eval_batch_size
    _check(bs % process_count == 0 and (bs // process_count) % accum == 0,
           "train.batch_size", f"{bs} rows do not split over {process_count} processes x "
           f"train.grad_accum={accum} microbatches; use a multiple of {process_count * accum}")
    _check((bs // accum) % shards == 0, "train.batch_size",
           f"{bs} / train.grad_accum={accum} = {bs // accum} rows per microbatch do not split "
           f"over the mesh's data x fsdp = {shards} devices; use a multiple of {shards * accum}")
    _check(ebs % shards == 0 and ebs % process_count == 0, "train.eval_batch_size",
           f"{ebs} rows do not split over the mesh's data x fsdp = {shards} devices"
           + (f" and {process_count} processes" if process_count > 1 else "")
           + f"; use a multiple of {math.lcm(shards, process_count)}")


def _positions(mcfg) -> int:
    """The longest sequence the position table covers (RoBERTa's ids start after pad)."""
    offset = mcfg.pad_token_id + 1 if mcfg.model_type == "roberta" else 0
    return mcfg.max_position_embeddings - offset


def _model_config(c):
    """The student's ModelConfig, as build makes it (init.path's, overrides applied)."""
    overrides = dict(c.model.overrides)
    fields = {f.name for f in dataclasses.fields(model_config_lib.ModelConfig)}
    for k in overrides:
        _check(k in fields, f"model.overrides.{k}",
               f"not a model field ({', '.join(sorted(fields))})")
    if not c.init.path:
        try:
            return model_config_lib.by_name(c.model.name, **overrides)
        except ValueError as e:
            raise errors.ConfigError(f"config.model.name: {e}") from e
    loaded = _read_model_config(c.init.path, "init.path")
    for k, v in overrides.items():
        _check(k in build_lib.FREE_OVERRIDES or getattr(loaded, k) == v,
               f"model.overrides.{k}", f"{v!r} conflicts with the checkpoint at "
               f"config.init.path ({k}={getattr(loaded, k)!r}); drop the override")
    return dataclasses.replace(loaded, **overrides)


def _read_model_config(path, key: str):
    try:
        return loader.model_config(path)
    except errors.ConfigError:
        raise
    except (errors.UserError, OSError, ValueError) as e:
        raise errors.ConfigError(f"config.{key}: {' '.join(str(e).split())}") from e


def check_models(c) -> None:
    """data.seq_len fits the position embeddings of the student (and of the teacher)."""
    models = [("init.path" if c.init.path else "model.name", _model_config(c))]
    if c.distill.kd_weight > 0 and c.teacher.path:
        models.append(("teacher.path", _read_model_config(c.teacher.path, "teacher.path")))
    for key, mcfg in models:
        _check(c.data.seq_len <= _positions(mcfg), "data.seq_len",
               f"{c.data.seq_len} is longer than the {_positions(mcfg)} positions the model of "
               f"config.{key} embeds (max_position_embeddings={mcfg.max_position_embeddings}"
               f"); use data.seq_len <= {_positions(mcfg)}")


def check_steps(c) -> None:
    """The checks that need train.steps once train.epochs resolved it (presets.resolve_steps)."""
    sp = c.sparsity
    if sp.enabled:
        _check(sp.end_step <= c.train.steps, "sparsity.end_step",
               f"{sp.end_step} is after train.steps {c.train.steps}")


# (explicit key, the recipe's key that would override it, that key's "off" value)
_REPLACES = (("train.steps", "train.epochs", 0),
             ("optim.warmup_fraction", "optim.warmup_steps", 0),
             ("optim.warmup_steps", "optim.warmup_fraction", 0.0))


def _get(c, dotted: str):
    section, name = dotted.split(".")
    return c[section][name]


def explicit(c, keys=()):
    """`c`, changed in place: an explicit command-line key (`keys`, dotted, as main.py
    passes them) wins over the recipe's value of a key that would otherwise override it
    (that one is switched off, one console line); both explicit is an error naming both."""
    keys = set(keys)
    for key, other, off in _REPLACES:
        mine, theirs = _get(c, key), _get(c, other)
        if key not in keys or theirs == off or not mine:  # 0 = unset: nothing replaced
            continue
        if other in keys:
            raise errors.ConfigError(
                f"config.{key}: {mine} and config.{other}={theirs} are both given and "
                f"{other} would override {key}; give one of them")
        log.info("config.%s=%s given on the command line replaces the recipe's config.%s=%s",
                 key, mine, other, theirs)
        section, name = other.split(".")
        c[section][name] = off
    return c
