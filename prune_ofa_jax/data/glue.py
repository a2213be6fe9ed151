"""The nine GLUE tasks: a spec table and loaders for TFDS (`glue/<task>`) or GLUE TSV files.

Local layout (the official GLUE download): `<root>/<DIR>/{train,dev,test}.tsv`, DIR in CoLA,
SST-2, MRPC, QQP, STS-B, MNLI, QNLI, RTE, WNLI; MNLI has dev_matched.tsv / dev_mismatched.tsv
(and test_*). `data_dir` may be the GLUE root or the task folder itself. Files are read strictly:
tab-separated, no quoting (GLUE's convention), every row with the header's number of fields;
anything else is a `DataError` naming the file and line. CoLA's train/dev files have no header
(columns: source, label, original label, sentence).

Split names follow TFDS: "train", "validation" (MNLI: "validation_matched",
"validation_mismatched"), "test" (MNLI: "test_matched", "test_mismatched"); test labels are -1.
Label ids follow the TFDS ClassLabel order in both sources (MNLI: entailment, neutral,
contradiction; note HF's run_glue orders MNLI differently).
"""

import dataclasses
import pathlib
from typing import Optional, Tuple

import numpy as np

from prune_ofa_jax import paths
from prune_ofa_jax.data import classification, common


@dataclasses.dataclass(frozen=True)
class GlueTask:
    name: str                         # TFDS config name: glue/<name>
    dir_name: str                     # folder in the GLUE download
    text_cols: Tuple[str, ...]        # TSV header names of the one or two texts
    tfds_keys: Tuple[str, ...]        # TFDS feature names of the same texts
    label_col: str                    # TSV header name of the label
    label_values: Optional[Tuple[str, ...]]  # TSV label strings in id order; None = regression
    metrics: Tuple[str, ...]          # eval.glue_metrics names; the first is the headline one
    eval_splits: Tuple[str, ...] = ("validation",)
    no_header_cols: Optional[Tuple[str, ...]] = None  # train/dev files without a header

    @property
    def num_labels(self) -> int:
        """1 for regression (STS-B), else the number of classes (models' num_labels)."""
        return 1 if self.label_values is None else len(self.label_values)

    @property
    def is_regression(self) -> bool:
        return self.label_values is None


_BIN = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
TASKS = {t.name: t for t in [
    GlueTask("cola", "CoLA", ("sentence",), ("sentence",), "label", _BIN, ("matthews_corr",),
             no_header_cols=("source", "label", "original_label", "sentence")),
    GlueTask("sst2", "SST-2", ("sentence",), ("sentence",), "label", _BIN, ("accuracy",)),
    GlueTask("mrpc", "MRPC", ("#1 String", "#2 String"), ("sentence1", "sentence2"), "Quality",
             _BIN, ("f1", "accuracy")),
    GlueTask("qqp", "QQP", ("question1", "question2"), ("question1", "question2"),
             "is_duplicate", _BIN, ("f1", "accuracy")),
    GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "score",
             None, ("pearson", "spearman")),
    GlueTask("mnli", "MNLI", ("sentence1", "sentence2"), ("premise", "hypothesis"), "gold_label",
             ("entailment", "neutral", "contradiction"), ("accuracy",),
             eval_splits=("validation_matched", "validation_mismatched")),
    GlueTask("qnli", "QNLI", ("question", "sentence"), ("question", "sentence"), "label", _NLI2,
             ("accuracy",)),
    GlueTask("rte", "RTE", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label", _NLI2,
             ("accuracy",)),
    GlueTask("wnli", "WNLI", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label", _BIN,
             ("accuracy",)),
]}
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli_matched": "mnli", "mnli_mismatched": "mnli"}
_FILES = {"train": "train", "validation": "dev", "dev": "dev", "test": "test",
          "validation_matched": "dev_matched", "validation_mismatched": "dev_mismatched",
          "test_matched": "test_matched", "test_mismatched": "test_mismatched"}


def task(name: str) -> GlueTask:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; one of {sorted(TASKS)}")
    return TASKS[key]


def task_file(spec: GlueTask, split: str, data_dir=None) -> pathlib.Path:
    """The split's TSV: in data_dir itself, data_dir/<DIR> or data_dir/<name>; by default under
    the shared data root's glue/ or the root itself (the shared SST-2 lives at sst2/)."""
    if split not in _FILES:
        raise ValueError(f"unknown split {split!r}; one of {sorted(_FILES)}")
    roots = [pathlib.Path(data_dir)] if data_dir is not None else [paths.data_root() / "glue",
                                                                   paths.data_root()]
    name = f"{_FILES[split]}.tsv"
    candidates = [d / name for r in roots for d in (r, r / spec.dir_name, r / spec.name)]
    for c in candidates:
        if c.is_file():
            return c
    raise common.DataError(f"GLUE {spec.name} {split}: none of {[str(c) for c in candidates]} "
                           "exists")


def load(name: str, split: str, data_dir=None, source: str = "local") -> classification.Examples:
    """Examples of a GLUE task split from local TSVs (source="local") or TFDS ("tfds")."""
    spec = task(name)
    if source == "tfds":
        return load_tfds(spec, split, data_dir)
    if source != "local":
        raise ValueError(f"source must be 'local' or 'tfds', got {source!r}")
    return read_tsv(spec, task_file(spec, split, data_dir),
                    require_labels=not split.startswith("test"))


def _header(spec: GlueTask, lines):
    """(column names, index of the first data line); CoLA train/dev have no header."""
    first = lines[0].split("\t")
    if spec.no_header_cols is not None and len(first) == len(spec.no_header_cols) and \
            first[0] != "index":
        return list(spec.no_header_cols), 0
    return first, 1


def read_tsv(spec: GlueTask, path, require_labels: bool = True) -> classification.Examples:
    """One GLUE TSV; with require_labels=False (test files) a missing label column gives -1."""
    lines = common.split_lines(common.read_text(path))
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise common.DataError(f"{path}: empty file")
    header, first = _header(spec, lines)
    common.check_columns(path, header, spec.text_cols + ((spec.label_col,) if require_labels
                                                         else ()))
    cols = [header.index(c) for c in spec.text_cols]
    label_col = header.index(spec.label_col) if spec.label_col in header else None
    texts = [[] for _ in cols]
    labels = []
    for lineno in range(first + 1, len(lines) + 1):
        fields = lines[lineno - 1].split("\t")
        if len(fields) != len(header):
            raise common.DataError(f"{common.where(path, lineno)}: {len(fields)} tab-separated "
                                   f"fields, expected {len(header)} ({header})")
        for out, c in zip(texts, cols):
            out.append(fields[c])
        if label_col is not None:
            labels.append(_label(spec, fields[label_col], path, lineno))
    if not texts[0]:
        raise common.DataError(f"{path}: no data rows")
    return classification.Examples(texts[0], texts[1] if len(texts) > 1 else None,
                                   _label_array(spec, labels, len(texts[0])), str(path))


def _label(spec: GlueTask, value: str, path, lineno: int):
    value = value.strip()
    if spec.label_values is None:
        try:
            return float(value)
        except ValueError:
            raise common.DataError(f"{common.where(path, lineno)}: score {value!r} is not a "
                                   "number") from None
    if value not in spec.label_values:
        raise common.DataError(f"{common.where(path, lineno)}: label {value!r} not in "
                               f"{spec.label_values}")
    return spec.label_values.index(value)


def _label_array(spec: GlueTask, labels, n: int) -> np.ndarray:
    if not labels:
        return np.full(n, -1.0 if spec.is_regression else -1,
                       np.float32 if spec.is_regression else np.int64)
    return np.asarray(labels, np.float32 if spec.is_regression else np.int64)


def load_tfds(spec: GlueTask, split: str, data_dir=None) -> classification.Examples:
    """`tfds.data_source("glue/<task>")` (array_record/parquet prepared; works without TF)."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    src = tfds.data_source(f"glue/{spec.name}", split=split, data_dir=data_dir, download=False)
    texts = [[] for _ in spec.tfds_keys]
    labels = []
    for i in range(len(src)):
        rec = src[i]
        for out, key in zip(texts, spec.tfds_keys):
            out.append(_str(rec[key]))
        labels.append(rec["label"])
    dtype = np.float32 if spec.is_regression else np.int64
    return classification.Examples(texts[0], texts[1] if len(texts) > 1 else None,
                                   np.asarray(labels, dtype), f"tfds:glue/{spec.name}[{split}]")


def _str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
