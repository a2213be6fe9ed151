"""NSP pairing, packing and dynamic masking of one batch of prepared chunks, vectorised.

Every random choice of a row is a pure function of (seed, n), where n is the row's global
sample number (its place in the run's sample stream): a counter-based hash (SplitMix64), not
a stateful generator. So a row is the same whichever process or worker builds it and however
the global batch is split over hosts, and the draws of a whole batch are a few numpy array
operations instead of a generator per row (`pretraining.PretrainingDataset` seeds one per
row; that costs more than the row itself at 25k rows/s).

A row from chunk c (records.py: the sentences of one document up to seq_len - 3 tokens):
  target  max_len - 3 tokens, or with probability short_seq_prob uniform in [2, max_len - 3]
          (BERT's short sequences); the chunk's sentences are used up to the target;
  A       its first k sentences, k uniform in [1, used - 1];
  B       with probability 1/2 (and always when there is nothing to split) a random next:
          sentences from a random place in a chunk of another document; otherwise the actual
          next: the chunk's remaining used sentences, or, for a one-sentence chunk, the
          sentence cut at a random token into A and B;
  then BERT's truncate_seq_pair (instances.truncate_pair), removing tokens from the front or
  the back at random (Binomial(n, 1/2) by its normal approximation), and masking as
  masking.mask_row (token level: whole-word masking is not vectorised yet).
With nsp=False a row is the used sentences alone ([CLS] A [SEP], truncated to max_len - 2).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Sequence

import numpy as np

from prune_ofa_jax.data import instances, masking, records

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
(_SHORT, _TARGET, _SPLIT, _RANDOM, _PARTNER, _B_START, _CUT, _TRIM_A, _TRIM_B, _NORMAL,
 _MASK_ORDER, _MASK_KIND, _MASK_ID) = range(13)


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """A tokenizer's special ids (a plain record: Grain workers unpickle it without importing
    the tokenizer libraries)."""
    cls: int
    sep: int
    pad: int
    mask: int
    all: np.ndarray


def _mix(x):
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class Draws:
    """Uniform [0, 1) draws u(stream, j) for rows with keys (seed, n)."""

    def __init__(self, seed: int, n: np.ndarray):
        with np.errstate(over="ignore"):
            self.keys = _mix(np.asarray(n, np.uint64) + _GOLDEN * np.uint64(seed + 1))

    def __call__(self, stream: int, width: int = 0) -> np.ndarray:
        cols = np.arange(max(width, 1), dtype=np.uint64) + (np.uint64(stream) << np.uint64(32))
        with np.errstate(over="ignore"):
            h = _mix(self.keys[:, None] ^ _mix(cols + _GOLDEN)[None, :])
        u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
        return u if width else u[:, 0]


def permute(i: np.ndarray, n: int, key: int) -> np.ndarray:
    """A keyed bijection of [0, n) applied to i (vectorised): a 4-round Feistel network on
    the smallest even number of bits covering n, cycle-walking values >= n back into range.
    The index sampler's per-epoch permutation in O(1) memory (as Grain's index_shuffle, but
    a whole batch per numpy call)."""
    half = max(1, (int(n - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    x = np.asarray(i, np.uint64)
    todo = np.ones(x.shape, bool)
    with np.errstate(over="ignore"):
        keys = _mix(np.arange(4, dtype=np.uint64) + np.uint64(key) * _GOLDEN)
        while todo.any():
            left, right = x[todo] >> np.uint64(half), x[todo] & mask
            for k in keys:
                left, right = right, left ^ (_mix(right ^ k) & mask)
            x[todo] = (left << np.uint64(half)) | right
            todo = x >= np.uint64(n)
    return x.astype(np.int64)


def _int(u: np.ndarray, lo, hi) -> np.ndarray:
    """Uniform integers in [lo, hi) from uniforms u (hi > lo elementwise)."""
    return (lo + np.floor(u * (np.asarray(hi) - lo))).astype(np.int64)


def _used(c: records.Chunk, target: int) -> int:
    """How many of the chunk's sentences the target length uses (at least one)."""
    return int(min(np.searchsorted(np.cumsum(c.sent_lens), target) + 1, c.sent_lens.size))


class Batcher:
    """chunks + their sample numbers -> a batch dict (the layout of pretraining.py)."""

    def __init__(self, special, mask_cfg: masking.MaskingConfig, *, max_len: int,
                 max_predictions: int, seed: int, nsp: bool = True,
                 short_seq_prob: float = 0.1):
        self.ids, self.mask_cfg, self.max_len = special, mask_cfg, max_len
        self.max_predictions, self.seed, self.nsp = max_predictions, seed, nsp
        self.short_seq_prob = short_seq_prob

    def __call__(self, n: np.ndarray, chunks: Sequence[records.Chunk],
                 partner: Callable[[np.ndarray], Sequence[records.Chunk]]) -> Dict:
        """`partner(u, rows)`: chunks for the rows (a bool mask) that take a random next,
        drawn with the uniforms u."""
        d = Draws(self.seed, n)
        a, b, is_random = self._segments(d, chunks, partner)
        ids, types, maskable = self._pack(a, b)
        ids, pos, labels, weights = self._mask(d, ids, maskable)
        attention = (ids != self.ids.pad).astype(np.int32)
        return {"input_ids": ids, "attention_mask": attention, "token_type_ids": types,
                "masked_lm_positions": pos, "masked_lm_ids": labels,
                "masked_lm_weights": weights, "next_sentence_labels": is_random}

    def _segments(self, d: Draws, chunks, partner):
        """Token arrays of A and B per row, and the NSP labels."""
        rows = len(chunks)
        max_tokens = self.max_len - (3 if self.nsp else 2)
        short = d(_SHORT) < self.short_seq_prob
        target = np.where(short, _int(d(_TARGET), 2, max_tokens + 1), max_tokens)
        used = np.array([_used(c, t) for c, t in zip(chunks, target)], np.int64)
        if not self.nsp:
            a = [c.tokens[:c.sent_lens[:u].sum()][:max_tokens] for c, u in zip(chunks, used)]
            return a, [np.zeros(0, np.int32)] * rows, np.zeros(rows, np.int32)
        k = np.where(used >= 2, _int(d(_SPLIT), 1, np.maximum(used, 2)), 1)
        a_len = np.array([c.sent_lens[:kk].sum() for c, kk in zip(chunks, k)], np.int64)
        is_random = (d(_RANDOM) < 0.5) | ((used == 1) & (a_len < 2))
        others = dict(zip(np.flatnonzero(is_random),
                          partner(d(_PARTNER)[is_random], is_random) if is_random.any() else []))
        a, b = [], []
        cut, b_start = d(_CUT), d(_B_START)
        for i, c in enumerate(chunks):
            seg_a = c.tokens[:a_len[i]]
            if is_random[i]:
                o = others[i]
                lo = int(o.sent_lens[:int(b_start[i] * o.sent_lens.size)].sum())
                seg_b = o.tokens[lo:lo + max(int(target[i]) - seg_a.size, 1)]
            elif used[i] >= 2:
                seg_b = c.tokens[a_len[i]:c.sent_lens[:used[i]].sum()]
            else:  # one sentence: cut it at a random token (A and B stay contiguous)
                at = 1 + int(cut[i] * (seg_a.size - 1))
                seg_a, seg_b = seg_a[:at], seg_a[at:]
            a.append(seg_a)
            b.append(seg_b)
        a, b = self._truncate(d, a, b, max_tokens)
        return a, b, is_random.astype(np.int32)

    def _truncate(self, d: Draws, a, b, max_tokens: int):
        """truncate_seq_pair, each side trimmed at a random mix of front and back."""
        u = d(_NORMAL, 2)  # Box-Muller: two independent standard normals per row
        radius, angle = np.sqrt(-2 * np.log1p(-u[:, 0])), 2 * np.pi * u[:, 1]
        z_a, z_b = radius * np.cos(angle), radius * np.sin(angle)
        cut = np.array([instances.truncate_pair(x.size, y.size, max_tokens)
                        for x, y in zip(a, b)], np.int64).reshape(-1, 2)
        front_a, front_b = _fronts(cut[:, 0], z_a), _fronts(cut[:, 1], z_b)
        return ([x[f:x.size - (t - f)] for x, t, f in zip(a, cut[:, 0], front_a)],
                [y[f:y.size - (t - f)] for y, t, f in zip(b, cut[:, 1], front_b)])

    def _pack(self, a, b):
        """[CLS] A [SEP] B [SEP] [PAD]... for all rows at once."""
        rows, L = len(a), self.max_len
        la = np.array([x.size for x in a], np.int64)
        lb = np.array([x.size for x in b], np.int64)
        flat_a = np.concatenate(a) if la.sum() else np.zeros(0, np.int32)
        flat_b = np.concatenate(b) if lb.sum() else np.zeros(0, np.int32)
        off_a = np.concatenate([[0], np.cumsum(la)[:-1]])
        off_b = np.concatenate([[0], np.cumsum(lb)[:-1]])
        j = np.arange(L)[None, :]
        in_a = (j >= 1) & (j <= la[:, None])
        sep_a = j == la[:, None] + 1
        has_b = (lb > 0)[:, None]
        in_b = has_b & (j >= la[:, None] + 2) & (j < la[:, None] + 2 + lb[:, None])
        sep_b = has_b & (j == la[:, None] + 2 + lb[:, None])
        ids = np.full((rows, L), self.ids.pad, np.int32)
        ids[:, 0] = self.ids.cls
        ids[in_a] = flat_a[np.broadcast_to(off_a[:, None] + j - 1, (rows, L))[in_a]]
        ids[in_b] = flat_b[np.broadcast_to(off_b[:, None] + j - la[:, None] - 2,
                                           (rows, L))[in_b]]
        ids[sep_a | sep_b] = self.ids.sep
        types = ((j >= la[:, None] + 2) & (j <= la[:, None] + 2 + lb[:, None]) & has_b)
        maskable = (in_a | in_b) & ~np.isin(ids, self.ids.all)
        return ids, types.astype(np.int32), maskable

    def _mask(self, d: Draws, ids, maskable):
        """masking.mask_row for every row: a random prefix of the candidates, in order."""
        cfg, P = self.mask_cfg, self.max_predictions
        rows = ids.shape[0]
        count = maskable.sum(1)
        budget = np.where(count > 0, np.minimum(P, np.maximum(1, np.round(count * cfg.mlm_prob))),
                          0).astype(np.int64)
        score = np.where(maskable, d(_MASK_ORDER, ids.shape[1]), 2.0)
        low = np.argpartition(score, P - 1, axis=1)[:, :P]  # the P lowest, unordered
        order = np.take_along_axis(low, np.argsort(np.take_along_axis(score, low, 1), 1), 1)
        valid = np.arange(P)[None, :] < budget[:, None]
        pos = np.sort(np.where(valid, order, ids.shape[1]), axis=1)
        valid = pos < ids.shape[1]
        pos = np.where(valid, pos, 0).astype(np.int32)
        labels = np.where(valid, np.take_along_axis(ids, pos, 1), 0).astype(np.int32)
        r = d(_MASK_KIND, P)
        to_mask = valid & (r < cfg.mask_ratio)
        to_random = valid & (r >= cfg.mask_ratio) & (r < cfg.mask_ratio + cfg.random_ratio)
        rand = cfg.random_ids[_int(d(_MASK_ID, P), 0, cfg.random_ids.size)]
        out = ids.copy()
        row = np.broadcast_to(np.arange(rows)[:, None], pos.shape)
        out[row[to_mask], pos[to_mask]] = cfg.mask_id
        out[row[to_random], pos[to_random]] = rand[to_random]
        return out, pos, labels, valid.astype(np.float32)


def _fronts(n: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Of n tokens to remove, how many from the front: ~Binomial(n, 1/2) (normal approx.)."""
    return np.clip(np.round(n / 2 + np.sqrt(n) / 2 * z), 0, n).astype(np.int64)
