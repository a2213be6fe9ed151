"""A prepared corpus is checked when a run starts, on every host (each builds its
PreparedDataset): every shard the manifest lists opens and holds the records it counts, else
one PreparedDataError naming the shard, before any record is sampled."""

import json
import shutil

import pytest

from prune_ofa_jax.data import records, stream, tokenization


@pytest.fixture()
def corpus(prepared_corpus, tmp_path):
    """A copy of the session's prepared corpus to damage, and its manifest."""
    out = tmp_path / "wiki_32"
    shutil.copytree(prepared_corpus, out)
    return out, records.load_manifest(out)


def _open(directory, split="train"):
    return stream.PreparedDataset(directory, tokenization.load_tokenizer(None), max_len=32,
                                  split=split)


def _shard(manifest, split):
    return next(s for s in manifest["shards"] if s["split"] == split)


def test_a_truncated_shard_stops_the_start_naming_it(corpus):
    directory, m = corpus
    assert _open(directory).num_records == sum(
        s["records"] for s in m["shards"] if s["split"] == "train")
    shard = directory / _shard(m, "train")["name"]
    shard.write_bytes(shard.read_bytes()[:-5000])
    with pytest.raises(records.PreparedDataError, match=rf"shard {shard} cannot be read"):
        _open(directory)
    shard.unlink()
    with pytest.raises(records.PreparedDataError, match=rf"shard {shard} cannot be read "
                                                         r"\(.*No such file"):
        _open(directory)


def test_a_manifest_that_disagrees_with_a_shard_stops_the_start(corpus):
    directory, m = corpus
    ev = _shard(m, "eval")
    ev["records"] += 1
    (directory / records.MANIFEST).write_text(json.dumps(m))
    _open(directory, "train")  # the train shards still agree
    with pytest.raises(records.PreparedDataError, match=rf"shard {directory / ev['name']} "
                       rf"holds {ev['records'] - 1} records, manifest.json lists "
                       rf"{ev['records']}"):
        _open(directory, "eval")
