"""The prepared-corpus format (written by `data.prepare`, read by `data.stream`).

A prepared directory holds ArrayRecord shards and `manifest.json`, written last:

    DIR/manifest.json                            tokenizer hash, seq_len, counts, shard list
    DIR/train-00000-of-00008.array_record ...    training records
    DIR/eval-00000-of-00001.array_record         held-out documents (MLM eval)

One record is one *chunk*: consecutive sentences of one document, cut where their tokens
reach `seq_len - 3` (BERT's target length; the document's end closes its last chunk). It is
a little-endian int32 vector:

    [n_sent, doc_hi, doc_lo, chunk, sent_len_0 .. sent_len_{n-1}, token ids ...]

so NSP pairing at training time knows the sentence boundaries (where A may end) and the
document (a random B must come from another one). `doc` (a 62-bit document id: source
number << 40 | document number in that source) orders records; reading every record sorted by (doc, chunk) gives back
the tokenised corpus, token for token. Records are stored with ArrayRecord's
`group_size:1`, so each one is read on its own (random access without decoding neighbours).

The manifest is the only entry point: a shard not listed there is never read, so an
interrupted prepare (which writes shards under temporary names and the manifest last) leaves
nothing that training would take for data. At start every host opens every shard it will
read and compares its record count (from the shard's footer) with the manifest's
(`check_shards`), so a missing, truncated or replaced shard stops the run at once, naming
the shard, instead of when its first record is sampled.

Shards on gs:// are read where they are (ArrayRecord's own GCS reader), never copied.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from concurrent import futures
from typing import List, Sequence

import numpy as np
from etils import epath

from prune_ofa_jax import errors

FORMAT = "prune_ofa_jax.prepared/1"
MANIFEST = "manifest.json"
WRITER_OPTIONS = "group_size:1,uncompressed"  # random access; ids barely compress
_HEADER = 4


class PreparedDataError(errors.UserError):
    """A prepared directory that is missing, unfinished, or does not fit the run."""


@dataclasses.dataclass(frozen=True)
class Chunk:
    doc: int                 # 62-bit document id (orders records)
    index: int               # chunk number within the document
    sent_lens: np.ndarray    # int32 [n]
    tokens: np.ndarray       # int32 [sum(sent_lens)]


def encode(doc: int, index: int, sent_lens: Sequence[int], tokens: np.ndarray) -> bytes:
    doc = int(doc) & (2**62 - 1)
    head = np.array([len(sent_lens), doc >> 31, doc & (2**31 - 1), index], np.int32)
    return np.concatenate([head, np.asarray(sent_lens, np.int32),
                           np.asarray(tokens, np.int32)]).astype("<i4").tobytes()


def decode(raw: bytes) -> Chunk:
    v = np.frombuffer(raw, "<i4")
    n = int(v[0])
    return Chunk((int(v[1]) << 31) | int(v[2]), int(v[3]), v[_HEADER:_HEADER + n],
                 v[_HEADER + n:])


def tokenizer_sha256(tokenizer) -> str:
    """Hash of what the fast tokenizer maps text to (vocab, normaliser, pre-tokeniser, post-
    processor): its serialisation without the truncation and padding settings, which every
    call with `max_length`/`padding` rewrites in place (the same tokenizer would otherwise
    hash differently before and after its first use in a process)."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    state.pop("truncation", None)
    state.pop("padding", None)
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode("utf-8")).hexdigest()


def _serialisation_sha256(tokenizer) -> str:
    """The hash older manifests hold: of the whole serialisation as it stands (call
    settings included), accepted too, so their corpora need no new prepare."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode("utf-8")).hexdigest()


def shard_name(split: str, i: int, n: int) -> str:
    return f"{split}-{i:05d}-of-{n:05d}.array_record"


def load_manifest(directory) -> dict:
    d = epath.Path(directory)
    path = d / MANIFEST
    if not path.exists():
        extra = (" It holds shards but no manifest: the prepare did not finish; rerun the "
                 "same prepare command." if d.exists() and any(d.glob("*.array_record*"))
                 else "")
        raise PreparedDataError(
            f"config.data.prepared={directory}: no {MANIFEST}.{extra} Prepare a corpus with "
            "`python -m prune_ofa_jax.data.prepare --source text:GLOB --out DIR`.")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise PreparedDataError(f"{path}: format {manifest.get('format')!r}, expected "
                                f"{FORMAT!r}; re-prepare with this version")
    return manifest


def check_fits(manifest: dict, directory, tokenizer, tokenizer_path, seq_len: int) -> None:
    """A clear error when the prepared corpus was tokenised differently from this run."""
    want = tokenizer_sha256(tokenizer)
    if manifest["tokenizer_sha256"] not in (want, _serialisation_sha256(tokenizer)):
        raise PreparedDataError(
            f"config.data.prepared={directory} was tokenised with {manifest['tokenizer']!r} "
            f"(sha256 {manifest['tokenizer_sha256'][:12]}), but this run's tokenizer "
            f"({tokenizer_path or 'the default'}) hashes to {want[:12]}. Set "
            "config.data.tokenizer to the prepare's tokenizer, or re-prepare with --tokenizer.")
    if manifest["seq_len"] != seq_len:
        raise PreparedDataError(
            f"config.data.prepared={directory} was chunked for seq_len {manifest['seq_len']}, "
            f"this run has config.data.seq_len={seq_len}. Re-prepare with --seq_len {seq_len} "
            "(BERT's two phases use two prepared corpora) or set config.data.seq_len.")


def shard_paths(manifest: dict, directory, split: str) -> List[str]:
    """The split's shards, each checked against the manifest (`check_shards`)."""
    d = epath.Path(directory)
    shards = [s for s in manifest["shards"] if s["split"] == split]
    paths = [str(d / s["name"]) for s in shards]
    check_shards(paths, [s["records"] for s in shards], directory)
    return paths


def _count(path: str):
    """(records in the shard, None), or (None, why it cannot be read)."""
    import array_record.python.array_record_module as ar  # pylint: disable=import-outside-toplevel
    try:
        reader = ar.ArrayRecordReader(path, "readahead_buffer_size:0")
        n = reader.num_records() if reader.ok() else None
        reader.close()  # a reader that failed to open raises its reason here
        return n, None
    except Exception as e:  # pylint: disable=broad-except  (RuntimeError/ValueError by cause)
        return None, " ".join(str(e).split())[:240]


def check_shards(paths: Sequence[str], counts: Sequence[int], directory,
                 threads: int = 16) -> None:
    """Every shard opens and holds the number of records the manifest lists, else one
    PreparedDataError naming the first shard (in manifest order) that does not. Opening a
    reader reads the shard's footer only (no record), in `threads` parallel opens (a bucket's
    latency)."""
    if not paths:
        return
    with futures.ThreadPoolExecutor(min(threads, len(paths))) as pool:
        found = list(pool.map(_count, paths))
    for path, want, (n, why) in zip(paths, counts, found):
        if n == want:
            continue
        what = (f"cannot be read ({why})" if why is not None
                else f"holds {n} records, {MANIFEST} lists {want} (truncated or replaced)")
        raise PreparedDataError(f"config.data.prepared={directory}: shard {path} {what}; "
                                "rerun the prepare command (with --overwrite)")
