"""SQuAD features: question + context windows (max_len 384, doc stride 128), HF run_qa style.

Each example becomes one or more features "[CLS] question [SEP] context-window [SEP]": the
context is cut into windows that overlap by `doc_stride` tokens (exactly the windows of the fast
tokenizer's `stride` overflow), and the fast tokenizer's offset mapping ties tokens to
characters of the context. Training features carry start/end token
positions of the first aligned answer, or 0 ([CLS]) when the answer is not inside the window.
Eval features carry `example_index` and `offsets` (char spans into the context, -1 for tokens
outside the context) for `squad_postprocess`.

    train = squad_features.train_dataset(examples, tokenizer, batch_size=32, seed=0)
    train.batch(step)  -> input_ids, attention_mask, token_type_ids int32 [B, 384],
                          start_positions, end_positions int32 [B]
    ev = squad_features.EvalFeatures(examples, tokenizer)
    for b in ev.eval_batches(64): ...  -> input_ids, attention_mask, token_type_ids, weights
    ev.postprocess(start_logits, end_logits)  -> {question id: answer text}
"""

import logging
from typing import Dict, List, Optional, Sequence

import numpy as np
import tqdm

from prune_ofa_jax.data import common, squad, squad_postprocess, tokenization

log = logging.getLogger(__name__)

_MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def default_lengths(max_len: int, doc_stride: Optional[int] = None,
                    max_query_len: Optional[int] = None) -> tuple:
    """(doc_stride, max_query_len): BERT's 128 / 64 at max_len 384; at most max_len // 3 each,
    so short test configs (e.g. max_len 64) still leave room for a window."""
    return (min(128, max_len // 3) if doc_stride is None else doc_stride,
            min(64, max_len // 3) if max_query_len is None else max_query_len)


def featurize(examples: Sequence[squad.SquadExample], tokenizer, max_len: int = 384,
              doc_stride: Optional[int] = None, max_query_len: Optional[int] = None,
              progress: Optional[bool] = None) -> Dict[str, np.ndarray]:
    """Windows of every example: model inputs [F, L] plus example_index [F] and offsets
    [F, L, 2] (int32; -1 outside the context).

    Same windows as `tokenizer(question, context, truncation="only_second", stride=doc_stride,
    return_overflowing_tokens=True, ...)` (windows of W context tokens, each starting W -
    doc_stride after the previous, the last one reaching the end), but every distinct context is
    tokenised once rather than once per question (~4x faster on SQuAD). Questions are cut to
    max_query_len tokens (BERT's run_squad default 64; SQuAD questions are shorter).
    """
    doc_stride, max_query_len = default_lengths(max_len, doc_stride, max_query_len)
    if progress is None:
        progress = len(examples) > 5000
    contexts = {}
    for ex in examples:
        contexts.setdefault(ex.context, len(contexts))
    with tqdm.tqdm(total=2, desc="squad tokenize", disable=not progress) as bar:
        ctx = tokenization.encode_with_offsets(tokenizer, list(contexts))
        bar.update(1)
        questions = tokenization.encode_with_offsets(
            tokenizer, [ex.question.lstrip() for ex in examples])
        bar.update(1)
    tmpl = tokenization.pair_template(tokenizer)
    n_special = len(tmpl["pre"]) + len(tmpl["mid"]) + len(tmpl["post"])
    plans = []
    for i, ex in enumerate(examples):
        q = questions[i][0][:max_query_len]
        width = max_len - n_special - len(q)
        if width <= doc_stride:
            raise ValueError(f"max_len {max_len} leaves {width} context tokens per window, not "
                             f"more than doc_stride {doc_stride}")
        c_ids, c_offs = ctx[contexts[ex.context]]
        for lo in _window_starts(len(c_ids), width, doc_stride):
            plans.append((i, q, c_ids[lo:lo + width], c_offs[lo:lo + width]))
    return _assemble(plans, tmpl, max_len, tokenizer.pad_token_id)


def _window_starts(n: int, width: int, stride: int) -> List[int]:
    starts = [0]
    while starts[-1] + width < n:
        starts.append(starts[-1] + width - stride)
    return starts


def _assemble(plans, tmpl: dict, max_len: int, pad_id: int) -> Dict[str, np.ndarray]:
    n = len(plans)
    out = {"input_ids": np.full((n, max_len), pad_id, np.int32),
           "attention_mask": np.zeros((n, max_len), np.int32),
           "token_type_ids": np.zeros((n, max_len), np.int32),
           "offsets": np.full((n, max_len, 2), -1, np.int32),
           "example_index": np.array([p[0] for p in plans], np.int32)}
    pre, mid, post = tmpl["pre"], tmpl["mid"], tmpl["post"]
    for f, (_, q, c_ids, c_offs) in enumerate(plans):
        a0 = len(pre)
        b0 = a0 + len(q) + len(mid)
        end = b0 + len(c_ids) + len(post)
        out["input_ids"][f, :end] = np.concatenate([pre, q, mid, c_ids, post])
        out["token_type_ids"][f, :end] = np.concatenate([
            tmpl["pre_types"], np.full(len(q), tmpl["type_a"]), tmpl["mid_types"],
            np.full(len(c_ids), tmpl["type_b"]), tmpl["post_types"]])
        out["attention_mask"][f, :end] = 1
        out["offsets"][f, b0:b0 + len(c_ids)] = c_offs
    return out


def answer_positions(offsets: np.ndarray, start_char: np.ndarray,
                     end_char: np.ndarray) -> tuple:
    """Token (start, end) of the char span [start_char, end_char) per feature; (0, 0) where the
    span is not fully inside the feature's context window. offsets: [F, L, 2], -1 outside."""
    ctx = offsets[..., 0] >= 0
    big = np.iinfo(np.int32).max
    first_end = np.where(ctx, offsets[..., 1], -1).max(axis=1)
    first_start = np.where(ctx, offsets[..., 0], big).min(axis=1)
    inside = (first_start <= start_char) & (first_end >= end_char)
    pos = np.arange(offsets.shape[1])
    start = np.where(ctx & (offsets[..., 0] <= start_char[:, None]), pos, -1).max(axis=1)
    end = np.where(ctx & (offsets[..., 1] >= end_char[:, None]), pos, big).min(axis=1)
    return np.where(inside, start, 0).astype(np.int32), np.where(inside, end, 0).astype(np.int32)


def train_features(examples: Sequence[squad.SquadExample], tokenizer, max_len: int = 384,
                   doc_stride: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Features of the questions that have an aligned answer, with start/end_positions."""
    usable = [ex for ex in examples if ex.first_answer() is not None]
    if len(usable) < len(examples):
        log.warning("SQuAD: %d of %d questions have no aligned answer; skipped for training",
                    len(examples) - len(usable), len(examples))
    if not usable:
        raise common.DataError("SQuAD: no question with an aligned answer")
    feats = featurize(usable, tokenizer, max_len, doc_stride)
    answers = [ex.first_answer() for ex in usable]
    starts = np.array([s for _, s in answers], np.int64)[feats["example_index"]]
    ends = starts + np.array([len(t) for t, _ in answers], np.int64)[feats["example_index"]]
    out = {k: feats[k] for k in _MODEL_KEYS}
    out["start_positions"], out["end_positions"] = answer_positions(feats["offsets"], starts, ends)
    return out


def train_dataset(examples, tokenizer, *, max_len: int = 384, doc_stride: Optional[int] = None,
                  batch_size: int = 32, seed: int = 0, process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> common.ArrayDataset:
    """Random-access training batches (see common.ArrayDataset) over the training features."""
    return common.ArrayDataset(train_features(examples, tokenizer, max_len, doc_stride),
                               batch_size, seed, process_index, process_count)


class EvalFeatures:
    """Evaluation features of a list of examples, their batches, and post-processing."""

    def __init__(self, examples: Sequence[squad.SquadExample], tokenizer, *, max_len: int = 384,
                 doc_stride: Optional[int] = None, process_index: Optional[int] = None,
                 process_count: Optional[int] = None):
        self.examples = list(examples)
        self.features = featurize(self.examples, tokenizer, max_len, doc_stride)
        # The train batch size is unused here; it must only be a multiple of the host count.
        hosts = common.process_info(process_index, process_count)[1]
        self._data = common.ArrayDataset({k: self.features[k] for k in _MODEL_KEYS}, hosts, 0,
                                         process_index, process_count)

    @property
    def num_features(self) -> int:
        return len(self.features["example_index"])

    def eval_batches(self, batch_size: int):
        """Local shards of ordered global batches; gather them in order and keep the first
        num_features rows (weights 0 mark the padded tail) to get per-feature logits."""
        return self._data.eval_batches(batch_size)

    def num_eval_batches(self, batch_size: int) -> int:
        return self._data.num_eval_batches(batch_size)

    def postprocess(self, start_logits: np.ndarray, end_logits: np.ndarray, n_best: int = 20,
                    max_answer_length: int = 30) -> Dict[str, str]:
        """{question id: predicted text} from logits [num_features, L] in feature order."""
        return squad_postprocess.predictions(self.examples, self.features["example_index"],
                                             self.features["offsets"], start_logits,
                                             end_logits, n_best, max_answer_length)
