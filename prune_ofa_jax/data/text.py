"""Raw text corpora for pre-training: documents (lists of sentences) from files or TFDS.

Document layouts (`doc_format`):
  "bert"       BERT's create_pretraining_data input: one sentence per line, blank line between
               documents; lines are taken as sentences as they are.
  "blank_line" blank-line-separated documents of hard-wrapped prose; lines are joined, then
               sentence-split.
  "line"       one document per non-empty line (e.g. paragraph-per-line text), sentence-split.
  "file"       the whole file is one document (a book); each blank-line-separated paragraph is
               sentence-split.
  "wikitext"   WikiText: a line " = Title = " starts a new article; section headings
               (" = = Heading = = ") are dropped; each paragraph line is sentence-split. The
               number markers " @-@ ", " @,@ ", " @.@ " are undone; "<unk>" is left as text.

Sentence splitting is rule based (no model): a boundary is `.`, `!` or `?` (plus any closing
quotes/brackets) followed by whitespace and an upper-case letter, digit or opening quote/bracket,
unless the word before is a known abbreviation (Mr., Dr., St., e.g., U.S., ...) or a single-letter
initial ("H. americanus"). It errs towards longer sentences, which only makes the A/B split points
coarser; NSP and MLM are robust to that.
"""

import dataclasses
import glob
import logging
import pathlib
import re
from typing import Iterable, List, Optional, Sequence

from prune_ofa_jax import paths
from prune_ofa_jax.data import common

log = logging.getLogger(__name__)

Document = List[str]
DOC_FORMATS = ("bert", "blank_line", "line", "file", "wikitext")

_BOUNDARY = re.compile(r"[.!?]+['\"\u2019\u201d)\]]*(?=\s+['\"\u2018\u201c(\[]?[A-Z0-9])")
_ABBREV = frozenset(
    "mr mrs ms dr prof st jr sr vs etc e.g i.e no nos gen col gov sen rep inc co ltd corp "
    "mt ft lt capt sgt rev hon fig vol pp al jan feb mar apr jun jul aug sep sept oct nov dec "
    "u.s u.k u.n a.m p.m".split())
_TITLE = re.compile(r"^ ?= [^=].* = ?$")
_HEADING = re.compile(r"^ ?(= ){2,}.*( =){2,} ?$")


def split_sentences(text: str) -> List[str]:
    """Rule-based sentence splitting (see the module docstring); whitespace is normalised."""
    text = " ".join(text.split())
    out, start = [], 0
    for m in _BOUNDARY.finditer(text):
        word = text[start:m.start() + 1].rsplit(" ", 1)[-1].lower().rstrip(".!?")
        if word in _ABBREV or (len(word) == 1 and word.isalpha()):
            continue
        out.append(text[start:m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return [s for s in out if s]


def _paragraphs(lines: Sequence[str]) -> List[str]:
    """Blank-line-separated blocks, each joined into one string."""
    paras, cur = [], []
    for ln in lines + [""]:
        if ln.strip():
            cur.append(ln.strip())
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    return paras


def _wikitext_docs(lines: Sequence[str]) -> List[Document]:
    docs: List[Document] = []
    for ln in lines:
        if _TITLE.match(ln):
            docs.append([])
        elif ln.strip() and not _HEADING.match(ln):
            if not docs:
                docs.append([])
            ln = ln.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
            docs[-1].extend(split_sentences(ln))
    return docs


def documents_from_text(lines: Sequence[str], doc_format: str) -> List[Document]:
    """Splits one file's lines into documents according to `doc_format`."""
    if doc_format == "bert":
        docs, cur = [], []
        for ln in list(lines) + [""]:
            if ln.strip():
                cur.append(ln.strip())
            elif cur:
                docs.append(cur)
                cur = []
        return docs
    if doc_format == "blank_line":
        return [split_sentences(p) for p in _paragraphs(list(lines))]
    if doc_format == "line":
        return [split_sentences(ln) for ln in lines if ln.strip()]
    if doc_format == "file":
        return [[s for p in _paragraphs(list(lines)) for s in split_sentences(p)]]
    if doc_format == "wikitext":
        return _wikitext_docs(lines)
    raise ValueError(f"doc_format must be one of {DOC_FORMATS}, got {doc_format!r}")


@dataclasses.dataclass(frozen=True)
class TextFiles:
    """Local text files in one layout. `paths`: files, directories (their *.txt) or globs."""
    paths: Sequence[str]
    doc_format: str = "blank_line"
    encoding: str = "utf-8"
    errors: str = "strict"


def expand_paths(specs: Iterable) -> List[pathlib.Path]:
    out = []
    for spec in specs:
        p = pathlib.Path(spec)
        if p.is_dir():
            found = sorted(p.glob("*.txt"))
        elif any(c in str(spec) for c in "*?["):
            found = sorted(pathlib.Path(f) for f in glob.glob(str(spec)))
        else:
            found = [p]
        if not found:
            raise common.DataError(f"{spec}: no text files found")
        out.extend(found)
    return out


def read_documents(sources: Sequence[TextFiles]) -> List[Document]:
    """All documents of all sources, in file order; empty files are a DataError."""
    docs: List[Document] = []
    for src in sources:
        if src.doc_format not in DOC_FORMATS:
            raise ValueError(f"doc_format must be one of {DOC_FORMATS}, got {src.doc_format!r}")
        for path in expand_paths(src.paths):
            text = common.read_text(path, errors=src.errors, encoding=src.encoding)
            found = [d for d in documents_from_text(common.split_lines(text), src.doc_format) if d]
            if not found:
                raise common.DataError(f"{path}: empty (no text found)")
            docs.extend(found)
    return docs


def tfds_documents(name: str, split: str = "train", data_dir: Optional[str] = None,
                   text_key: str = "text", max_docs: Optional[int] = None) -> List[Document]:
    """Documents from a TFDS text data set (e.g. "wikipedia/20230601.en"): one record = one
    document, newline-separated paragraphs, each sentence-split.

    Needs the data set prepared as array_record/parquet (read with `tfds.data_source`, which
    works without TensorFlow); nothing is downloaded here.
    """
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    n = len(source) if max_docs is None else min(max_docs, len(source))
    docs = []
    for i in range(n):
        text = source[i][text_key]
        text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
        doc = [s for para in text.split("\n") for s in split_sentences(para)]
        if doc:
            docs.append(doc)
    if not docs:
        raise common.DataError(f"tfds {name}[{split}]: no text found under key {text_key!r}")
    return docs


# Layout and encoding of the shared corpora, by folder name (see shared_corpus).
KNOWN_LAYOUTS = {"wikitext2": ("wikitext", "utf-8"), "text_gutenberg_nltk": ("file", "latin-1"),
                 "text_state_union": ("line", "cp950")}


def sources_from_globs(globs: Sequence[str], root=None,
                       default_format: str = "blank_line") -> List[TextFiles]:
    """TextFiles for path globs relative to `root` (default: the shared data root): files in a
    folder of KNOWN_LAYOUTS get its layout and encoding, anything else `default_format`/UTF-8."""
    root = pathlib.Path(root) if root is not None else paths.data_root()
    out = []
    for g in globs:
        files = expand_paths([str(root / g)])
        for f in files:
            fmt, enc = KNOWN_LAYOUTS.get(f.parent.name, (default_format, "utf-8"))
            out.append(TextFiles([str(f)], fmt, encoding=enc))
    return out


def shared_corpus(root=None) -> List[TextFiles]:
    """The offline corpus in the shared data dir (~1.6M words), each part in its own layout.

    Gutenberg books are ASCII except one ISO-8859-1 file, hence latin-1 for that folder. The
    State of the Union file is ASCII plus punctuation saved through Big5 (b"\\xa1\\xa6" for the
    apostrophe), which cp950 decodes back to the intended quotes and dashes.
    """
    root = pathlib.Path(root) if root is not None else paths.data_root()
    return [
        TextFiles([str(root / "wikitext2")], "wikitext"),
        TextFiles([str(root / "text_gutenberg_nltk")], "file", encoding="latin-1"),
        TextFiles([str(root / "text_state_union")], "line", encoding="cp950"),
    ]
