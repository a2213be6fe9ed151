"""Prepare a pre-training corpus once: text -> tokenised, chunked ArrayRecord shards (Beam).

    python -m prune_ofa_jax.data.prepare --source text:wikitext2/*.txt,text_gutenberg_nltk/*.txt \\
        --tokenizer /path/to/tokenizer_dir --workdir /data/prepared/wiki_128 [--seq_len 128]
    python -m prune_ofa_jax.data.prepare --source tfds:wikipedia/20230601.en:train \\
        --workdir gs://bucket/prepared/wiki_128 --runner=DataflowRunner --project=P \\
        --region=us-central1 --temp_location=gs://bucket/tmp --extra_package=dist/pkg.tar.gz

SOURCE: `text:GLOB[,GLOB...]` (globs under the data root; the shared folders keep their
layouts, see `text.sources_from_globs`) or `tfds:NAME[:SPLIT]` (a TFDS text set already
prepared as array_record, read without TensorFlow). Every flag this module does not know is a
Beam pipeline option (anything else is an error): by default the DirectRunner in
multi-process mode with `--direct_num_workers=2`; `--runner=DataflowRunner|SparkRunner|
FlinkRunner` runs the same pipeline at scale (docs: "Pre-training at scale").

Stages: work items (one per text file, or a range of 2000 TFDS records), spread over the
workers -> per item, fused in one worker: documents (sentence split), tokenised in batches
with the Rust tokenizer, chunked (records.py), written as that item's shards (train, and
eval for the documents a hash of their id holds out) under a temporary name and renamed
when complete -> the shards' counts, gathered -> manifest.json, written last. Only counts
cross between workers (no shuffle of token data), so workers scale with the items.

Idempotent: a directory whose manifest matches this command (source files and sizes,
tokenizer hash, seq_len, shards, eval fraction) is left as it is; one that holds another
corpus is an error unless --overwrite. Shards are deterministic, so a rerun after an
interruption rewrites the same bytes; training reads only what the manifest lists.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from typing import List, Sequence, Tuple

import numpy as np
from etils import epath

from prune_ofa_jax import cli, errors, paths
from prune_ofa_jax.data import common, records, text, tokenization

log = logging.getLogger(__name__)

_SOURCE_BITS = 40      # doc id = source number << 40 | document number in that source
_TFDS_ITEM = 2000      # TFDS records per work item


def splitmix64(x: np.ndarray) -> np.ndarray:
    """A well-mixed uint64 hash of uint64 counters (SplitMix64's finaliser)."""
    x = np.asarray(x, np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _unit(doc: int, salt: int) -> float:
    """A uniform [0, 1) hash of a document id (the eval hold-out draw)."""
    with np.errstate(over="ignore"):
        h = splitmix64(np.uint64(doc) ^ splitmix64(np.uint64(salt)))
    return float(h >> np.uint64(11)) * 2.0**-53


def work_items(source: str, root=None) -> List[tuple]:
    """The pipeline's inputs: ("text", source number, path, layout, encoding) per file, or
    ("tfds", source number, name, split, start, stop) per range of records."""
    kind, _, spec = source.partition(":")
    if kind == "text" and spec:
        files = text.sources_from_globs([g for g in spec.split(",") if g], root)
        return [("text", i, f.paths[0], f.doc_format, f.encoding) for i, f in enumerate(files)]
    if kind == "tfds" and spec:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
        name, _, split = spec.partition(":")
        n = len(tfds.data_source(name, split=split or "train", download=False))
        return [("tfds", 0, name, split or "train", lo, min(lo + _TFDS_ITEM, n))
                for lo in range(0, n, _TFDS_ITEM)]
    raise errors.UsageError(f"--source must be text:GLOB[,GLOB] or tfds:NAME[:SPLIT], got "
                            f"{source!r}")


def read_item(item: tuple) -> List[Tuple[int, List[str]]]:
    """(doc id, sentences) for every non-empty document of one work item."""
    if item[0] == "text":
        _, src, path, layout, encoding = item
        lines = common.split_lines(common.read_text(path, encoding=encoding))
        docs = [d for d in text.documents_from_text(lines, layout) if d]
        if not docs:
            raise common.DataError(f"{path}: empty (no text found)")
        return [((src << _SOURCE_BITS) | i, d) for i, d in enumerate(docs)]
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    _, src, name, split, lo, hi = item
    ds = tfds.data_source(name, split=split, download=False)
    out = []
    for i in range(lo, hi):
        raw = ds[i]["text"]
        raw = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        doc = [s for para in raw.split("\n") for s in text.split_sentences(para)]
        if doc:
            out.append(((src << _SOURCE_BITS) | i, doc))
    return out


def chunk_document(lengths: np.ndarray, target: int) -> List[Tuple[int, int]]:
    """Sentence ranges [s0, s1) of one document, each closed when its tokens reach target."""
    out, s0, total = [], 0, 0
    for i, n in enumerate(lengths):
        total += int(n)
        if total >= target or i == len(lengths) - 1:
            out.append((s0, i + 1))
            s0, total = i + 1, 0
    return out


class Item:
    """Beam Map body: one work item -> its shards (written) and their counts."""

    def __init__(self, tokenizer_path, seq_len: int, eval_fraction: float, out: str,
                 tmp: str, num_items: int):
        self.tokenizer_path, self.seq_len, self.eval_fraction = tokenizer_path, seq_len, \
            eval_fraction
        self.out, self.tmp, self.num_items = out, tmp, num_items
        self.backend = None

    def tokenize(self, sentences: List[str]) -> List[np.ndarray]:
        if self.backend is None:  # once per worker (the object is unpickled there)
            tok = tokenization.load_tokenizer(self.tokenizer_path)
            self.backend = tokenization.plain_backend(tok)
        out = []
        for lo in range(0, len(sentences), 8192):
            out.extend(np.asarray(e.ids, np.int32) for e in self.backend.encode_batch(
                sentences[lo:lo + 8192], add_special_tokens=False))
        return out

    def __call__(self, item: tuple) -> List[dict]:
        docs = read_item(item)
        ids = self.tokenize([s for _, d in docs for s in d])
        parts = {"train": [], "eval": []}
        at = 0
        for doc, sents in docs:
            doc_ids = [x for x in ids[at:at + len(sents)] if x.size]  # as TokenizedCorpus
            at += len(sents)
            if not doc_ids:
                continue
            lengths = np.array([x.size for x in doc_ids], np.int32)
            split = "eval" if _unit(doc, 7) < self.eval_fraction else "train"
            for k, (s0, s1) in enumerate(chunk_document(lengths, self.seq_len - 3)):
                parts[split].append(
                    (lengths[s0:s1], np.concatenate(doc_ids[s0:s1]), doc, k))
        index = work_index(item)
        return [write_shard(split, index, self.num_items, chunks, self.out, self.tmp)
                for split, chunks in parts.items() if chunks]


def work_index(item: tuple) -> int:
    return item[1] if item[0] == "text" else item[4] // _TFDS_ITEM


def write_shard(split: str, index: int, count: int, chunks, out: str, tmp: str) -> dict:
    """Records in document order, written to tmp/NAME, then renamed to out/NAME. ArrayRecord
    writes local files only: for a bucket, the shard is written to a local temporary file and
    uploaded to out/NAME (a GCS object appears whole, once its upload completes)."""
    import array_record.python.array_record_module as ar  # pylint: disable=import-outside-toplevel
    name = records.shard_name(split, index, count)
    bucket = paths.is_bucket(out)
    scratch = tempfile.mkdtemp(prefix="prune_ofa_jax_shard_") if bucket else None
    local = epath.Path(scratch or tmp) / name
    try:
        writer = ar.ArrayRecordWriter(str(local), records.WRITER_OPTIONS)
        for lengths, tokens, doc, k in chunks:
            writer.write(records.encode(doc, k, lengths, tokens))
        writer.close()
        if bucket:
            paths.upload(local, epath.Path(out) / name)
        else:
            local.rename(epath.Path(out) / name)  # atomic on one file system: never half a shard
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return {"name": name, "split": split, "records": len(chunks),
            "documents": sum(c[3] == 0 for c in chunks),
            "sentences": int(sum(c[0].size for c in chunks)),
            "tokens": int(sum(c[1].size for c in chunks))}


def fingerprint(items: Sequence[tuple], tokenizer, args) -> dict:
    """What a manifest must match for a rerun to be a no-op."""
    files = [{"path": str(it[2]), "bytes": os.path.getsize(it[2])} for it in items
             if it[0] == "text"]
    return {"source": args.source, "files": files, "seq_len": args.seq_len,
            "eval_fraction": args.eval_fraction,
            "tokenizer_sha256": records.tokenizer_sha256(tokenizer)}


def write_manifest(shards: List[dict], out: str, tmp: str, head: dict) -> dict:
    shards = sorted(shards, key=lambda s: s["name"])
    totals = {k: sum(s[k] for s in shards) for k in ("records", "documents", "sentences",
                                                     "tokens")}
    if not totals["tokens"]:
        raise common.DataError(f"{head['source']}: no tokens; nothing to prepare")
    manifest = {**head, **{f"num_{k}": v for k, v in totals.items()}, "shards": shards}
    if paths.is_bucket(out):  # a GCS object appears whole: written in place
        (epath.Path(out) / records.MANIFEST).write_text(json.dumps(manifest, indent=2))
    else:
        part = epath.Path(tmp) / records.MANIFEST
        part.write_text(json.dumps(manifest, indent=2))
        part.rename(epath.Path(out) / records.MANIFEST)
    if epath.Path(tmp).exists():  # a bucket has no empty folders
        epath.Path(tmp).rmtree()
    return manifest


def _pipeline_options(beam_args: List[str]):
    from apache_beam.options import pipeline_options  # pylint: disable=import-outside-toplevel
    if not any(a.startswith("--runner") for a in beam_args):
        beam_args = ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                     "--direct_num_workers=2"] + beam_args
    if not any(a.startswith("--default_sdk_harness_log_level") for a in beam_args):
        beam_args = beam_args + ["--default_sdk_harness_log_level=WARNING"]  # quiet workers
    return pipeline_options.PipelineOptions(beam_args)


def run(args, beam_args: List[str]) -> dict:
    """The whole prepare; returns the manifest (the existing one when up to date)."""
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    tok = tokenization.load_tokenizer(args.tokenizer or None)
    items = work_items(args.source, args.root or None)
    head = {"format": records.FORMAT, "tokenizer": args.tokenizer or "default (MiniLM)",
            "vocab_size": tokenization.vocab_size(tok),
            **fingerprint(items, tok, args)}
    out = epath.Path(args.workdir)
    if (out / records.MANIFEST).exists():
        old = json.loads((out / records.MANIFEST).read_text())
        if all(old.get(k) == v for k, v in head.items()):
            log.info("%s is up to date (%d records); nothing to do", out, old["num_records"])
            return old
        if not args.overwrite:
            raise records.PreparedDataError(
                f"{out} holds another prepared corpus ({old.get('source')}, seq_len "
                f"{old.get('seq_len')}); pass --overwrite or choose another --workdir")
        (out / records.MANIFEST).unlink()  # first: no manifest over half-replaced shards
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".tmp-*"):
        stale.rmtree()
    tmp = str(out / f".tmp-{uuid.uuid4().hex[:8]}")
    epath.Path(tmp).mkdir()
    process = Item(args.tokenizer or None, args.seq_len, args.eval_fraction, str(out), tmp,
                   max(work_index(it) for it in items) + 1)
    with beam.Pipeline(options=_pipeline_options(beam_args)) as p:
        _ = (p | "items" >> beam.Create(items) | "spread" >> beam.Reshuffle()
             | "shards" >> beam.FlatMap(process)
             | "all" >> beam.combiners.ToList()
             | "manifest" >> beam.Map(write_manifest, str(out), tmp, head))
    return records.load_manifest(out)


MODULE = "prune_ofa_jax.data.prepare"


def parser() -> cli.Parser:
    ap = cli.Parser(MODULE, description=__doc__)
    ap.add_argument("--source", required=True, help="text:GLOB[,GLOB] | tfds:NAME[:SPLIT]")
    ap.add_argument("--tokenizer", default="", help="tokenizer dir ('' = MiniLM's)")
    ap.add_workdir("output dir of the prepared corpus (local or gs://)")
    ap.add_argument("--seq_len", type=int, default=128, help="training seq_len (chunk size)")
    ap.add_argument("--eval_fraction", type=float, default=0.05,
                    help="share of documents held out for the MLM eval")
    ap.add_argument("--root", default="", help="data root for text globs ('' = default)")
    ap.add_argument("--overwrite", action="store_true")
    return ap


def parse(argv: Sequence[str]):
    """(this module's args, the Beam pipeline options: every flag it does not know)."""
    return parser().parse_known_args(argv)


def not_beam_options(beam_args: List[str]) -> List[str]:
    """The args that no Beam PipelineOptions class defines."""
    if not beam_args:
        return []
    quiet = logging.NullHandler()  # Beam's import warns about optional GCP clients on root
    logging.getLogger().addHandler(quiet)
    try:
        from apache_beam.options import pipeline_options  # pylint: disable=import-outside-toplevel
        beam_parser = []
        pipeline_options.PipelineOptions([]).get_all_options(
            add_extra_args_fn=beam_parser.append)
    finally:
        logging.getLogger().removeHandler(quiet)
    return beam_parser[0].parse_known_args(beam_args)[1]


def main(argv: Sequence[str] | None = None) -> int:
    args, beam_args = parse(sys.argv[1:] if argv is None else argv)
    unknown = not_beam_options(beam_args)
    if unknown:
        parser().error(f"unrecognized arguments: {' '.join(unknown)} (neither a flag of this "
                       "command nor an Apache Beam pipeline option)")

    def body():
        logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
        for noisy in ("apache_beam", "absl"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        t0 = time.perf_counter()
        m = run(args, beam_args)
        print(f"[prepare] {args.workdir}: {m['num_tokens']:,} tokens, {m['num_documents']:,} "
              f"documents, {m['num_records']:,} records in {len(m['shards'])} shards "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)

    return cli.run(body, verbose=args.verbose, user_errors=(
        common.DataError, records.PreparedDataError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
