"""Kaggle "NLP with Disaster Tweets" (`id,keyword,location,text,target`) as binary classification.

test.csv has no labels, so for model selection use `train_dev_split` (seeded, stratified) on
train.csv. Only the tweet text is the model input (keyword/location are often empty).
"""

import csv
import io
import pathlib

import numpy as np

from prune_ofa_jax import paths
from prune_ofa_jax.data import classification, common

COLUMNS = ("id", "keyword", "location", "text", "target")
NUM_LABELS = 2


def default_dir() -> pathlib.Path:
    return paths.data_root() / "disaster_tweets"


def load(path, require_labels: bool = True) -> classification.Examples:
    """Reads one CSV (RFC-4180 quoting, tweets may hold newlines). Without the target column
    (test.csv, require_labels=False) labels are -1."""
    text = common.read_text(path)
    if not text.strip():
        raise common.DataError(f"{path}: empty file")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        common.check_columns(path, header, COLUMNS if require_labels else COLUMNS[:4])
        col_text = header.index("text")
        col_y = header.index("target") if "target" in header else None
        texts, labels = [], []
        start = reader.line_num
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise common.DataError(f"{common.where(path, start + 1)}: {len(row)} fields, "
                                       f"expected {len(header)} ({header})")
            texts.append(row[col_text])
            if col_y is not None:
                labels.append(_target(row[col_y], path, start + 1))
            start = reader.line_num
    except csv.Error as e:
        raise common.DataError(f"{common.where(path, reader.line_num)}: bad CSV: {e}") from e
    if not texts:
        raise common.DataError(f"{path}: no data rows")
    y = np.asarray(labels, np.int64) if col_y is not None else np.full(len(texts), -1, np.int64)
    return classification.Examples(texts, None, y, str(path))


def _target(value: str, path, line: int) -> int:
    if value.strip() not in ("0", "1"):
        raise common.DataError(f"{common.where(path, line)}: target {value!r} is not 0 or 1")
    return int(value)


def train_dev_split(examples: classification.Examples, dev_fraction: float = 0.1, seed: int = 0):
    """(train, dev): a seeded split stratified by target."""
    return classification.stratified_split(examples, dev_fraction, seed)
