"""Random batches in the data pipeline's formats, for step tests and benchmarks (no data,
no tokenizer). Real runs read prune_ofa_jax/data."""

from __future__ import annotations

import numpy as np


def batch(task: str, batch_size: int, seq_len: int, vocab_size: int, *, max_predictions: int = 20,
          num_labels: int = 2, seed: int = 0, pad_fraction: float = 0.25) -> dict:
    """One host batch; the last `pad_fraction` of each row's tokens is padding (varied)."""
    rng = np.random.default_rng(seed)
    # Ordinary word pieces (BERT's specials sit below 1000); [MASK] is 103 in BERT vocabs.
    low, mask_id = min(1000, vocab_size // 4), min(103, vocab_size - 1)
    ids = rng.integers(low, vocab_size, (batch_size, seq_len), dtype=np.int32)
    lengths = seq_len - rng.integers(0, int(seq_len * pad_fraction) + 1, batch_size)
    mask = (np.arange(seq_len)[None] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask > 0, ids, 0).astype(np.int32)
    types = np.zeros_like(ids)
    types[:, seq_len // 2:] = 1
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types * mask}
    if task in ("pretraining", "mlm"):
        p = max_predictions
        pos = np.stack([np.sort(rng.choice(int(n) - 1, p, replace=False)) + 1 for n in lengths])
        out.update(masked_lm_positions=pos.astype(np.int32),
                   masked_lm_ids=np.take_along_axis(ids, pos, 1).astype(np.int32),
                   masked_lm_weights=np.ones((batch_size, p), np.float32))
        out["input_ids"] = ids.copy()
        np.put_along_axis(out["input_ids"], pos, mask_id, 1)
        if task == "pretraining":
            out["next_sentence_labels"] = rng.integers(0, 2, batch_size, dtype=np.int32)
    elif task == "cls":
        out["labels"] = (rng.normal(size=batch_size).astype(np.float32) if num_labels == 1
                         else rng.integers(0, num_labels, batch_size, dtype=np.int32))
    elif task == "qa":
        start = rng.integers(1, lengths // 2, dtype=np.int32)
        out.update(start_positions=start, end_positions=(start + 2).astype(np.int32))
    else:
        raise ValueError(f"unknown task {task!r}")
    return out
