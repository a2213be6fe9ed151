"""GLUE metrics in numpy, as GLUE defines them per task.

accuracy (SST-2, MNLI-m/mm, QNLI, RTE, WNLI; also MRPC, QQP), F1 of the positive class (MRPC,
QQP), Matthews correlation (CoLA), Pearson and Spearman correlation (STS-B). `compute(task,
predictions, labels, weights)` takes logits [N, C] (argmax) or class ids [N], or scores [N] /
[N, 1] for STS-B; rows with weight 0 (eval padding) are ignored.
"""

from typing import Dict, Optional

import numpy as np

from prune_ofa_jax.data import glue


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(pred == labels))


def f1_binary(pred: np.ndarray, labels: np.ndarray) -> float:
    """F1 of class 1 (0 when there is no true or predicted positive, as scikit-learn)."""
    tp = float(np.sum((pred == 1) & (labels == 1)))
    denom = float(np.sum(pred == 1) + np.sum(labels == 1))
    return 0.0 if denom == 0 else 2 * tp / denom


def matthews_corr(pred: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class MCC (Gorodkin), = the binary phi coefficient; 0 when undefined."""
    classes = np.union1d(pred, labels)
    conf = np.array([[np.sum((labels == a) & (pred == b)) for b in classes] for a in classes],
                    np.float64)
    t, p = conf.sum(axis=1), conf.sum(axis=0)
    c, s = np.trace(conf), conf.sum()
    denom = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return 0.0 if denom == 0 else float((c * s - t @ p) / denom)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x @ x) * (y @ y))
    return float("nan") if denom == 0 else float(np.clip((x @ y) / denom, -1.0, 1.0))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (scipy.stats.rankdata 'average')."""
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    starts = np.flatnonzero(np.r_[True, sx[1:] != sx[:-1]])
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends - 1) / 2.0 + 1.0
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(_ranks(x), _ranks(y))


_FNS = {"accuracy": accuracy, "f1": f1_binary, "matthews_corr": matthews_corr,
        "pearson": pearson, "spearman": spearman}


def compute(task: str, predictions, labels, weights: Optional[np.ndarray] = None
            ) -> Dict[str, float]:
    """The task's metrics (names from glue.TASKS[task].metrics), plus "score": the first one."""
    spec = glue.task(task)
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if spec.is_regression:
        predictions = predictions.reshape(len(predictions), -1)[:, 0].astype(np.float64)
        labels = labels.astype(np.float64)
    elif predictions.ndim == 2:
        predictions = predictions.argmax(axis=-1)
    if weights is not None:
        keep = np.asarray(weights) > 0
        predictions, labels = predictions[keep], labels[keep]
    if len(predictions) != len(labels) or len(labels) == 0:
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    out = {name: _FNS[name](predictions, labels) for name in spec.metrics}
    out["score"] = out[spec.metrics[0]]
    return out
