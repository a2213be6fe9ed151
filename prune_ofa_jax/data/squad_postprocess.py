"""Start/end logits of SQuAD features -> answer text per question (HF run_qa / BERT style).

Per feature, the n_best highest start and end logits are paired; a pair counts when both tokens
lie in the context, end >= start and the span has at most max_answer_length tokens; its score
is start_logit + end_logit. Over all features of a question the best pair wins and its text is
the context between the character offsets of its start and end tokens ("" if none is valid).
"""

from typing import Dict, Sequence

import numpy as np


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, offsets: np.ndarray,
              n_best: int = 20, max_answer_length: int = 30):
    """(score, start token, end token) of one feature's best valid span, or None."""
    starts = np.argsort(start_logits)[::-1][:n_best]
    ends = np.argsort(end_logits)[::-1][:n_best]
    s, e = np.meshgrid(starts, ends, indexing="ij")
    valid = (offsets[s, 0] >= 0) & (offsets[e, 0] >= 0) & (e >= s) & (e - s + 1 <= max_answer_length)
    if not valid.any():
        return None
    score = np.where(valid, start_logits[s] + end_logits[e], -np.inf)
    i = np.unravel_index(np.argmax(score), score.shape)
    return float(score[i]), int(s[i]), int(e[i])


def predictions(examples: Sequence, example_index: np.ndarray, offsets: np.ndarray,
                start_logits: np.ndarray, end_logits: np.ndarray, n_best: int = 20,
                max_answer_length: int = 30) -> Dict[str, str]:
    """{example id: answer text}; every example gets an entry."""
    start_logits = np.asarray(start_logits, np.float32)
    end_logits = np.asarray(end_logits, np.float32)
    if start_logits.shape != offsets.shape[:2] or end_logits.shape != offsets.shape[:2]:
        raise ValueError(f"logits {start_logits.shape}/{end_logits.shape} do not match the "
                         f"features {offsets.shape[:2]}")
    best = {}
    for f in range(len(example_index)):
        span = best_span(start_logits[f], end_logits[f], offsets[f], n_best, max_answer_length)
        ex = int(example_index[f])
        if span is not None and (ex not in best or span[0] > best[ex][0]):
            best[ex] = (span[0], int(offsets[f, span[1], 0]), int(offsets[f, span[2], 1]))
    out = {}
    for i, ex in enumerate(examples):
        out[ex.id] = ex.context[best[i][1]:best[i][2]] if i in best else ""
    return out
