"""The studies' statistics on cases whose answer is known by hand."""

import math

import numpy as np
import pytest

from prune_ofa_jax.study import stats


def test_t_interval_known_case():
    # [1, 2, 3]: mean 2, sd 1, se 1/sqrt(3), t(0.975, 2) = 4.3027
    iv = stats.t_interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.n == 3
    assert iv.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert iv.fmt(scale=1, digits=2) == "2.00 [-0.48, 4.48]"
    one = stats.t_interval([0.7])
    assert one.lo is None and one.fmt() == "70.0 (n=1)"
    with pytest.raises(ValueError):
        stats.t_interval([1.0, float("nan")])


def test_paired_removes_shared_seed_variance():
    base = np.array([0.70, 0.80, 0.75, 0.90, 0.65])      # seeds differ a lot ...
    a, b = base + 0.02, base                              # ... a is always 2 points higher
    unpaired = stats.t_interval(a).half_width
    diff = stats.paired(a, b)
    assert diff.mean == pytest.approx(0.02) and diff.half_width == pytest.approx(0.0, abs=1e-12)
    assert unpaired > 0.05
    with pytest.raises(ValueError):
        stats.paired([1, 2], [1, 2, 3])


def test_paired_bootstrap_identical_and_shifted():
    rng = np.random.default_rng(0)
    a = (rng.random((3, 400)) < 0.8).astype(float)
    same = stats.paired_bootstrap(a, a.copy(), samples=300)
    assert same.mean == 0.0 and same.lo == 0.0 and same.hi == 0.0
    b = a.copy()
    b[:, :40] = 0.0  # b loses up to 10 % of the rows a got right
    diff = stats.paired_bootstrap(a, b, samples=300)
    expected = float(a[:, :40].mean() * 40 / 400)
    assert diff.mean == pytest.approx(expected) and 0 < diff.lo < diff.mean < diff.hi


def test_chance_baselines():
    y = [1, 1, 1, 0]
    maj = stats.majority(y)
    assert maj["accuracy"] == 0.75 and maj["class"] == 1 and maj["f1"] == pytest.approx(6 / 7)
    rnd = stats.uniform_random(y)
    assert rnd["accuracy"] == 0.5 and rnd["f1"] == pytest.approx(2 * 0.75 * 0.5 / 1.25)
    assert stats.majority([0, 0, 1])["f1"] == 0.0


def test_rule_verdicts():
    ni = stats.Rule("prune_ofa", "task_gmp", margin=0.01)
    assert ni.verdict(stats.Interval(0.0, -0.005, 0.005, 5)) == "holds"
    assert ni.verdict(stats.Interval(-0.03, -0.04, -0.02, 5)) == "fails"
    assert ni.verdict(stats.Interval(-0.01, -0.02, 0.0, 5)) == "undecided"
    sup = stats.Rule("obs", "gmp", margin=0.0)
    assert sup.verdict(stats.Interval(0.01, 0.001, 0.02, 3)) == "holds"
    assert sup.verdict(stats.Interval(0.0, -0.01, 0.01, 3)) == "undecided"
    assert sup.verdict(stats.Interval(-0.02, -0.03, -0.01, 3)) == "fails"
    assert sup.verdict(stats.Interval(0.01, None, None, 1)) == "n < 2"
