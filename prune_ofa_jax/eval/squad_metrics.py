"""SQuAD v1.1 exact match and F1, as the official evaluate-v1.1.py defines them.

Answers are normalised (lower case, punctuation removed, articles a/an/the removed, whitespace
collapsed); EM and token-overlap F1 take the maximum over a question's gold answers; the
reported numbers are percentages averaged over questions.
"""

import collections
import re
import string
from typing import Dict, Sequence

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def max_over_truths(metric, prediction: str, truths: Sequence[str]) -> float:
    return max(metric(prediction, t) for t in truths)


def evaluate(gold: Dict[str, Sequence[str]], predictions: Dict[str, str]) -> Dict[str, float]:
    """{"exact_match", "f1"} in percent over all gold questions (a missing prediction scores 0,
    as in the official script, which also prints a message for it)."""
    if not gold:
        raise ValueError("no gold questions")
    em = f = 0.0
    for qid, truths in gold.items():
        if qid not in predictions:
            continue
        em += max_over_truths(exact_match, predictions[qid], truths)
        f += max_over_truths(f1, predictions[qid], truths)
    return {"exact_match": 100.0 * em / len(gold), "f1": 100.0 * f / len(gold)}
