"""Masked-LM (+ next-sentence prediction) pre-training batches, random access by step.

    corpus = pretraining.TokenizedCorpus.from_sources(text.shared_corpus(), tokenizer)
    ds = pretraining.PretrainingDataset(corpus, tokenizer, max_len=128, batch_size=256, seed=0)
    batch = ds.batch(step)   # local shard: batch_size // process_count rows

The corpus is tokenised once, up front, into one flat token array (sentences and documents are
offsets into it). Each epoch e builds its instances afresh (`instances.nsp_plan`, seeded by
(seed, e)), like BERT's dupe_factor but without storing copies, and visits them in a seeded
permutation. The number of instances varies a little between epochs, so every epoch is
`steps_per_epoch` steps long (fixed by epoch 0): an epoch with fewer instances wraps around to
its first ones, one with more leaves its last few unused. Masking is dynamic: row g of global
step s is masked with a generator seeded by (seed, s, g), so a row is the same whichever process
builds it, and `batch(k)` of a fresh object equals `batch(k)` of a long-running one.

Batch (B = local rows, L = max_len, P = max_predictions, default round(0.15 * L)):
  input_ids, attention_mask, token_type_ids  int32 [B, L]
  masked_lm_positions, masked_lm_ids         int32 [B, P]   (unused slots: 0)
  masked_lm_weights                          float32 [B, P] (1 for real predictions, 0 unused)
  next_sentence_labels                       int32 [B]      (0 = B follows A, 1 = random B;
                                                             all 0 when nsp=False)
"""

import dataclasses
import logging
from typing import Dict, Optional, Sequence

import numpy as np

from prune_ofa_jax.data import common, instances, masking
from prune_ofa_jax.data import text as text_lib
from prune_ofa_jax.data import tokenization

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TokenizedCorpus:
    """Flat token ids plus CSR offsets: sentence i is tokens[sent_starts[i]:sent_starts[i+1]],
    document d is sentences doc_starts[d]..doc_starts[d+1]. Empty sentences/documents dropped."""
    tokens: np.ndarray        # int32 [T]
    sent_starts: np.ndarray   # int64 [S + 1]
    doc_starts: np.ndarray    # int64 [D + 1]

    @property
    def num_documents(self) -> int:
        return len(self.doc_starts) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.size)

    @classmethod
    def from_documents(cls, documents: Sequence[Sequence[str]], tokenizer,
                       progress: Optional[bool] = None) -> "TokenizedCorpus":
        sentences = [s for doc in documents for s in doc]
        ids = tokenization.encode_texts(tokenizer, sentences, progress=progress,
                                        desc="tokenizing corpus")
        lengths = np.fromiter((len(x) for x in ids), np.int64, len(ids))
        tokens = np.fromiter((t for x in ids for t in x), np.int32, int(lengths.sum()))
        per_doc = np.array([sum(1 for _ in doc) for doc in documents], np.int64)
        doc_of_sent = np.repeat(np.arange(len(documents)), per_doc)
        keep = lengths > 0
        sent_starts = np.concatenate([[0], np.cumsum(lengths[keep])])
        kept_per_doc = np.bincount(doc_of_sent[keep], minlength=len(documents))
        kept_per_doc = kept_per_doc[kept_per_doc > 0]
        doc_starts = np.concatenate([[0], np.cumsum(kept_per_doc)])
        if doc_starts[-1] == 0:
            raise common.DataError("corpus has no tokens")
        log.info("tokenized corpus: %d documents, %d sentences, %d tokens",
                 len(doc_starts) - 1, len(sent_starts) - 1, tokens.size)
        return cls(tokens, sent_starts, doc_starts)

    @classmethod
    def from_sources(cls, sources: Sequence[text_lib.TextFiles], tokenizer,
                     progress: Optional[bool] = None) -> "TokenizedCorpus":
        """Local text files (see `text.TextFiles` for the layouts)."""
        return cls.from_documents(text_lib.read_documents(sources), tokenizer, progress)

    @classmethod
    def from_tfds(cls, name: str, tokenizer, split: str = "train", data_dir=None,
                  text_key: str = "text", max_docs: Optional[int] = None) -> "TokenizedCorpus":
        """A TFDS text data set read with `tfds.data_source` (array_record/parquet, no TF)."""
        docs = text_lib.tfds_documents(name, split, data_dir, text_key, max_docs)
        return cls.from_documents(docs, tokenizer)

    def select_documents(self, doc_ids: np.ndarray) -> "TokenizedCorpus":
        """A corpus of the given documents (e.g. a held-out evaluation split)."""
        parts, sent_lens, doc_lens = [], [], []
        for d in np.asarray(doc_ids):
            s0, s1 = self.doc_starts[d], self.doc_starts[d + 1]
            starts = self.sent_starts[s0:s1 + 1]
            parts.append(self.tokens[starts[0]:starts[-1]])
            sent_lens.append(np.diff(starts))
            doc_lens.append(s1 - s0)
        return TokenizedCorpus(np.concatenate(parts),
                               np.concatenate([[0], np.cumsum(np.concatenate(sent_lens))]),
                               np.concatenate([[0], np.cumsum(doc_lens)]))

    def split(self, eval_fraction: float, seed: int = 0):
        """(train, eval) corpora from a seeded split of the documents."""
        perm = np.random.default_rng([seed, 7]).permutation(self.num_documents)
        n_eval = max(1, int(round(eval_fraction * self.num_documents)))
        return (self.select_documents(np.sort(perm[n_eval:])),
                self.select_documents(np.sort(perm[:n_eval])))


class PretrainingDataset:
    """MLM(+NSP) batches; `batch(step)` is a pure function of (seed, step, process_index)."""

    def __init__(self, corpus: TokenizedCorpus, tokenizer, *, max_len: int = 128,
                 batch_size: int = 32, seed: int = 0, max_predictions: Optional[int] = None,
                 mlm_prob: float = 0.15, short_seq_prob: float = 0.1, nsp: bool = True,
                 whole_word_mask: bool = False, mask_ratio: float = 0.8,
                 random_ratio: float = 0.1, process_index: Optional[int] = None,
                 process_count: Optional[int] = None):
        self.process_index, self.process_count = common.process_info(process_index, process_count)
        self.local_batch_size = common.local_batch_size(batch_size, self.process_count)
        self.global_batch_size = batch_size
        self.corpus, self.max_len, self.seed, self.nsp = corpus, max_len, seed, nsp
        self.short_seq_prob = short_seq_prob
        self.max_predictions = (max_predictions if max_predictions is not None
                                else int(round(mlm_prob * max_len)))
        self._ids = _SpecialIds(tokenizer)
        vocab = tokenization.vocab_size(tokenizer)
        self._mask_cfg = masking.MaskingConfig(
            mask_id=self._ids.mask, random_ids=np.setdiff1d(np.arange(vocab), self._ids.all),
            continuation=tokenization.continuation_table(tokenizer) if whole_word_mask else None,
            mlm_prob=mlm_prob, mask_ratio=mask_ratio, random_ratio=random_ratio)
        self._plans: Dict[int, tuple] = {}
        self.steps_per_epoch = len(self._plan(0)[0]) // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"corpus gives {len(self._plan(0)[0])} instances per epoch, fewer "
                             f"than one global batch of {batch_size}")

    def _plan(self, epoch: int):
        """(instances, permutation) of an epoch; the last two epochs are kept."""
        if epoch not in self._plans:
            rng = np.random.default_rng([self.seed, epoch, 0])
            build = instances.nsp_plan if self.nsp else instances.mlm_plan
            plan = build(self.corpus.sent_starts, self.corpus.doc_starts, self.max_len,
                         self.short_seq_prob, rng)
            perm = np.random.default_rng([self.seed, epoch, 1]).permutation(len(plan))
            self._plans = {k: v for k, v in self._plans.items() if k == epoch - 1}
            self._plans[epoch] = (plan, perm)
        return self._plans[epoch]

    def batch(self, step: int) -> Dict[str, np.ndarray]:
        """The local shard (rows [p*B, (p+1)*B) of the global batch) of training step `step`."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, k = divmod(int(step), self.steps_per_epoch)
        plan, perm = self._plan(epoch)
        first = self.process_index * self.local_batch_size
        rows = [self._row(plan[perm[(k * self.global_batch_size + g) % len(plan)]], step, g)
                for g in range(first, first + self.local_batch_size)]
        return {key: np.stack([r[key] for r in rows]) for key in rows[0]}

    def _row(self, inst: np.ndarray, step: int, global_row: int) -> Dict[str, np.ndarray]:
        ids, types, maskable, length = self._pack(inst)
        rng = np.random.default_rng([self.seed, 2, step, global_row])
        ids, pos, labels, weights = masking.mask_row(ids, maskable, self.max_predictions,
                                                     self._mask_cfg, rng)
        attention = (np.arange(self.max_len) < length).astype(np.int32)
        return {"input_ids": ids, "attention_mask": attention, "token_type_ids": types, "masked_lm_positions": pos, "masked_lm_ids": labels,
                "masked_lm_weights": weights,
                "next_sentence_labels": np.int32(inst[instances.IS_RANDOM] if self.nsp else 0)}

    def _pack(self, inst: np.ndarray):
        """[CLS] A [SEP] (B [SEP]) [PAD]...: ids, token types, maskable (non-special) flags."""
        toks = self.corpus.tokens
        a = toks[inst[instances.A_LO]:inst[instances.A_HI]]
        b = toks[inst[instances.B_LO]:inst[instances.B_HI]]
        ids = np.full(self.max_len, self._ids.pad, np.int32)
        types = np.zeros(self.max_len, np.int32)
        maskable = np.zeros(self.max_len, bool)
        n = a.size + 2
        ids[0], ids[1:n - 1], ids[n - 1] = self._ids.cls, a, self._ids.sep
        maskable[1:n - 1] = True
        if b.size:
            n_a, n = n, n + b.size + 1
            ids[n_a:n - 1], ids[n - 1] = b, self._ids.sep
            types[n_a:n] = 1
            maskable[n_a:n - 1] = True
        maskable &= ~np.isin(ids, self._ids.all)  # e.g. literal "[UNK]" in the text
        return ids, types, maskable, n


def special_token_ids(tokenizer) -> "_SpecialIds":
    """cls/sep/pad/mask ids and every special id (`.all`) of a tokenizer."""
    return _SpecialIds(tokenizer)


class _SpecialIds:
    def __init__(self, tokenizer):
        self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.pad, self.mask = tokenizer.pad_token_id, tokenizer.mask_token_id
        if None in (self.cls, self.sep, self.pad, self.mask):
            raise ValueError("tokenizer needs cls, sep, pad and mask tokens for pre-training")
        self.all = tokenization.special_ids(tokenizer)
