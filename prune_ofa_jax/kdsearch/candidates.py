"""KD pipelines as small dicts: the search space (Distiller's axes), the study's fixed rows,
their config keys, and the numeric features AutoDistiller regresses on.

A pipeline: {"logit_loss", "kd_weight", "task_weight" (hard labels), "temperature",
"intermediate", "intermediate_weight", "mi_alpha", "layer_map", "attention_weight",
"augment"}. kd_weight 0 is the student fine-tuned alone (no teacher).
"""

from __future__ import annotations

import json

import numpy as np

from prune_ofa_jax.distill import spec as spec_lib

AUGMENT = ("none", "swap_delete", "contextual", "mixup")
AUGMENT_KINDS = {"none": (), "swap_delete": ("swap", "delete"), "contextual": ("contextual",),
                 "mixup": ("mixup",)}

SPACE = {
    "logit_loss": ("soft_ce", "mse"),
    "kd_weight": (0.5, 1.0),
    "task_weight": (0.0, 0.5),
    "temperature": (1.0, 2.0, 4.0),
    "intermediate": ("none",) + spec_lib.INTERMEDIATE,
    "intermediate_weight": (0.5, 1.0, 2.0),
    "mi_alpha": (0.5, 0.9, 1.0),
    "layer_map": spec_lib.LAYER_MAPS,
    "attention_weight": (0.0, 1.0),
    "augment": AUGMENT,
}

BASE = {"logit_loss": "soft_ce", "kd_weight": 0.5, "task_weight": 0.5, "temperature": 2.0,
        "intermediate": "none", "intermediate_weight": 1.0, "mi_alpha": 0.9,
        "layer_map": "skip", "attention_weight": 0.0, "augment": "none"}

# The study's rows: each adds one thing to the one before (Distiller's ablation order).
FIXED = {
    "student": {**BASE, "kd_weight": 0.0, "task_weight": 1.0},
    "logits_kd": BASE,
    "hidden_mse": {**BASE, "intermediate": "mse"},
    "mi_alpha": {**BASE, "intermediate": "mi_alpha"},
    "augment": {**BASE, "intermediate": "mi_alpha", "augment": "contextual"},
}


def sample(rng: np.random.Generator) -> dict:
    """One pipeline drawn uniformly from SPACE (a teacher always: kd_weight > 0)."""
    pipe = {k: v[int(rng.integers(len(v)))] for k, v in SPACE.items()}
    return canonical(pipe)


def canonical(pipe: dict) -> dict:
    """Unused knobs set to their BASE values, so equal pipelines compare equal."""
    pipe = {**BASE, **pipe}
    if pipe["logit_loss"] == "mse":  # MSE between logits has no temperature
        pipe["temperature"] = BASE["temperature"]
    if pipe["intermediate"] != "mi_alpha":
        pipe["mi_alpha"] = BASE["mi_alpha"]
    if pipe["intermediate"] == "none":
        pipe["intermediate_weight"], pipe["layer_map"] = BASE["intermediate_weight"], "skip"
    if pipe["kd_weight"] == 0:
        return dict(FIXED["student"])
    return pipe


def key(pipe: dict) -> str:
    return json.dumps(canonical(pipe), sort_keys=True)


def apply(c, pipe: dict, mlm_path: str = "") -> None:
    """Sets the config keys of `pipe` on a fine-tuning config `c` (teacher.path set by the
    caller; cleared when the pipeline has no teacher). An augmented row costs a row: the batch
    keeps its size, half of it augmented rows, so every pipeline sees the same rows per step
    and step for step the same compute (Distiller doubles the batch instead)."""
    pipe = canonical(pipe)
    d = c.distill
    d.kd_weight, d.task_weight = float(pipe["kd_weight"]), float(pipe["task_weight"])
    if pipe["kd_weight"] == 0:
        c.teacher.path = ""
    d.temperature = float(pipe["temperature"])
    d.logit_loss = pipe["logit_loss"]
    d.intermediate = "" if pipe["intermediate"] == "none" else pipe["intermediate"]
    d.intermediate_weight = float(pipe["intermediate_weight"])
    d.mi_alpha = float(pipe["mi_alpha"])
    d.layer_map = pipe["layer_map"]
    d.attention_weight = float(pipe["attention_weight"])
    kinds = AUGMENT_KINDS[pipe["augment"]]
    c.augment.kinds = kinds
    if kinds:
        c.augment.fraction = 0.5
        c.augment.mlm_path = mlm_path if "contextual" in kinds else ""


FEATURES = ("kd_weight", "task_weight", "temperature", "intermediate_weight", "mi_alpha",
            "attention_weight")


def features(pipe: dict) -> dict:
    """Numeric features: the weights as numbers, the categories one-hot."""
    pipe = canonical(pipe)
    out = {k: float(pipe[k]) for k in FEATURES}
    for name in ("logit_loss", "intermediate", "layer_map", "augment"):
        for v in SPACE[name]:
            out[f"{name}={v}"] = float(pipe[name] == v)
    out["has_intermediate"] = float(pipe["intermediate"] != "none")
    return out
