"""What a classifier's predictions say beyond accuracy: per-class precision/recall/F1, the
confusion matrix, calibration (expected calibration error over 15 equal-width confidence
bins, and the reliability diagram's bins), seeded character-level typo noise, and bootstrap
intervals over dev rows (for one trained model: the dev sample's spread, not the seeds')."""

from __future__ import annotations

import random
import string
from typing import Sequence

import numpy as np

from prune_ofa_jax.eval import glue_metrics
from prune_ofa_jax.study import stats

ECE_BINS = 15


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def headline(task: str, pred: np.ndarray, labels: np.ndarray) -> dict:
    """The task's metrics: sst2 accuracy; mrpc F1 + accuracy; tweets positive-class F1
    (Kaggle's) + accuracy. `headline` names the one the study plots."""
    acc = glue_metrics.accuracy(pred, labels)
    if task == "sst2":
        return {"headline": "accuracy", "accuracy": acc}
    return {"headline": "f1", "f1": glue_metrics.f1_binary(pred, labels), "accuracy": acc}


def _codes_metric(task: str):
    """metric([seeds, rows] of pred * 2 + label codes) -> [seeds] headline values."""
    def metric(codes):
        pred, lab = codes // 2, codes % 2
        if task == "sst2":
            return (pred == lab).mean(axis=1)
        tp = ((pred == 1) & (lab == 1)).sum(1)
        wrong = (pred != lab).sum(1)
        return np.where(tp > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0)
    return metric


def row_interval(task: str, pred, labels, seed: int = 0, samples: int = 2000) -> dict:
    """The headline metric's 95 % percentile bootstrap interval over dev rows."""
    codes = (2 * np.asarray(pred) + np.asarray(labels))[None]
    rng = np.random.default_rng(seed)
    metric = _codes_metric(task)
    draws = metric(codes[:, rng.integers(0, codes.shape[1], (samples, codes.shape[1]))][0])
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"mean": float(metric(codes)[0]), "lo": float(lo), "hi": float(hi),
            "method": "bootstrap over dev rows"}


def paired_rows(task: str, pred_a, pred_b, labels, seed: int = 0) -> stats.Interval:
    """Headline(a) - headline(b) on the same dev rows: the paired bootstrap's interval."""
    lab = np.asarray(labels)
    return stats.paired_bootstrap((2 * np.asarray(pred_a) + lab)[None],
                                  (2 * np.asarray(pred_b) + lab)[None], seed=seed,
                                  metric=_codes_metric(task))


def per_class(pred: np.ndarray, labels: np.ndarray, num_classes: int = 2) -> dict:
    """{"precision"|"recall"|"f1"|"support": [per class], "confusion": [[true][pred]]}."""
    conf = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(conf, (labels, pred), 1)
    tp = np.diag(conf).astype(np.float64)
    prec = np.divide(tp, conf.sum(0), out=np.zeros_like(tp), where=conf.sum(0) > 0)
    rec = np.divide(tp, conf.sum(1), out=np.zeros_like(tp), where=conf.sum(1) > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0)
    return {"precision": prec.tolist(), "recall": rec.tolist(), "f1": f1.tolist(),
            "support": conf.sum(1).tolist(), "confusion": conf.tolist()}


def calibration(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict:
    """ECE = sum over bins of (bin share) * |accuracy - mean confidence|, on the top-class
    confidence; bins equal-width on (0, 1]. Returns the ECE and each bin's numbers."""
    conf = probs.max(-1)
    correct = (probs.argmax(-1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    out = {"count": [], "accuracy": [], "confidence": []}
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        out["count"].append(n)
        out["accuracy"].append(float(correct[sel].mean()) if n else None)
        out["confidence"].append(float(conf[sel].mean()) if n else None)
        if n:
            ece += n / len(conf) * abs(correct[sel].mean() - conf[sel].mean())
    return {"ece": float(ece), "bins": bins, **out}


def _typo(word: str, rng: random.Random) -> str:
    """One random character edit: swap two neighbours, delete, insert or substitute."""
    letters = string.ascii_lowercase
    i = rng.randrange(len(word))
    kind = rng.choice(("swap", "delete", "insert", "substitute") if len(word) > 1
                      else ("insert", "substitute"))
    if kind == "swap":
        i = min(i, len(word) - 2)
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "delete":
        return word[:i] + word[i + 1:]
    if kind == "insert":
        return word[:i] + rng.choice(letters) + word[i:]
    return word[:i] + rng.choice(letters.replace(word[i].lower(), "")) + word[i + 1:]


def add_typos(texts: Sequence[str], rate: float, seed: int = 0) -> list[str]:
    """Each text with round(rate * #words) of its alphabetic words (>= 1 when rate > 0 and
    the text has one) given one typo; the choice depends only on (seed, row)."""
    out = []
    for row, text in enumerate(texts):
        if text is None or rate <= 0:
            out.append(text)
            continue
        rng = random.Random(f"{seed}:{row}")
        words = text.split(" ")
        cand = [i for i, w in enumerate(words) if any(c.isalpha() for c in w)]
        n = min(len(cand), max(1, round(rate * len(cand)))) if cand else 0
        for i in rng.sample(cand, n):
            words[i] = _typo(words[i], rng)
        out.append(" ".join(words))
    return out
