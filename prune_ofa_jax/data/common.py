"""Shared data plumbing: the DataError type, strict file reading, and random-access batching.

Every dataset in this package is *random access by step*: `batch(step)` is a pure function of
(seed, step, process_index, process_count), so resuming a run means asking for the next step,
and the shards of all processes together form the global batch (process p holds rows
[p * B_local, (p + 1) * B_local) of it).
"""

import logging
import pathlib
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad input data; the message names the file and (where there is one) the line."""


def where(path, line: Optional[int] = None) -> str:
    """`file:line` prefix for error messages."""
    return f"{path}:{line}" if line is not None else str(path)


def read_text(path, errors: str = "strict", encoding: str = "utf-8") -> str:
    """Reads a whole text file; undecodable bytes raise DataError naming file and line.

    errors="replace" substitutes U+FFFD instead and logs how many lines were affected (for
    corpora known to hold a few stray Latin-1 bytes). A UTF-8 byte-order mark is dropped.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        if errors != "replace":
            raise DataError(
                f"{where(path, line)}: not valid {encoding} (byte 0x{raw[e.start]:02x} at offset "
                f"{e.start}); fix the file or pass errors='replace'") from e
        text = raw.decode(encoding, errors="replace")
        bad = sum("\ufffd" in ln for ln in text.split("\n"))
        log.warning("%s: replaced undecodable bytes on %d line(s)", path, bad)
    return text.lstrip("\ufeff")


def split_lines(text: str):
    """Splits on '\\n' only (str.splitlines also splits on \\x1c, \\x85, \\u2028 inside data)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def process_info(process_index: Optional[int], process_count: Optional[int]) -> Tuple[int, int]:
    """Defaults to jax.process_index()/process_count(); validates the pair."""
    if process_index is None or process_count is None:
        import jax  # pylint: disable=import-outside-toplevel  (keep data importable without jax)
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return int(process_index), int(process_count)


def local_batch_size(global_batch_size: int, process_count: int) -> int:
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise ValueError(
            f"global batch size {global_batch_size} must be a positive multiple of the "
            f"process count {process_count}")
    return global_batch_size // process_count


class ShuffledRows:
    """Row indices for `batch(step)`: a fresh seeded permutation each epoch, remainder dropped.

    epoch = step // steps_per_epoch; the permutation of epoch e depends only on (seed, e).
    """

    def __init__(self, num_rows: int, global_batch_size: int, seed: int,
                 process_index: Optional[int] = None, process_count: Optional[int] = None):
        self.process_index, self.process_count = process_info(process_index, process_count)
        self.local_batch_size = local_batch_size(global_batch_size, self.process_count)
        self.global_batch_size = global_batch_size
        self.num_rows = num_rows
        self.seed = seed
        self.steps_per_epoch = num_rows // global_batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"{num_rows} rows cannot fill one global batch of {global_batch_size}")
        self._cache = (None, None)

    def _perm(self, epoch: int) -> np.ndarray:
        if self._cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._cache = (epoch, rng.permutation(self.num_rows))
        return self._cache[1]

    def global_indices(self, step: int) -> np.ndarray:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, k = divmod(int(step), self.steps_per_epoch)
        g = self.global_batch_size
        return self._perm(epoch)[k * g:(k + 1) * g]

    def indices(self, step: int) -> np.ndarray:
        lo = self.process_index * self.local_batch_size
        return self.global_indices(step)[lo:lo + self.local_batch_size]


def eval_index_batches(num_rows: int, global_batch_size: int, process_index: int,
                       process_count: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(row indices, weights) for each local shard of ordered global eval batches.

    Every row appears exactly once over all processes; the last global batch is padded with
    copies of row 0 carrying weight 0 (a real row, so the model sees a valid input).
    """
    local = local_batch_size(global_batch_size, process_count)
    for start in range(0, num_rows, global_batch_size):
        idx = np.arange(start, start + global_batch_size)
        weights = (idx < num_rows).astype(np.float32)
        idx = np.where(idx < num_rows, idx, 0)
        lo = process_index * local
        yield idx[lo:lo + local], weights[lo:lo + local]


def take_rows(arrays: Dict[str, np.ndarray], idx: np.ndarray,
              dtypes: Optional[Dict[str, np.dtype]] = None) -> Dict[str, np.ndarray]:
    """Gathers rows and casts to the batch dtypes (int32 unless told otherwise)."""
    dtypes = dtypes or {}
    return {k: np.asarray(v[idx], dtype=dtypes.get(k, np.int32)) for k, v in arrays.items()}


def num_eval_batches(num_rows: int, global_batch_size: int) -> int:
    return -(-num_rows // global_batch_size)


def check_columns(path, header: Sequence[str], needed: Sequence[str], line: int = 1) -> None:
    missing = [c for c in needed if c not in header]
    if missing:
        raise DataError(f"{where(path, line)}: missing column(s) {missing}; header is {list(header)}")


class ArrayDataset:
    """Random-access batches over equal-length numpy columns (tokenised once, up front).

    `batch(step)`: training rows, a fresh permutation each epoch seeded by (seed, epoch), the
    remainder of an epoch dropped. `eval_batches(batch_size)`: every row once, in order, the
    last global batch padded with weight-0 copies of row 0. Both yield the local shard.
    Columns are cast per batch: int32 unless `dtypes` says otherwise.
    """

    def __init__(self, arrays: Dict[str, np.ndarray], batch_size: int, seed: int = 0,
                 process_index: Optional[int] = None, process_count: Optional[int] = None,
                 dtypes: Optional[Dict[str, np.dtype]] = None):
        sizes = {k: len(v) for k, v in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"columns differ in length: {sizes}")
        self.process_index, self.process_count = process_info(process_index, process_count)
        self.global_batch_size = batch_size
        self.local_batch_size = local_batch_size(batch_size, self.process_count)
        self.seed = seed
        self.arrays = arrays
        self.dtypes = dtypes or {}
        self._rows = None

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.arrays.values())))

    def _shuffled(self) -> ShuffledRows:
        if self._rows is None:  # lazily: an eval-only set may hold fewer rows than a batch
            self._rows = ShuffledRows(self.num_rows, self.global_batch_size, self.seed,
                                      self.process_index, self.process_count)
        return self._rows

    @property
    def steps_per_epoch(self) -> int:
        return self._shuffled().steps_per_epoch

    def batch(self, step: int) -> Dict[str, np.ndarray]:
        """Training batch `step`: the local shard of its global batch."""
        return take_rows(self.arrays, self._shuffled().indices(step), self.dtypes)

    def eval_batches(self, batch_size: int) -> Iterator[Dict[str, np.ndarray]]:
        """Local shards of ordered global eval batches of `batch_size`, with "weights"."""
        for idx, weights in eval_index_batches(self.num_rows, batch_size, self.process_index,
                                               self.process_count):
            batch = take_rows(self.arrays, idx, self.dtypes)
            batch["weights"] = weights
            yield batch

    def num_eval_batches(self, batch_size: int) -> int:
        return num_eval_batches(self.num_rows, batch_size)
