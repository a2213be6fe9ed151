"""Data augmentation for task distillation (Distiller's axis 3), on tokenised rows.

Offline (once, before training; seeded, so a rerun or a resumed run builds the same rows):
* `swap` / `delete`: random word swaps / deletions inside each segment (a word is a token
  and its "##" continuations; [CLS]/[SEP] stay in place, a segment keeps >= 1 word);
* `contextual`: a fraction of the one-token words is masked and refilled by sampling from a
  masked LM (ours: e.g. MiniLM with the MLM head of the teacher-preparation run), among its
  top-k word tokens other than the original, all rows in fixed-size batches through one
  jitted function.
Online, per batch (`mixup_rows`): word-embedding mixup with a shuffled partner row,
lambda ~ Beta(0.4, 0.4) per row, the hard labels soft-mixed (models/layers.py mixes).

Augmented rows have no gold label: they are distilled from the teacher's soft labels only
(`label_weights` 0; distill/augmented.py builds the batches, train/objectives.py the loss).
Every function keeps each row's length <= max_len, its attention mask a prefix of ones and
its token types consistent with its segments.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from prune_ofa_jax.data import tokenization

OFFLINE = ("swap", "delete", "contextual")
KINDS = OFFLINE + ("mixup",)


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Per-token tables of a WordPiece vocabulary."""
    continuation: np.ndarray   # bool[V]: "##" pieces
    special: np.ndarray        # bool[V]: [CLS], [SEP], [PAD], [MASK], [UNK], ...
    word: np.ndarray           # bool[V]: whole alphabetic words (candidates / replacements)
    pad_id: int
    mask_id: int

    @classmethod
    def from_tokenizer(cls, tok) -> "Vocab":
        size = tokenization.vocab_size(tok)
        special = np.zeros(size, bool)
        special[tokenization.special_ids(tok)] = True
        word = np.zeros(size, bool)
        for t, i in tok.get_vocab().items():
            if i < size:
                word[i] = t.isalpha() and t.isascii()
        return cls(tokenization.continuation_table(tok), special, word & ~special,
                   int(tok.pad_token_id), int(tok.mask_token_id))


def _chunks(ids, types, vocab: Vocab):
    """A row's real tokens as [("special", id, type) | ("words", [[ids], ...], type)]."""
    out = []
    for tok, typ in zip(ids.tolist(), types.tolist()):
        if vocab.special[tok]:
            out.append(("special", tok, typ))
        elif out and out[-1][0] == "words" and vocab.continuation[tok] and out[-1][1]:
            out[-1][1][-1].append(tok)
        elif out and out[-1][0] == "words":
            out[-1][1].append([tok])
        else:
            out.append(("words", [[tok]], typ))
    return out


def _assemble(chunks, max_len: int, pad_id: int):
    ids, types = [], []
    for kind, val, typ in chunks:
        toks = [val] if kind == "special" else [t for w in val for t in w]
        ids += toks
        types += [typ] * len(toks)
    n = len(ids)
    if n > max_len:
        raise AssertionError(f"augmented row grew to {n} > {max_len} tokens")
    row = np.full(max_len, pad_id, np.int64)
    row[:n] = ids
    tt = np.zeros(max_len, np.int64)
    tt[:n] = types
    return row, (np.arange(max_len) < n).astype(np.int64), tt


def _swap(words, rng, rate):
    words = list(words)
    if len(words) >= 2:
        for _ in range(max(1, round(rate * len(words)))):
            i, j = rng.choice(len(words), 2, replace=False)
            words[i], words[j] = words[j], words[i]
    return words


def _delete(words, rng, rate):
    keep = rng.random(len(words)) >= rate
    if not keep.any():
        keep[rng.integers(len(words))] = True
    return [w for w, k in zip(words, keep) if k]


def edit_rows(arrays: dict, kind: str, rate: float, seed: int, vocab: Vocab) -> dict:
    """`swap` or `delete` applied to every row; rng per row = (seed, row), so a row's
    result does not depend on the others."""
    op = {"swap": _swap, "delete": _delete}[kind]
    n, max_len = arrays["input_ids"].shape
    out = {k: np.zeros((n, max_len), np.int64) for k in ("input_ids", "attention_mask",
                                                         "token_type_ids")}
    for r in range(n):
        rng = np.random.default_rng([seed, r])
        real = int(arrays["attention_mask"][r].sum())
        chunks = [(k, op(v, rng, rate) if k == "words" else v, t) for k, v, t in _chunks(
            arrays["input_ids"][r, :real], arrays["token_type_ids"][r, :real], vocab)]
        ids, mask, tt = _assemble(chunks, max_len, vocab.pad_id)
        out["input_ids"][r], out["attention_mask"][r], out["token_type_ids"][r] = ids, mask, tt
    return out


# --- contextual substitution with a masked LM ------------------------------------------

def pick_positions(arrays: dict, rate: float, seed: int, vocab: Vocab, max_picks: int):
    """positions [N, max_picks] and weights [N, max_picks] of the one-token words to refill:
    round(rate * words in the row), at least 1 where the row has a candidate."""
    ids, mask = arrays["input_ids"], arrays["attention_mask"].astype(bool)
    nxt = np.concatenate([ids[:, 1:], np.full((ids.shape[0], 1), vocab.pad_id)], 1)
    nxt_real = np.concatenate([mask[:, 1:], np.zeros((ids.shape[0], 1), bool)], 1)
    whole = vocab.word[ids] & mask & ~(vocab.continuation[nxt] & nxt_real)
    starts = mask & ~vocab.special[ids] & ~vocab.continuation[ids]
    pos = np.zeros((ids.shape[0], max_picks), np.int64)
    w = np.zeros((ids.shape[0], max_picks), np.float32)
    for r in range(ids.shape[0]):
        cand = np.flatnonzero(whole[r])
        if cand.size == 0:
            continue
        k = min(max_picks, cand.size, max(1, round(rate * int(starts[r].sum()))))
        pick = np.sort(np.random.default_rng([seed, r, 1]).choice(cand, k, replace=False))
        pos[r, :k], w[r, :k] = pick, 1.0
    return pos, w


@functools.lru_cache(maxsize=4)
def _refill_fn(model, top_k: int):
    """jitted (params, ids, mask, types, positions, allowed, key) -> sampled ids [B, P]."""
    def refill(params, ids, mask, types, positions, allowed, key):
        out = model.apply({"params": params}, ids, mask, types, masked_positions=positions)
        logits = jnp.asarray(out["mlm_logits"], jnp.float32)            # [B, P, V]
        original = jnp.take_along_axis(ids, positions, 1)
        logits = jnp.where(allowed[None, None, :], logits, -jnp.inf)
        logits = jnp.where(jax.nn.one_hot(original, logits.shape[-1], dtype=bool), -jnp.inf,
                           logits)
        top, idx = jax.lax.top_k(logits, top_k)
        choice = jax.random.categorical(key, top, axis=-1)
        return jnp.take_along_axis(idx, choice[..., None], -1)[..., 0]
    return jax.jit(refill)


def contextual_rows(arrays: dict, model, params, rate: float, seed: int, vocab: Vocab,
                    top_k: int = 20, batch_size: int = 64) -> dict:
    """Each row with round(rate * words) one-token words replaced by MLM samples."""
    n, max_len = arrays["input_ids"].shape
    max_picks = max(1, int(np.ceil(rate * max_len)))
    positions, weights = pick_positions(arrays, rate, seed, vocab, max_picks)
    ids = np.asarray(arrays["input_ids"], np.int64)
    masked = ids.copy()
    rows = np.arange(n)[:, None]
    masked[rows, positions] = np.where(weights > 0, vocab.mask_id, masked[rows, positions])
    fill = _refill_fn(model, top_k)
    allowed = jnp.asarray(vocab.word)
    out = ids.copy()
    for b, start in enumerate(range(0, n, batch_size)):
        sl = np.arange(start, start + batch_size) % n   # the last batch wraps: one shape
        sampled = np.asarray(fill(params, jnp.asarray(masked[sl], jnp.int32),
                                  jnp.asarray(arrays["attention_mask"][sl], jnp.int32),
                                  jnp.asarray(arrays["token_type_ids"][sl], jnp.int32),
                                  jnp.asarray(positions[sl], jnp.int32), allowed,
                                  jax.random.fold_in(jax.random.key(seed), b)))
        keep = min(batch_size, n - start)
        r = np.arange(start, start + keep)[:, None]
        out[r, positions[start:start + keep]] = np.where(
            weights[start:start + keep] > 0, sampled[:keep], out[r, positions[start:start + keep]])
    return {"input_ids": out, "attention_mask": np.asarray(arrays["attention_mask"], np.int64),
            "token_type_ids": np.asarray(arrays["token_type_ids"], np.int64)}


# --- mixup ------------------------------------------------------------------------------

def mixup_rows(batch: dict, rows: np.ndarray, rng: np.random.Generator,
               alpha: float = 0.4) -> dict:
    """Adds mix_ids / mix_lambda / mix_labels: each row in `rows` (a bool mask) is mixed with
    a partner drawn from `rows`, lambda ~ Beta(alpha, alpha); other rows mix with themselves
    at lambda 1 (a no-op). The attention mask becomes the union of the pair's; a mixed row's
    label weight is the product of the pair's (a soft label needs both labels)."""
    b = len(batch["labels"])
    members = np.flatnonzero(rows)
    partner = np.arange(b)
    partner[members] = members[rng.permutation(members.size)]
    lam = np.ones(b, np.float32)
    lam[members] = rng.beta(alpha, alpha, members.size)
    out = dict(batch)
    out["mix_ids"] = batch["input_ids"][partner]
    out["mix_lambda"] = lam
    out["mix_labels"] = batch["labels"][partner]
    out["attention_mask"] = np.maximum(batch["attention_mask"], batch["attention_mask"][partner])
    if "label_weights" in batch:
        out["label_weights"] = batch["label_weights"] * batch["label_weights"][partner]
    return out
