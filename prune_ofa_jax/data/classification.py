"""Sentence(-pair) classification/regression examples and their batches (GLUE, tweets).

    ex = glue.load("sst2", "train", data_dir)          # -> Examples
    ds = classification.ClassificationDataset(ex, tokenizer, max_len=128, batch_size=32, seed=0)
    ds.batch(step)                 # training: shuffled per epoch, local shard, remainder dropped
    for b in ds.eval_batches(64):  # evaluation: every row once, in order, last batch padded
        ...

Batch keys: input_ids, attention_mask, token_type_ids int32 [B, L]; labels int32 [B] (float32 for
regression); eval batches add weights float32 [B] (0 for padding rows, which repeat row 0).
"""

import dataclasses
from typing import Optional, Sequence

import numpy as np

from prune_ofa_jax.data import common, tokenization


@dataclasses.dataclass(frozen=True)
class Examples:
    """Parallel columns. text_b is None for single-sentence tasks. labels: int64 class ids (-1
    where the split has no labels, e.g. GLUE test) or float32 scores (regression)."""
    text_a: Sequence[str]
    text_b: Optional[Sequence[str]]
    labels: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return len(self.text_a)

    def subset(self, idx: np.ndarray) -> "Examples":
        pick = lambda col: None if col is None else [col[i] for i in idx]
        return Examples(pick(self.text_a), pick(self.text_b), self.labels[idx], self.source)


def stratified_split(examples: Examples, eval_fraction: float, seed: int = 0):
    """(train, eval) with each class split in the same proportion; seeded, order-preserving."""
    rng = np.random.default_rng([seed, 11])
    eval_idx = []
    for c in np.unique(examples.labels):
        members = np.flatnonzero(examples.labels == c)
        n = int(round(eval_fraction * members.size))
        eval_idx.append(rng.choice(members, n, replace=False))
    is_eval = np.zeros(len(examples), bool)
    is_eval[np.concatenate(eval_idx)] = True
    return examples.subset(np.flatnonzero(~is_eval)), examples.subset(np.flatnonzero(is_eval))


class ClassificationDataset(common.ArrayDataset):
    """Tokenised once at construction ([CLS] a [SEP] (b [SEP]), truncated longest-first)."""

    def __init__(self, examples: Examples, tokenizer, *, max_len: int = 128, batch_size: int = 32,
                 seed: int = 0, process_index: Optional[int] = None,
                 process_count: Optional[int] = None):
        if len(examples) == 0:
            raise common.DataError(f"{examples.source}: no examples")
        self.examples, self.max_len = examples, max_len
        self.is_regression = bool(np.issubdtype(examples.labels.dtype, np.floating))
        arrays = tokenization.encode_pairs(tokenizer, examples.text_a, examples.text_b, max_len)
        arrays["labels"] = examples.labels
        super().__init__(arrays, batch_size, seed, process_index, process_count,
                         dtypes={"labels": np.float32 if self.is_regression else np.int32})

    @property
    def num_examples(self) -> int:
        return len(self.examples)
