"""Training batches from a prepared corpus, streamed with Grain (multi-process, checkpointable).

    ds = stream.PreparedDataset(DIR, tokenizer, max_len=128, batch_size=256, seed=0)
    it = ds.iterator(worker_count=2)   # this host's rows of global batches 0, 1, ...
    batch = next(it); state = it.get_state(); it.set_state(state)

The Grain pipeline (one per host):
  MapDataset.range(num_records).shuffle(seed).repeat()   index sampler: a permutation per
                                                         epoch, seeded by (seed, epoch), O(1)
                                                         memory (Grain's index shuffle)
  .map_with_index -> (n, record)                         n = global sample number
  .batch(batch_size // process_count)[p::process_count]  process p's rows of each global batch:
                                                         global batch k = chunks kP .. kP+P-1,
                                                         so it is the same batch on any
                                                         number of hosts
  .map(_BuildBatch)                                      read the records (+ random-next
                                                         partners) and batched.Batcher: NSP
                                                         pairing and masking per batch
  .to_iter_dataset().mp_prefetch(worker_count)           worker processes, `prefetch` batches
                                                         buffered per worker
A host keeps only the ArrayRecord readers' indices (one offset per record of the shards) and
the batches in flight: its memory does not grow with the corpus' tokens.
"""

from __future__ import annotations

import json
from typing import Dict, Optional

import grain
import numpy as np
from absl import flags

from prune_ofa_jax.data import batched, common, masking, records, tokenization


class _Chunks:
    """Decoded chunks of ArrayRecord shards, opened lazily (in each worker process)."""

    def __init__(self, paths):
        self.paths = list(paths)
        self._source = None

    def _src(self):
        if self._source is None:
            self._source = grain.sources.ArrayRecordDataSource(self.paths)
        return self._source

    def __len__(self) -> int:
        return len(self._src())

    def get(self, keys) -> list:
        src = self._src()
        return [records.decode(r) for r in src.__getitems__([int(k) for k in keys])]

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
        return {"paths": self.paths}

    def __setstate__(self, state):
        self.paths, self._source = state["paths"], None


class _BuildBatch(grain.transforms.Map):
    def __init__(self, chunks: _Chunks, batcher: batched.Batcher):
        self.chunks, self.batcher = chunks, batcher

    def map(self, element):
        n, keys = element
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
        self.chunks = _Chunks(records.shard_paths(self.manifest, directory, split))
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
        ds = grain.MapDataset.range(self.num_records).shuffle(seed=self.seed).repeat()
        ds = ds.map_with_index(lambda n, key: (n, key)).batch(self.local_batch_size)
        ds = ds[self.process_index::self.process_count]
        return ds.map(_BuildBatch(self.chunks, self.batcher))

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
    from prune_ofa_jax.data import pretraining  # pylint: disable=import-outside-toplevel
    ids = pretraining.special_token_ids(tokenizer)
    return batched.SpecialIds(ids.cls, ids.sep, ids.pad, ids.mask, np.asarray(ids.all))


def mask_config(tokenizer, mlm_prob: float = 0.15) -> masking.MaskingConfig:
    ids = special_ids(tokenizer)
    vocab = tokenization.vocab_size(tokenizer)
    return masking.MaskingConfig(mask_id=ids.mask, mlm_prob=mlm_prob,
                                 random_ids=np.setdiff1d(np.arange(vocab), ids.all))
