"""The statistics every study reports: a mean with its 95 % interval over seeds, paired
differences for the comparisons a study is about, a paired bootstrap over dev rows and
seeds, the chance baselines (majority class, uniform random) and a stated decision rule.

- `t_interval(values)`: the mean and its Student-t interval over independent seeds
  (n - 1 degrees of freedom); n = 1 gives no interval (None), never a fake one.
- `paired(a, b)`: the mean of a - b over seeds paired by seed (same data order, same
  initial head), its t interval; pairing removes the seed-to-seed variance both rows share.
- `paired_bootstrap(a, b)`: per-row scores [seeds, rows] of two systems; resamples seeds and
  dev rows together and returns the percentile interval of the mean difference (for a
  metric that is a mean over rows: accuracy; see the function for F1).
- `majority(labels)`, `uniform_random(labels)`: what predicting the commonest class, or a
  class at random, scores on a dev set: every table and plot carries them.
- `Rule`: a decision rule stated before the runs ("A >= B - margin on the interval") and
  the verdict it gives on a measured paired interval.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
    """mean with [lo, hi] (None when n < 2), over n values."""
    mean: float
    lo: Optional[float]
    hi: Optional[float]
    n: int

    @property
    def half_width(self) -> Optional[float]:
        return None if self.lo is None else (self.hi - self.lo) / 2

    def to_dict(self) -> dict:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n,
                "half_width": self.half_width}

    def fmt(self, scale: float = 100.0, digits: int = 1) -> str:
        """'80.1 [78.3, 81.9]' (scaled, e.g. to points); the mean alone when n < 2."""
        m = f"{scale * self.mean:.{digits}f}"
        if self.lo is None:
            return f"{m} (n={self.n})"
        return f"{m} [{scale * self.lo:.{digits}f}, {scale * self.hi:.{digits}f}]"


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and Student-t interval of independent values (e.g. one score per seed)."""
    x = np.asarray(values, np.float64)
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"t_interval needs a non-empty 1-d array of finite values, got {x}")
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, None, None, int(x.size))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, x.size - 1)
                 * x.std(ddof=1) / math.sqrt(x.size))
    return Interval(mean, mean - half, mean + half, int(x.size))


def paired(a: Sequence[float], b: Sequence[float],
           confidence: float = CONFIDENCE) -> Interval:
    """a - b paired element by element (by seed): the mean difference and its t interval."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same shape, got {a.shape} and {b.shape}")
    return t_interval(a - b, confidence)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, samples: int = 2000, seed: int = 0,
                     metric: Optional[Callable] = None,
                     confidence: float = CONFIDENCE) -> Interval:
    """Percentile interval of mean(metric(a)) - mean(metric(b)) resampling seeds and dev rows
    together (the same resample for both systems: paired).

    a, b: [seeds, rows] per-row values (e.g. 1.0 for a correct prediction). `metric(x)`
    ([seeds, rows] -> [seeds]) turns a resample into one score per seed; the default is the
    mean over rows. A metric that is not a mean over rows (F1) passes its own, e.g. from
    per-row predictions and labels stacked into `a` and `b`."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"paired_bootstrap needs two [seeds, rows] arrays of one shape, got "
                         f"{a.shape} and {b.shape}")
    metric = metric or (lambda x: x.mean(axis=1))
    rng = np.random.default_rng(seed)
    n_seeds, n_rows = a.shape
    diffs = np.empty(samples)
    for i in range(samples):
        s = rng.integers(0, n_seeds, n_seeds)
        r = rng.integers(0, n_rows, n_rows)
        diffs[i] = np.mean(metric(a[np.ix_(s, r)])) - np.mean(metric(b[np.ix_(s, r)]))
    tail = 100 * (1 - confidence) / 2
    mean = float(np.mean(metric(a)) - np.mean(metric(b)))
    lo, hi = np.percentile(diffs, [tail, 100 - tail])
    return Interval(mean, float(lo), float(hi), n_seeds)


def majority(labels: Sequence[int]) -> dict:
    """Accuracy and binary F1 (of class 1) of always predicting the commonest class."""
    y = np.asarray(labels)
    values, counts = np.unique(y, return_counts=True)
    top = values[np.argmax(counts)]
    acc = float(np.mean(y == top))
    f1 = _binary_f1(y, np.full_like(y, top)) if set(values.tolist()) <= {0, 1} else None
    return {"accuracy": acc, "f1": f1, "class": top.item()}


def uniform_random(labels: Sequence[int], num_classes: Optional[int] = None) -> dict:
    """Expected accuracy and binary F1 of predicting a class uniformly at random."""
    y = np.asarray(labels)
    k = num_classes or int(y.max()) + 1
    out = {"accuracy": 1.0 / k, "f1": None}
    if k == 2:  # precision = P(y=1), recall = 1/2
        p = float(np.mean(y == 1))
        out["f1"] = 0.0 if p == 0 else 2 * p * 0.5 / (p + 0.5)
    return out


def _binary_f1(y: np.ndarray, pred: np.ndarray) -> float:
    tp = float(np.sum((pred == 1) & (y == 1)))
    fp = float(np.sum((pred == 1) & (y == 0)))
    fn = float(np.sum((pred == 0) & (y == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


@dataclasses.dataclass(frozen=True)
class Rule:
    """A decision rule stated before the runs, on the paired interval of a - b: with a margin
    > 0, non-inferiority (a holds when the interval's lower end is >= -margin); with margin
    0, superiority (a holds when the whole interval is above 0). `margin` is in the metric's
    units (0.01 = one point of accuracy)."""
    a: str
    b: str
    margin: float
    text: str = ""

    def verdict(self, diff: Interval) -> str:
        """'holds', 'fails' (the whole interval is on the wrong side of the bound),
        'undecided' (it straddles the bound), or 'n < 2' (no interval)."""
        if diff.lo is None:
            return "n < 2"
        bound = -self.margin
        if diff.lo > bound or (self.margin > 0 and diff.lo == bound):
            return "holds"
        if diff.hi < bound or (self.margin == 0 and diff.hi == bound):
            return "fails"
        return "undecided"
