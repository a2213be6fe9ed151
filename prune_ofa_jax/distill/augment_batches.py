"""Training batches with augmented rows (config.augment; the ops are distill/augment.py).

Each global batch of B rows holds B - round(fraction * B) original rows (their own seeded
epoch permutation, as without augmentation) and round(fraction * B) augmented rows: rows of
the offline pool (`copies` augmented copies of every training row, one offline kind drawn per
copy and row) or, with mixup alone, a second shuffled stream of the originals. With mixup,
the augmented rows are mixed among themselves. Every batch carries `label_weights`: 1 for
rows with a gold label, 0 for offline-augmented rows, which learn from the teacher's soft
labels only. `batch(step)` stays a pure function of (seed, step), so runs resume exactly.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from prune_ofa_jax import errors
from prune_ofa_jax.convert import loader
from prune_ofa_jax.data import common
from prune_ofa_jax.distill import augment_ops
from prune_ofa_jax.models import bert

log = logging.getLogger(__name__)

COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


def _fail(key: str, msg: str):
    raise errors.ConfigError(f"config.{key}: {msg}")


def check(c) -> None:
    a = c.augment
    if not a.kinds:
        return
    bad = [k for k in a.kinds if k not in augment_ops.KINDS]
    if bad:
        _fail("augment.kinds", f"{bad} not in {augment_ops.KINDS}")
    if c.data.kind not in ("glue", "tweets") or c.task != "cls":
        _fail("augment.kinds", "augmentation is for sentence classification (task cls, "
              "data.kind glue or tweets)")
    if not 0 < a.fraction < 1:
        _fail("augment.fraction", f"{a.fraction} must be in (0, 1)")
    if not 0 < a.rate < 1:
        _fail("augment.rate", f"{a.rate} must be in (0, 1)")
    if a.copies < 1 or a.pool_rows < 0:
        _fail("augment.copies", f"copies must be >= 1 and pool_rows >= 0, got {a.copies}, "
              f"{a.pool_rows}")
    if "contextual" in a.kinds and not a.mlm_path:
        _fail("augment.mlm_path", "contextual substitution needs a masked-LM checkpoint (e.g. "
              "the teacher-preparation run's model/)")
    if not c.distill.kd_weight > 0:
        _fail("distill.kd_weight", "augmented rows learn from the teacher's soft labels: set "
              "distill.kd_weight > 0 and teacher.path")


def _load_mlm(path: str):
    params, mcfg, task = loader.load(path, "mlm")
    if task not in ("mlm", "pretraining"):
        raise ValueError(f"config.augment.mlm_path={path}: a {task!r} checkpoint has no "
                         "masked-LM head; use a teacher-preparation (pretraining/mlm) model")
    return bert.BertFamily(mcfg, task), params


def build_pool(arrays: dict, tok, a, seed: int) -> dict:
    """The offline pool: `a.copies` augmented copies of each row (or of a seeded subset of
    `a.pool_rows` rows), one offline kind per copy and row drawn with the seed, plus
    `source` (the original row index)."""
    vocab = augment_ops.Vocab.from_tokenizer(tok)
    kinds = [k for k in a.kinds if k in augment_ops.OFFLINE]
    n_all = len(arrays["input_ids"])
    parts, sources = [], []
    mlm = _load_mlm(a.mlm_path) if "contextual" in kinds else None
    for copy in range(a.copies):
        src = np.arange(n_all)
        if 0 < a.pool_rows < n_all:
            src = np.sort(np.random.default_rng([seed, 19, copy]).permutation(n_all)[
                :a.pool_rows])
        n = len(src)
        pick = np.random.default_rng([seed, 17, copy]).integers(len(kinds), size=n)
        out = {k: np.asarray(arrays[k], np.int64)[src].copy() for k in COLUMNS}
        for i, kind in enumerate(kinds):
            rows = np.flatnonzero(pick == i)
            if rows.size == 0:
                continue
            sub = {k: out[k][rows] for k in COLUMNS}
            s = seed * 1009 + copy * 31 + i
            if kind == "contextual":
                res = augment_ops.contextual_rows(sub, mlm[0], mlm[1], a.rate, s, vocab,
                                              a.mlm_top_k)
            else:
                res = augment_ops.edit_rows(sub, kind, a.rate, s, vocab)
            for k in COLUMNS:
                out[k][rows] = res[k]
        parts.append(out)
        sources.append(src)
    pool = {k: np.concatenate([p[k] for p in parts]) for k in COLUMNS}
    pool["source"] = np.concatenate(sources)
    return pool


class AugmentedDataset:
    """Training source with augmented rows; `steps_per_epoch` counts the originals."""

    def __init__(self, base, tok, a, seed: int):
        self.base, self.a, self.seed = base, a, seed
        b = base.global_batch_size
        self.n_aug = int(round(a.fraction * b))
        self.n_orig = b - self.n_aug
        if self.n_aug < 1 or self.n_orig < 1:
            raise ValueError(f"config.augment.fraction={a.fraction}: batch {b} leaves no "
                             "original or no augmented rows")
        self.process_index, self.process_count = base.process_index, base.process_count
        self.local_batch_size = base.local_batch_size
        self.global_batch_size = b
        self.pool = None
        if any(k in augment_ops.OFFLINE for k in a.kinds):
            t0 = time.time()
            self.pool = build_pool(base.arrays, tok, a, seed)
            log.info("augmentation: %d offline rows (%s) in %.0f s", len(self.pool["source"]),
                     ", ".join(a.kinds), time.time() - t0)
        n_pool = base.num_rows if self.pool is None else len(self.pool["source"])
        self.orig_rows = common.ShuffledRows(base.num_rows, self.n_orig, seed, 0, 1)
        self.aug_rows = common.ShuffledRows(n_pool, self.n_aug, seed + 1, 0, 1)

    @property
    def steps_per_epoch(self) -> int:
        return self.orig_rows.steps_per_epoch

    @property
    def num_examples(self) -> int:
        return self.base.num_rows

    def global_batch(self, step: int) -> dict:
        orig = common.take_rows(self.base.arrays, self.orig_rows.global_indices(step),
                                self.base.dtypes)
        aug_idx = self.aug_rows.global_indices(step)
        if self.pool is None:
            aug = common.take_rows(self.base.arrays, aug_idx, self.base.dtypes)
            aug_w = np.ones(self.n_aug, np.float32)
        else:
            aug = {k: self.pool[k][aug_idx].astype(np.int32) for k in COLUMNS}
            aug["labels"] = np.asarray(self.base.arrays["labels"])[self.pool["source"][aug_idx]
                                                                   ].astype(orig["labels"].dtype)
            aug_w = np.zeros(self.n_aug, np.float32)
        batch = {k: np.concatenate([orig[k], aug[k]]) for k in orig}
        batch["label_weights"] = np.concatenate([np.ones(self.n_orig, np.float32), aug_w])
        if "mixup" in self.a.kinds:
            rows = np.arange(self.global_batch_size) >= self.n_orig
            batch = augment_ops.mixup_rows(batch, rows, np.random.default_rng([self.seed, 23, step]),
                                       self.a.mixup_alpha)
        return batch

    def batch(self, step: int) -> dict:
        """The local shard of global batch `step`."""
        lo = self.process_index * self.local_batch_size
        return {k: v[lo:lo + self.local_batch_size] for k, v in self.global_batch(step).items()}

    def eval_batches(self, batch_size: int):
        return self.base.eval_batches(batch_size)


def wrap(c, train, tok):
    """The run's training source: `train` itself, or with augmentation per config.augment."""
    if not c.augment.kinds:
        return train
    return AugmentedDataset(train, tok, c.augment, c.seed)
