"""Training batches from a prepared corpus, streamed with Grain (multi-process, checkpointable).

    ds = stream.PreparedDataset(DIR, tokenizer, max_len=128, batch_size=256, seed=0)
    it = ds.iterator(worker_count=2)   # this host's rows of global batches 0, 1, ...
    batch = next(it); state = it.get_state(); it.set_state(state)

The Grain pipeline (one per host):
  MapDataset.range(MAX_STEPS)                            element k = global batch k
  .map(_BuildBatch)                                      process p's rows n = kB + pb ..
                                                         kB + (p+1)b - 1 of it (b = B / P);
                                                         the index sampler maps n to record
                                                         permute(n mod N, key(seed, epoch))
                                                         (a keyed bijection, O(1) memory,
                                                         vectorised per batch); then read the
                                                         records (+ random-next partners) and
                                                         batched.Batcher: NSP pairing and
                                                         masking per batch
  .to_iter_dataset().mp_prefetch(worker_count)           worker processes (worker w builds
                                                         k = w mod W), `prefetch` batches
                                                         buffered per worker
Rows are numbered globally, so global batch k is the same on any number of hosts.
(Grain's own MapDataset.shuffle/batch run per element, ~0.4 ms a row here: too slow for
25k rows/s on two cores, hence the index sampler inside the batch transform.)
A host keeps only the ArrayRecord readers' indices (one offset per record of the shards) and
the batches in flight: its memory does not grow with the corpus' tokens.
"""

from __future__ import annotations

import json
from typing import Dict, Optional

import grain
import numpy as np
from absl import flags

from prune_ofa_jax.data import batched, common, masking, pretraining, records, tokenization


class _Chunks:
    """Decoded chunks of ArrayRecord shards; readers opened lazily (in each worker process),
    one per shard, each read a batch of positions at a time."""

    def __init__(self, paths, counts):
        self.paths, self.counts = list(paths), list(counts)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        self._readers = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def get(self, keys) -> list:
        import array_record.python.array_record_module as ar  # pylint: disable=import-outside-toplevel
        if self._readers is None:
            self._readers = [None] * len(self.paths)
        keys = np.asarray(keys, np.int64)
        shard = np.searchsorted(self.starts, keys, side="right") - 1
        out = [None] * len(keys)
        for s in np.unique(shard):
            if self._readers[s] is None:
                self._readers[s] = ar.ArrayRecordReader(self.paths[s],
                                                        "readahead_buffer_size:0")
            sel = np.flatnonzero(shard == s)
            raws = self._readers[s].read([int(k) for k in keys[sel] - self.starts[s]])
            for i, raw in zip(sel, raws):
                out[i] = records.decode(raw)
        return out

    def partners(self, u: np.ndarray, docs: np.ndarray) -> list:
        """Chunks at uniform random places, moved on by half the corpus when one is of the
        row's own document (a one-document corpus pairs with itself)."""
        n = len(self)
        keys = np.floor(u * n).astype(np.int64)
        out = self.get(keys)
        clash = [i for i, c in enumerate(out) if c.doc == docs[i]]
        if clash:
            moved = self.get((keys[clash] + n // 2 + 1) % n)
            for i, c in zip(clash, moved):
                out[i] = c
        return out

    def __getstate__(self):
        return {"paths": self.paths, "counts": self.counts}

    def __setstate__(self, state):
        self.__init__(state["paths"], state["counts"])


MAX_STEPS = 2**40


class _BuildBatch(grain.transforms.Map):
    """Global batch index k -> this process's rows of it."""

    def __init__(self, chunks: _Chunks, batcher: batched.Batcher, num_records: int,
                 global_batch: int, local_batch: int, process_index: int, seed: int):
        self.chunks, self.batcher, self.num_records = chunks, batcher, num_records
        self.global_batch, self.local_batch = global_batch, local_batch
        self.process_index, self.seed = process_index, seed

    def records(self, n: np.ndarray) -> np.ndarray:
        """The index sampler: sample n -> its record (epoch e = n // N permuted by (seed, e))."""
        epoch, i = np.divmod(n, self.num_records)
        out = np.empty_like(n)
        for e in np.unique(epoch):
            sel = epoch == e
            out[sel] = batched.permute(i[sel], self.num_records, (self.seed << 32) + int(e))
        return out

    def map(self, element):
        first = int(element) * self.global_batch + self.process_index * self.local_batch
        n = np.arange(first, first + self.local_batch, dtype=np.int64)
        keys = self.records(n)
        rows = self.chunks.get(keys)
        docs = np.array([c.doc for c in rows])
        return self.batcher(np.asarray(n), rows,
                            lambda u, mask: self.chunks.partners(u, docs[mask]))


class PreparedDataset:
    """This host's rows of global batch k, for k = 0, 1, ... (an endless stream)."""

    def __init__(self, directory, tokenizer, *, max_len: int = 128, batch_size: int = 32,
                 seed: int = 0, max_predictions: Optional[int] = None, mlm_prob: float = 0.15,
                 short_seq_prob: float = 0.1, nsp: bool = True, split: str = "train",
                 tokenizer_path: Optional[str] = None, process_index: Optional[int] = None,
                 process_count: Optional[int] = None):
        self.manifest = records.load_manifest(directory)
        records.check_fits(self.manifest, directory, tokenizer, tokenizer_path, max_len)
        self.chunks = _Chunks(records.shard_paths(self.manifest, directory, split),
                              [s["records"] for s in self.manifest["shards"]
                               if s["split"] == split])
        if not self.chunks.paths:
            raise records.PreparedDataError(
                f"{directory}: no {split} shards (re-prepare with a larger --eval_fraction)")
        self.process_index, self.process_count = common.process_info(process_index,
                                                                      process_count)
        self.local_batch_size = common.local_batch_size(batch_size, self.process_count)
        self.global_batch_size, self.seed = batch_size, seed
        self.num_records = sum(s["records"] for s in self.manifest["shards"]
                               if s["split"] == split)
        self.batcher = batched.Batcher(
            special_ids(tokenizer), mask_config(tokenizer, mlm_prob),
            max_len=max_len, seed=seed, nsp=nsp, short_seq_prob=short_seq_prob,
            max_predictions=(max_predictions if max_predictions is not None
                             else int(round(mlm_prob * max_len))))

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.num_records // self.global_batch_size)

    def dataset(self) -> grain.MapDataset:
        """The MapDataset of this host's batches (random access by batch index)."""
        return grain.MapDataset.range(MAX_STEPS).map(_BuildBatch(
            self.chunks, self.batcher, self.num_records, self.global_batch_size,
            self.local_batch_size, self.process_index, self.seed))

    def batch(self, k: int) -> Dict[str, np.ndarray]:
        """Batch k built in this process (random access; the iterator is for training)."""
        return self.dataset()[k]

    def iterator(self, worker_count: int = 2, prefetch: int = 2) -> "Iterator":
        if not flags.FLAGS.is_parsed():  # Grain reads absl flags; a library caller has none
            flags.FLAGS.mark_as_parsed()

        def make(start: int):
            ds = self.dataset()[start:].to_iter_dataset(
                grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch))
            if worker_count > 0:
                ds = ds.mp_prefetch(grain.MultiprocessingOptions(
                    num_workers=worker_count, per_worker_buffer_size=prefetch))
            return iter(ds)
        return Iterator(make, worker_count)


class Iterator:
    """The Grain iterator with a JSON state (bytes, what grain.checkpoint saves per process):
    Grain's own state plus the batch position. A state saved with another worker_count (its
    Grain part then does not fit) resumes from the position: batch k is a pure function of k.
    """

    def __init__(self, make, worker_count: int):
        self._make, self._workers = make, worker_count
        self._start, self._it, self.position = 0, make(0), 0

    def __iter__(self):
        return self

    def __next__(self) -> Dict[str, np.ndarray]:
        batch = {k: np.array(v) for k, v in next(self._it).items()}  # out of shared memory
        self.position += 1
        return batch

    def get_state(self) -> bytes:
        return json.dumps({"position": self.position, "start": self._start,
                           "worker_count": self._workers,
                           "grain": self._it.get_state()}).encode()

    def set_state(self, state: bytes) -> None:
        state = json.loads(state)
        self.close()
        if state["worker_count"] == self._workers:
            self._start, self._it = state["start"], self._make(state["start"])
            self._it.set_state(state["grain"])
        else:
            self._start, self._it = state["position"], self._make(state["position"])
        self.position = state["position"]

    def start_prefetch(self) -> None:
        """Called by grain.checkpoint after a restore; prefetch starts on the next fetch."""

    def close(self) -> None:
        if hasattr(self._it, "close"):
            self._it.close()


def special_ids(tokenizer) -> batched.SpecialIds:
    ids = pretraining.special_token_ids(tokenizer)
    return batched.SpecialIds(ids.cls, ids.sep, ids.pad, ids.mask, np.asarray(ids.all))


def mask_config(tokenizer, mlm_prob: float = 0.15) -> masking.MaskingConfig:
    ids = special_ids(tokenizer)
    vocab = tokenization.vocab_size(tokenizer)
    return masking.MaskingConfig(mask_id=ids.mask, mlm_prob=mlm_prob,
                                 random_ids=np.setdiff1d(np.arange(vocab), ids.all))
