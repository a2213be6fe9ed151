"""Dynamic masked-LM corruption of one packed row (BERT's create_masked_lm_predictions).

Of the row's maskable tokens (everything except special tokens and padding), round(mlm_prob * n)
are chosen (at least 1, at most max_predictions); each chosen token becomes [MASK] with
probability 0.8, a random non-special token with 0.1, and stays itself with 0.1. With whole-word
masking, words (a token plus its "##" continuations) are chosen as units: a word that would
overshoot the budget is skipped, as in BERT.
"""

import dataclasses
from typing import Optional, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    mask_id: int
    random_ids: np.ndarray          # ids a "random" replacement draws from (non-special tokens)
    continuation: Optional[np.ndarray] = None   # bool[vocab]; None = token-level masking
    mlm_prob: float = 0.15
    mask_ratio: float = 0.8
    random_ratio: float = 0.1


def _choose_words(cands: np.ndarray, is_cont: np.ndarray, budget: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Whole words (start + continuations at adjacent positions) within the budget."""
    starts = np.ones(len(cands), dtype=bool)
    starts[1:] = ~is_cont[1:] | (np.diff(cands) != 1)
    bounds = np.append(np.flatnonzero(starts), len(cands))
    chosen, total = [], 0
    for w in rng.permutation(len(bounds) - 1):
        size = bounds[w + 1] - bounds[w]
        if total + size > budget:
            continue
        chosen.append(cands[bounds[w]:bounds[w + 1]])
        total += size
        if total == budget:
            break
    return np.concatenate(chosen) if chosen else np.zeros(0, np.int64)


def mask_row(ids: np.ndarray, maskable: np.ndarray, max_predictions: int, cfg: MaskingConfig,
             rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Masks one row in place-free fashion.

    ids: int32 [L]; maskable: bool [L]. Returns (corrupted ids [L], positions [P], original
    ids [P], weights [P]) with P = max_predictions; unused slots are position 0, id 0, weight 0.
    """
    cands = np.flatnonzero(maskable)
    positions = np.zeros(max_predictions, np.int32)
    labels = np.zeros(max_predictions, np.int32)
    weights = np.zeros(max_predictions, np.float32)
    out = ids.copy()
    if cands.size == 0:
        return out, positions, labels, weights
    budget = min(max_predictions, max(1, int(round(cands.size * cfg.mlm_prob))))
    if cfg.continuation is None:
        picked = rng.permutation(cands)[:budget]
    else:
        picked = _choose_words(cands, cfg.continuation[ids[cands]], budget, rng)
    picked = np.sort(picked)
    k = picked.size
    positions[:k], labels[:k], weights[:k] = picked, ids[picked], 1.0
    r = rng.random(k)
    to_mask = r < cfg.mask_ratio
    to_random = (r >= cfg.mask_ratio) & (r < cfg.mask_ratio + cfg.random_ratio)
    out[picked[to_mask]] = cfg.mask_id
    out[picked[to_random]] = cfg.random_ids[rng.integers(0, cfg.random_ids.size,
                                                         int(to_random.sum()))]
    return out, positions, labels, weights
