"""Pre-training instances of one epoch: which token ranges form segments A and B.

An instance is a row of int64 [a_lo, a_hi, b_lo, b_hi, is_random_next]: half-open ranges into
the corpus' flat token array (sentences of a document are contiguous there, so every segment is
one range, even after truncation). The algorithm is BERT's `create_instances_from_document`
(google-research/bert), with one deliberate change: the short target length (probability
`short_seq_prob`) is drawn per instance, not once per document (with book-length documents a
per-document draw would make a whole book short), and one fix: BERT makes every chunk of a single
sentence (a sentence at least as long as the target) a random-next pair, which pushes the share
of random pairs well above 50% on text with long sentences; here such a chunk gets the following
sentences of its document as its actual next segment half of the time (at the end of a
document, where nothing follows, the sentence is cut at a random token into A and B), so the
NSP labels stay balanced.
"""

from typing import Tuple

import numpy as np

A_LO, A_HI, B_LO, B_HI, IS_RANDOM = range(5)


def _target(rng: np.random.Generator, max_tokens: int, short_seq_prob: float) -> int:
    if rng.random() < short_seq_prob:
        return int(rng.integers(2, max_tokens + 1))
    return max_tokens


def truncate_pair(la: int, lb: int, max_tokens: int) -> Tuple[int, int]:
    """How many tokens BERT's truncate_seq_pair removes from A and from B.

    It removes one token at a time from the longer segment (B on ties); this is its closed form.
    """
    excess = la + lb - max_tokens
    ta = tb = 0
    if excess <= 0:
        return 0, 0
    if la > lb:
        ta = min(excess, la - lb)
    elif lb > la:
        tb = min(excess, lb - la)
    excess -= ta + tb
    return ta + excess // 2, tb + (excess + 1) // 2


def _trim(lo: int, hi: int, n: int, rng: np.random.Generator) -> Tuple[int, int]:
    """Removes n tokens, each from the front or the back with probability 1/2 (as BERT)."""
    if n <= 0:
        return lo, hi
    front = int(rng.binomial(n, 0.5))
    return lo + front, hi - (n - front)


def nsp_plan(sent_starts: np.ndarray, doc_starts: np.ndarray, max_len: int,
             short_seq_prob: float, rng: np.random.Generator) -> np.ndarray:
    """Sentence-pair instances ([CLS] A [SEP] B [SEP]) with ~50% random next sentences."""
    max_tokens = max_len - 3
    num_docs = len(doc_starts) - 1
    out = []
    for d in range(num_docs):
        s0, s1 = int(doc_starts[d]), int(doc_starts[d + 1])
        target = _target(rng, max_tokens, short_seq_prob)
        chunk_start, length, i = s0, 0, s0
        while i < s1:
            length += int(sent_starts[i + 1] - sent_starts[i])
            if i == s1 - 1 or length >= target:
                n_chunk = i - chunk_start + 1
                a_end = chunk_start + (int(rng.integers(1, n_chunk)) if n_chunk >= 2 else 1)
                a_lo, a_hi = int(sent_starts[chunk_start]), int(sent_starts[a_end])
                is_random = int(rng.random() < 0.5 or (n_chunk == 1 and a_hi - a_lo < 2))
                if is_random:
                    b_lo, b_hi = _random_b(sent_starts, doc_starts, d, target - (a_hi - a_lo), rng)
                    i = a_end - 1  # the unused sentences of the chunk start the next one
                elif n_chunk == 1 and i < s1 - 1:  # one long sentence: B = the ones after it
                    b_lo, i = a_hi, _extend(sent_starts, a_hi, i + 1, s1, target - (a_hi - a_lo))
                    b_hi = int(sent_starts[i + 1])
                elif n_chunk == 1:  # the document's last sentence: B = its own second part
                    b_hi, a_hi = a_hi, a_lo + int(rng.integers(1, a_hi - a_lo))
                    b_lo = a_hi
                else:
                    b_lo, b_hi = a_hi, int(sent_starts[i + 1])
                ta, tb = truncate_pair(a_hi - a_lo, b_hi - b_lo, max_tokens)
                a_lo, a_hi = _trim(a_lo, a_hi, ta, rng)
                b_lo, b_hi = _trim(b_lo, b_hi, tb, rng)
                out.append((a_lo, a_hi, b_lo, b_hi, is_random))
                chunk_start, length = i + 1, 0
                target = _target(rng, max_tokens, short_seq_prob)
            i += 1
    return np.array(out, dtype=np.int64).reshape(-1, 5)


def _random_b(sent_starts, doc_starts, doc, target_b, rng):
    """Sentences from a random start in another document until target_b tokens are reached."""
    num_docs = len(doc_starts) - 1
    other = doc
    if num_docs > 1:
        other = int(rng.integers(0, num_docs - 1))
        other += other >= doc
    s0, s1 = int(doc_starts[other]), int(doc_starts[other + 1])
    j = int(rng.integers(s0, s1))
    lo = int(sent_starts[j])
    return lo, int(sent_starts[_extend(sent_starts, lo, j, s1, target_b) + 1])


def _extend(sent_starts, lo: int, j: int, s1: int, target: int) -> int:
    """Last sentence index of a run starting with sentence j (token lo) that reaches target
    tokens or the end of the document (sentence s1 - 1)."""
    while j < s1 - 1 and sent_starts[j + 1] - lo < target:
        j += 1
    return j


def mlm_plan(sent_starts: np.ndarray, doc_starts: np.ndarray, max_len: int,
             short_seq_prob: float, rng: np.random.Generator) -> np.ndarray:
    """Single-segment instances ([CLS] A [SEP]): consecutive sentences of one document packed up
    to the target length (RoBERTa's DOC-SENTENCES); over-long chunks lose their tail."""
    max_tokens = max_len - 2
    out = []
    for d in range(len(doc_starts) - 1):
        s0, s1 = int(doc_starts[d]), int(doc_starts[d + 1])
        target = _target(rng, max_tokens, short_seq_prob)
        lo = int(sent_starts[s0])
        for i in range(s0, s1):
            hi = int(sent_starts[i + 1])
            if i == s1 - 1 or hi - lo >= target:
                out.append((lo, min(hi, lo + max_tokens), 0, 0, 0))
                lo = hi
                target = _target(rng, max_tokens, short_seq_prob)
    return np.array(out, dtype=np.int64).reshape(-1, 5)
