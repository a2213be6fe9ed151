"""Per-task losses of the student and the distillation term against a frozen teacher.

Everything here is pure jnp on the model's output dict (see models/bert.py) and a batch
dict (see data/). `model_inputs` decides what the model computes for the masked LM:
* `mlm_positions_only`: the vocabulary projection runs only at the masked positions (most of
  the cost of a BERT step), and KD covers those positions only (the `fast` preset);
* otherwise, with a teacher and `fused_chunk > 0`: the reference objective, KD over every
  non-padding token, fused with the CE so no [B, L, V] logits exist (distill/fused_mlm.py);
* otherwise full [B, L, V] logits (HF's BertForMaskedLM algorithm; naive all-token KD).
On top of the logits, `cfg.distill` (a distill.spec.Spec) adds the intermediate terms
(hidden-state distances or MI bounds with critics from the aux slot, attention KL;
distill/objective.py). Classification batches may carry augmentation keys
(distill/augment.py): `label_weights` (0 for augmented rows, which learn from the teacher's
soft labels only) and `mix_ids` / `mix_lambda` / `mix_labels` (embedding mixup, soft-mixed
hard labels; the teacher sees the same mixed input).
Terms from the user's own code are `LossTerm`s (`build.build(config, loss_terms=...)`,
`loop.run(config, workdir, loss_terms=...)`): the step config carries them, `model_inputs`
asks the models for what they need and `loss` adds each one and logs it under its name.
`loss` is the one entry point the train step calls.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional

import jax.numpy as jnp

from prune_ofa_jax import errors
from prune_ofa_jax.distill import fused_mlm, layer_kd, losses

MLM_TASKS = ("pretraining", "mlm")


@dataclasses.dataclass(frozen=True)
class LossTerm:
    """A term of the objective defined in the user's own code: `weight * fn(student_out,
    teacher_out, batch)` is added to the loss and fn's value is logged under `name`.

    fn: pure jnp, traced inside the step's value_and_grad (gradients reach the student
    through it). `student_out` and `teacher_out` are the models' output dicts (models/bert.py:
    "logits", "mlm_logits", ... ; "hidden_states", the embeddings output then one [B, L, H]
    array per layer, when `hidden_states`; "attentions", one [B, heads, L, L] per layer, when
    `attentions`); `teacher_out` is None in a run without a teacher and is a constant
    (stop_gradient) otherwise; `batch` is the micro-batch dict ("attention_mask" [B, L], ...).
    Returns a scalar. `needs_teacher`: the run must load a teacher (distill.kd_weight > 0 and
    teacher.path), checked when the run is built. Part of the step's static config, so it is
    frozen and hashable: give a module-level function (or another hashable callable)."""
    name: str
    fn: Callable[[dict, Optional[dict], dict], Any]
    weight: float = 1.0
    hidden_states: bool = False
    attentions: bool = False
    needs_teacher: bool = False


def check_terms(terms, config) -> tuple:
    """The user's loss terms as a tuple, or an error saying what is wrong with one: a
    TypeError/ValueError for a bad term, errors.ConfigError when the config cannot serve it."""
    terms = tuple(terms)
    seen = set()
    for t in terms:
        if not isinstance(t, LossTerm):
            raise TypeError(f"loss_terms: {t!r} is not an objectives.LossTerm")
        if not t.name or t.name in seen or t.name == "loss":
            raise ValueError(f"loss_terms: name {t.name!r} must be non-empty, unique and not "
                             "'loss' (it names the term's metric)")
        seen.add(t.name)
        if not callable(t.fn) or not math.isfinite(float(t.weight)):
            raise ValueError(f"loss term {t.name!r}: fn must be callable and weight finite")
        try:
            hash(t)
        except TypeError as e:
            raise TypeError(f"loss term {t.name!r}: fn must be hashable (a module-level "
                            f"function, not e.g. a bound method of a mutable object): {e}") from e
        if t.needs_teacher and not config.distill.kd_weight > 0:
            raise errors.ConfigError(
                f"config.distill.kd_weight: loss term {t.name!r} needs the teacher, which a run "
                "loads when distill.kd_weight > 0: set distill.kd_weight (e.g. 0.5) and "
                "teacher.path")
    return terms


def fused(cfg) -> bool:
    """The fused all-token MLM KD applies: MLM task, teacher, all positions, chunked."""
    return (cfg.task in MLM_TASKS and cfg.kd_weight > 0 and not cfg.mlm_positions_only
            and cfg.fused_chunk > 0)


def model_inputs(cfg, batch: dict) -> dict:
    kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  token_type_ids=batch.get("token_type_ids"))
    if cfg.task in MLM_TASKS and cfg.mlm_positions_only:
        kwargs["masked_positions"] = batch["masked_lm_positions"]
    if fused(cfg):
        kwargs["mlm_hidden"] = True
    spec, terms = cfg.distill, cfg.loss_terms
    if (spec is not None and spec.hidden) or any(t.hidden_states for t in terms):
        kwargs["output_hidden_states"] = True
    if (spec is not None and spec.attentions) or any(t.attentions for t in terms):
        kwargs["output_attentions"] = True
    if "mix_ids" in batch:  # static: the batch's structure
        kwargs["mix_ids"], kwargs["mix_lambda"] = batch["mix_ids"], batch["mix_lambda"]
    return kwargs


def loss(cfg, out: dict, t_out, batch: dict, aux=None):
    """(task_weight * task + kd_weight * KD + intermediate terms + the user's terms, metrics)
    for the student outputs `out` and the teacher's `t_out` (None without distillation);
    `aux` is the train state's aux dict (the critics live under layer_kd.AUX_NAME)."""
    total, terms = _logits_loss(cfg, out, t_out, batch)
    spec = cfg.distill
    if t_out is not None and spec is not None and (spec.hidden or spec.attentions):
        extra, extra_terms = layer_kd.loss(
            spec, (aux or {}).get(layer_kd.AUX_NAME), out, t_out,
            batch["attention_mask"])
        total, terms = total + extra, {**terms, **extra_terms}
    for term in cfg.loss_terms:
        value = jnp.asarray(term.fn(out, t_out, batch), jnp.float32)
        if value.shape != ():
            raise ValueError(f"loss term {term.name!r}: fn returned shape {value.shape}, "
                             "not a scalar")
        if term.name in terms:
            raise ValueError(f"loss term {term.name!r}: the step logs a metric of that name "
                             f"already ({sorted(terms)}); rename the term")
        total, terms = total + term.weight * value, {**terms, term.name: value}
    return total, terms


def _logit_kind(cfg) -> str:
    return "kl" if cfg.distill is None else cfg.distill.logit_loss


def _logits_loss(cfg, out: dict, t_out, batch: dict):
    if t_out is not None and fused(cfg):  # KL (soft CE differs by a constant only)
        total, terms = fused_mlm.mlm_kd(out, t_out, batch, task_weight=cfg.task_weight,
                                        kd_weight=cfg.kd_weight, temperature=cfg.temperature,
                                        chunk=cfg.fused_chunk, shards=cfg.batch_shards)
        if cfg.task == "pretraining":
            terms["nsp_loss"] = losses.xent(out["nsp_logits"], batch["next_sentence_labels"])
            terms["kd_nsp"] = losses.kd_kl(out["nsp_logits"], t_out["nsp_logits"],
                                           cfg.temperature)
            total = (total + cfg.task_weight * terms["nsp_loss"]
                     + cfg.kd_weight * terms["kd_nsp"])
        return total, terms
    gathered = cfg.mlm_positions_only
    task, terms = task_loss(cfg.task, cfg.num_labels, out, batch, gathered)
    total = cfg.task_weight * task
    if t_out is not None:
        kd, kd_terms = kd_loss(cfg.task, cfg.num_labels, out, t_out, batch, cfg.temperature,
                               gathered, _logit_kind(cfg))
        total, terms = total + cfg.kd_weight * kd, {**terms, **kd_terms}
    return total, terms


def mlm_logits_at_positions(out: dict, batch: dict, gathered: bool) -> jnp.ndarray:
    """[B, P, V] logits at the masked positions (the model may have gathered them already)."""
    if gathered:
        return out["mlm_logits"]
    return jnp.take_along_axis(out["mlm_logits"], batch["masked_lm_positions"][..., None], axis=1)


def task_loss(task: str, num_labels: int, out: dict, batch: dict, gathered: bool):
    """Returns (loss, metrics) of the supervised objective. `gathered`: the model computed
    MLM logits only at `masked_lm_positions`."""
    if task in MLM_TASKS:
        logits = mlm_logits_at_positions(out, batch, gathered)
        mlm = losses.xent(logits, batch["masked_lm_ids"], batch["masked_lm_weights"])
        terms = {"mlm_loss": mlm}
        if task == "pretraining":
            terms["nsp_loss"] = losses.xent(out["nsp_logits"], batch["next_sentence_labels"])
        return sum(terms.values()), terms
    if task == "cls":
        return _cls_loss(num_labels, out["logits"], batch)
    if task == "qa":
        loss = 0.5 * (losses.xent(out["start_logits"], batch["start_positions"])
                      + losses.xent(out["end_logits"], batch["end_positions"]))
        return loss, {"qa_loss": loss}
    raise ValueError(f"unknown task {task!r}")


def _cls_loss(num_labels: int, logits, batch: dict):
    """Hard-label loss of a sentence head; augmented rows (label_weights 0) are left out and
    mixup rows learn the soft-mixed label."""
    w, lam = batch.get("label_weights"), batch.get("mix_lambda")
    if num_labels == 1:
        target = batch["labels"]
        if lam is not None:
            target = lam * target + (1 - lam) * batch["mix_labels"]
        loss = losses.mse(logits[:, 0], target, w)
    elif lam is not None:
        loss = losses.mixed_xent(logits, batch["labels"], batch["mix_labels"], lam, w)
    else:
        loss = losses.xent(logits, batch["labels"], w)
    return loss, {"cls_loss": loss}


def kd_loss(task: str, num_labels: int, student: dict, teacher: dict, batch: dict,
            temperature: float, gathered: bool, kind: str = "kl"):
    """Logit KD (`kind`: kl = T^2 KL(teacher || student), soft_ce, mse) on every head the task
    has; MLM logits over non-padding tokens, or over masked positions when the model computed
    only those. Every row of a classification batch, augmented or not, is distilled."""
    kd = lambda s, t, w=None: losses.kd_logits(kind, s, t, temperature, w)
    if task in MLM_TASKS:
        s, t = student["mlm_logits"], teacher["mlm_logits"]
        weights = batch["masked_lm_weights"] if gathered else batch["attention_mask"]
        terms = {"kd_mlm": kd(s, t, weights)}
        if task == "pretraining":
            terms["kd_nsp"] = kd(student["nsp_logits"], teacher["nsp_logits"])
        return sum(terms.values()), terms
    if task == "cls":
        if num_labels == 1:
            loss = losses.mse(student["logits"], teacher["logits"])
        else:
            loss = kd(student["logits"], teacher["logits"])
        return loss, {"kd_cls": loss}
    if task == "qa":
        loss = 0.5 * (kd(student["start_logits"], teacher["start_logits"])
                      + kd(student["end_logits"], teacher["end_logits"]))
        return loss, {"kd_qa": loss}
    raise ValueError(f"unknown task {task!r}")
