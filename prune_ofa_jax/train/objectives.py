"""Per-task losses of the student and the distillation term against a frozen teacher.

Everything here is pure jnp on the model's output dict (see models/bert.py) and a batch
dict (see data/). `model_inputs` decides what the model computes: with
`mlm_positions_only` the vocabulary projection runs only at the masked positions, which is
most of the cost of a BERT step.
"""

from __future__ import annotations

import jax.numpy as jnp

from prune_ofa_jax.distill import losses

MLM_TASKS = ("pretraining", "mlm")


def model_inputs(task: str, batch: dict, mlm_positions_only: bool) -> dict:
    kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  token_type_ids=batch.get("token_type_ids"))
    if task in MLM_TASKS and mlm_positions_only:
        kwargs["masked_positions"] = batch["masked_lm_positions"]
    return kwargs


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
        if num_labels == 1:
            loss = losses.mse(out["logits"][:, 0], batch["labels"])
        else:
            loss = losses.xent(out["logits"], batch["labels"])
        return loss, {"cls_loss": loss}
    if task == "qa":
        loss = 0.5 * (losses.xent(out["start_logits"], batch["start_positions"])
                      + losses.xent(out["end_logits"], batch["end_positions"]))
        return loss, {"qa_loss": loss}
    raise ValueError(f"unknown task {task!r}")


def kd_loss(task: str, num_labels: int, student: dict, teacher: dict, batch: dict,
            temperature: float, gathered: bool):
    """T^2-scaled KL(teacher || student) on every head the task has; MLM logits over
    non-padding tokens, or over masked positions when the model computed only those."""
    if task in MLM_TASKS:
        s, t = student["mlm_logits"], teacher["mlm_logits"]
        weights = batch["masked_lm_weights"] if gathered else batch["attention_mask"]
        terms = {"kd_mlm": losses.kd_kl(s, t, temperature, weights)}
        if task == "pretraining":
            terms["kd_nsp"] = losses.kd_kl(student["nsp_logits"], teacher["nsp_logits"],
                                           temperature)
        return sum(terms.values()), terms
    if task == "cls":
        if num_labels == 1:
            loss = losses.mse(student["logits"], teacher["logits"])
        else:
            loss = losses.kd_kl(student["logits"], teacher["logits"], temperature)
        return loss, {"kd_cls": loss}
    if task == "qa":
        loss = 0.5 * (losses.kd_kl(student["start_logits"], teacher["start_logits"], temperature)
                      + losses.kd_kl(student["end_logits"], teacher["end_logits"], temperature))
        return loss, {"kd_qa": loss}
    raise ValueError(f"unknown task {task!r}")
