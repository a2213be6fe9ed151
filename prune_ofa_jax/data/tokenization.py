"""Tokenisation: HF fast tokenisers from a model directory, batched for speed.

Which tokenizer a model uses (`resolve`, the one rule for runs, `api.load` and `export-hf`):
the one named explicitly (`config.data.tokenizer`, `tokenizer=`, `--tokenizer_dir`), else the
model directory's own files (every `import-hf` checkpoint, run `model/` and HF export carries
them), else the uncased BERT WordPiece vocabulary shipped with MiniLM-L6
(`paths.minilm_dir()`) only when the model has MiniLM's vocabulary (size and pad id), else an
error naming the setting and the model. `check_fits` then refuses a tokenizer whose
vocabulary size or pad id disagree with the model. A bucket dir (gs://) is read from a local
copy of its tokenizer files. Nothing is downloaded from a hub: directories only.
"""

import functools
import itertools
import json
import logging
from typing import List, Optional, Sequence

import numpy as np
import tqdm
from etils import epath

from prune_ofa_jax import errors, paths

log = logging.getLogger(__name__)

_CHUNK = 8192
# The files of an HF tokenizer (any family): what travels with a model.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json")
_MARKERS = ("tokenizer.json", "vocab.txt", "vocab.json")  # any one: the dir has a tokenizer


@functools.lru_cache(maxsize=8)
def _load(path: str):
    import transformers  # pylint: disable=import-outside-toplevel  (slow import, only when used)
    local = paths.local(path, TOKENIZER_FILES)
    tok = transformers.AutoTokenizer.from_pretrained(str(local), local_files_only=True)
    if not tok.is_fast:
        raise ValueError(f"{path}: need a fast (Rust) tokenizer for offsets and batching")
    return tok


def load_tokenizer(path=None):
    """`AutoTokenizer.from_pretrained(path)` (fast, local; a gs:// dir through a local copy of
    its tokenizer files); default: the MiniLM uncased vocab.

    Cached per path, so datasets built in one process share one tokenizer object.
    """
    return _load(str(path if path is not None else paths.minilm_dir()))


def has_tokenizer(directory) -> bool:
    """True when `directory` (local or gs://) holds tokenizer files."""
    d = epath.Path(directory)
    return d.is_dir() and any((d / f).exists() for f in _MARKERS)


@functools.lru_cache(maxsize=1)
def _minilm_vocab() -> tuple:
    raw = json.loads((paths.minilm_dir() / "config.json").read_text())
    return int(raw["vocab_size"]), int(raw.get("pad_token_id", 0))


def _shape(model_config) -> str:
    return (f"{model_config.model_type}, vocab {model_config.vocab_size}, pad id "
            f"{model_config.pad_token_id}")


def _error(key: str, message: str) -> errors.UserError:
    cls = errors.ConfigError if key.startswith("config.") else errors.UserError
    return cls(f"{key}: {message}")


def resolve(model_config, *, explicit=None, model_dir=None, key: str = "config.data.tokenizer",
            model: str = "the model") -> str:
    """The tokenizer dir for a model, by the module docstring's rule: `explicit`, else
    `model_dir`'s own files, else MiniLM's when the model has its vocabulary, else a
    one-line error naming `key` and `model` (ConfigError for a `config.` key)."""
    if explicit:
        return str(explicit)
    if model_dir and has_tokenizer(model_dir):
        return str(model_dir)
    if (model_config.vocab_size, model_config.pad_token_id) == _minilm_vocab():
        return str(paths.minilm_dir())
    size, pad = _minilm_vocab()
    raise _error(key, f"{model} ({_shape(model_config)}) carries no tokenizer, and MiniLM's "
                      f"uncased vocabulary (vocab {size}, pad id {pad}), the only fallback, is "
                      "not its own; name the model's tokenizer dir (an HF model dir, or one with "
                      "tokenizer.json / vocab.txt)")


def check_fits(tokenizer, source, model_config, *, own: bool = False,
               key: str = "config.data.tokenizer", model: str = "the model") -> None:
    """A one-line error (naming `key`, the tokenizer and the model) unless the tokenizer's
    vocabulary size equals the model's (or is smaller, for the model's `own` tokenizer: a
    padded embedding table), its pad id is the model's and every special id has a row."""
    size, pad = vocab_size(tokenizer), tokenizer.pad_token_id
    specials = [i for i in tokenizer.all_special_ids if i is not None]
    fits = (size == model_config.vocab_size or (own and size < model_config.vocab_size)) \
        and pad == model_config.pad_token_id \
        and all(0 <= i < model_config.vocab_size for i in specials)
    if not fits:
        raise _error(key, f"the tokenizer {source} (vocab {size}, pad id {pad}) does not fit "
                          f"{model} ({_shape(model_config)}): its ids would index other "
                          "embeddings; use the model's own tokenizer")


def special_ids(tokenizer) -> np.ndarray:
    """Sorted ids of every special token ([CLS], [SEP], [PAD], [MASK], [UNK], ...)."""
    return np.array(sorted(set(tokenizer.all_special_ids)), dtype=np.int32)


def vocab_size(tokenizer) -> int:
    return len(tokenizer)


def continuation_table(tokenizer) -> np.ndarray:
    """bool[vocab]: True where a token continues the previous word (for whole-word masking).

    WordPiece: tokens starting with "##". Byte-level BPE (RoBERTa): tokens NOT starting with
    "Ġ" (the space marker). Special tokens are never continuations.
    """
    vocab = tokenizer.get_vocab()
    table = np.zeros(vocab_size(tokenizer), dtype=bool)
    wordpiece = any(t.startswith("##") for t in vocab)
    for tok, i in vocab.items():
        if i < table.size:
            table[i] = tok.startswith("##") if wordpiece else not tok.startswith("\u0120")
    table[special_ids(tokenizer)] = False
    return table


def encode_texts(tokenizer, texts: Sequence[str], progress: Optional[bool] = None,
                 desc: str = "tokenizing") -> List[List[int]]:
    """Token ids (no special tokens, no truncation) of many texts, in batches of 8192.

    Goes through the Rust backend's batch encoder directly (avoids per-call Python overhead and
    the over-length warnings of `tokenizer(...)`); shows a tqdm bar when there are > 50k texts.
    """
    backend = _plain_backend(tokenizer)
    if progress is None:
        progress = len(texts) > 50_000
    out: List[List[int]] = []
    with tqdm.tqdm(total=len(texts), desc=desc, disable=not progress, unit="texts") as bar:
        for start in range(0, len(texts), _CHUNK):
            chunk = list(texts[start:start + _CHUNK])
            out.extend(e.ids for e in backend.encode_batch(chunk, add_special_tokens=False))
            bar.update(len(chunk))
    return out


def plain_backend(tokenizer):
    """The Rust tokenizer without padding/truncation, for callers batching on their own
    (e.g. the prepare pipeline's workers, which build it once)."""
    return _plain_backend(tokenizer)


def _plain_backend(tokenizer):
    """A copy of the Rust tokenizer with padding and truncation off (the saved tokenizer.json
    of many models, MiniLM's included, pads and truncates every encoding to 128)."""
    import tokenizers  # pylint: disable=import-outside-toplevel
    backend = tokenizers.Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    return backend


def encode_pairs(tokenizer, texts_a: Sequence[str], texts_b: Optional[Sequence[str]],
                 max_len: int, progress: Optional[bool] = None) -> dict:
    """[CLS] a [SEP] (b [SEP]) truncated longest-first and padded to max_len, as numpy arrays:
    the same ids as `tokenizer(a, b, truncation="longest_first", max_length=max_len,
    padding="max_length")`, built from the Rust encodings directly (several times faster).

    input_ids uint16 when the vocabulary fits (halves host memory for QQP/MNLI), else int32;
    attention_mask and token_type_ids int8. Callers cast to int32 per batch.
    """
    backend = _plain_backend(tokenizer)
    backend.enable_truncation(max_len, strategy="longest_first")
    ids_dtype = np.uint16 if vocab_size(tokenizer) <= np.iinfo(np.uint16).max else np.int32
    n = len(texts_a)
    arrays = {"input_ids": np.full((n, max_len), tokenizer.pad_token_id, ids_dtype),
              "attention_mask": np.zeros((n, max_len), np.int8),
              "token_type_ids": np.zeros((n, max_len), np.int8)}
    if progress is None:
        progress = n > 50_000
    with tqdm.tqdm(total=n, desc="tokenizing", disable=not progress, unit="rows") as bar:
        for start in range(0, n, _CHUNK):
            a = list(texts_a[start:start + _CHUNK])
            inputs = a if texts_b is None else list(zip(a, texts_b[start:start + _CHUNK]))
            _fill(arrays, start, backend.encode_batch(inputs, add_special_tokens=True), max_len)
            bar.update(len(a))
    return arrays


def _fill(arrays: dict, start: int, encodings, max_len: int) -> None:
    """Writes variable-length encodings into rows [start, start + len) of the padded arrays."""
    n = len(encodings)
    lengths = np.fromiter((len(e.ids) for e in encodings), np.int64, n)
    flat = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), np.int64,
                       int(lengths.sum()))
    num_b = np.fromiter((sum(e.type_ids) for e in encodings), np.int64, n)
    pos = np.arange(max_len)
    real = pos < lengths[:, None]
    rows = slice(start, start + n)
    arrays["input_ids"][rows][real] = flat
    arrays["attention_mask"][rows] = real
    arrays["token_type_ids"][rows] = real & (pos >= (lengths - num_b)[:, None])


def pair_template(tokenizer) -> dict:
    """How the tokenizer wraps a pair: {"pre", "mid", "post": special ids, "pre_types",
    "mid_types", "post_types": their token types, "type_a", "type_b"} (BERT: [CLS] A [SEP] B
    [SEP], types 0/1; RoBERTa: <s> A </s></s> B </s>, types 0). Read off a probe encoding."""
    enc = _plain_backend(tokenizer).encode("a", "b", add_special_tokens=True)
    seq = [s if s is not None else -1 for s in enc.sequence_ids]
    ids, types = np.array(enc.ids), np.array(enc.type_ids)
    a_pos, b_pos = seq.index(0), seq.index(1)
    if seq.count(0) != 1 or seq.count(1) != 1:
        raise ValueError("pair_template: probe words 'a'/'b' are not single tokens")
    return {"pre": ids[:a_pos], "mid": ids[a_pos + 1:b_pos], "post": ids[b_pos + 1:],
            "pre_types": types[:a_pos], "mid_types": types[a_pos + 1:b_pos],
            "post_types": types[b_pos + 1:], "type_a": int(types[a_pos]),
            "type_b": int(types[b_pos])}


def encode_with_offsets(tokenizer, texts: Sequence[str]):
    """[(ids int32 [n], offsets int32 [n, 2])] per text, no special tokens, no truncation."""
    encs = _plain_backend(tokenizer).encode_batch(list(texts), add_special_tokens=False)
    return [(np.asarray(e.ids, np.int32), np.asarray(e.offsets, np.int32).reshape(-1, 2))
            for e in encs]
