"""GLUE metrics against scikit-learn / scipy on random predictions; SQuAD EM/F1 on
hand-checked examples (the official evaluate-v1.1.py definitions)."""

import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as skm

from prune_ofa_jax.eval import glue_metrics, squad_metrics


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 500)
    pred = np.where(rng.random(500) < 0.7, labels, rng.integers(0, 2, 500))
    assert glue_metrics.accuracy(pred, labels) == pytest.approx(skm.accuracy_score(labels, pred))
    assert glue_metrics.f1_binary(pred, labels) == pytest.approx(skm.f1_score(labels, pred))
    assert glue_metrics.matthews_corr(pred, labels) == pytest.approx(
        skm.matthews_corrcoef(labels, pred))
    three = rng.integers(0, 3, 300)
    guess = np.where(rng.random(300) < 0.5, three, rng.integers(0, 3, 300))
    assert glue_metrics.matthews_corr(guess, three) == pytest.approx(
        skm.matthews_corrcoef(three, guess))


def test_degenerate_classification_metrics():
    zeros = np.zeros(10, int)
    assert glue_metrics.matthews_corr(zeros, np.r_[zeros[:5], zeros[:5] + 1]) == 0.0
    assert glue_metrics.f1_binary(zeros, zeros) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    gold = np.round(rng.uniform(0, 5, 400), 1)  # ties, as in STS-B's scores
    pred = gold + rng.normal(0, 1.5, 400)
    pred[:50] = np.round(pred[:50])  # ties in the predictions too
    assert glue_metrics.pearson(pred, gold) == pytest.approx(scipy.stats.pearsonr(pred, gold)[0])
    assert glue_metrics.spearman(pred, gold) == pytest.approx(
        scipy.stats.spearmanr(pred, gold)[0])


def test_compute_per_task():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(100, 2))
    labels = rng.integers(0, 2, 100)
    ids = logits.argmax(-1)
    mrpc = glue_metrics.compute("mrpc", logits, labels)
    assert set(mrpc) == {"f1", "accuracy", "score"} and mrpc["score"] == mrpc["f1"]
    assert mrpc["accuracy"] == pytest.approx(skm.accuracy_score(labels, ids))
    cola = glue_metrics.compute("cola", ids, labels)
    assert cola["score"] == pytest.approx(skm.matthews_corrcoef(labels, ids))
    # weight-0 rows (eval padding) are ignored
    padded = glue_metrics.compute("sst2", np.r_[ids, 1 - labels[:10]], np.r_[labels, labels[:10]],
                                  weights=np.r_[np.ones(100), np.zeros(10)])
    assert padded["accuracy"] == pytest.approx(skm.accuracy_score(labels, ids))
    scores = rng.uniform(0, 5, 50)
    sts = glue_metrics.compute("stsb", (scores + rng.normal(size=50))[:, None], scores)
    assert set(sts) == {"pearson", "spearman", "score"}
    mnli = glue_metrics.compute("mnli", rng.normal(size=(60, 3)), rng.integers(0, 3, 60))
    assert set(mnli) == {"accuracy", "score"}
    with pytest.raises(ValueError):
        glue_metrics.compute("sst2", ids[:5], labels)


def test_squad_normalisation_and_scores():
    assert squad_metrics.normalize_answer("  The  Denver Broncos!") == "denver broncos"
    assert squad_metrics.normalize_answer("an apple, a pear") == "apple pear"
    assert squad_metrics.normalize_answer("Theatre") == "theatre"  # only whole-word articles
    assert squad_metrics.exact_match("the Broncos.", "Broncos") == 1.0
    assert squad_metrics.exact_match("Denver Broncos", "Broncos") == 0.0
    # F1 by hand: pred {denver, broncos}, gold {broncos}: P=1/2, R=1, F1=2/3
    assert squad_metrics.f1("Denver Broncos", "Broncos") == pytest.approx(2 / 3)
    # pred "x y c d" vs gold "c d e": overlap 2, P=2/4, R=2/3, F1=4/7
    assert squad_metrics.f1("x y c d", "c d e") == pytest.approx(4 / 7)
    assert squad_metrics.f1("x x y", "x y y") == pytest.approx(2 / 3)  # multiset overlap
    assert squad_metrics.f1("", "anything") == 0.0


def test_squad_evaluate_takes_the_best_gold_and_counts_missing():
    gold = {"q1": ["Denver Broncos", "Broncos"], "q2": ["Santa Clara"], "q3": ["1990"]}
    pred = {"q1": "Broncos", "q2": "Santa Clara, California"}
    got = squad_metrics.evaluate(gold, pred)
    # q1: EM 1, F1 1 (second gold); q2: EM 0, F1 2*(2/3*1)/(2/3+1) = 0.8; q3 missing: 0
    assert got["exact_match"] == pytest.approx(100 / 3)
    assert got["f1"] == pytest.approx(100 * 1.8 / 3)
