"""Pre-training input at scale: the Beam prepare (same token ids as the in-memory path,
idempotent, never a half-written corpus, tokenizer mismatch refused) and the Grain stream
(rows independent of how hosts and workers split the batch, exact resume from the
iterator state, BERT's masking and NSP statistics)."""

import json
import shutil

import numpy as np
import pytest
import train_helpers
import transformers

from prune_ofa_jax import paths
from prune_ofa_jax.data import prepare, pretraining, records, stream, text, tokenization


@pytest.fixture(scope="module")
def tok():
    return tokenization.load_tokenizer(None)


def _all_chunks(directory, split=None):
    import array_record.python.array_record_data_source as ards  # pylint: disable=import-outside-toplevel
    m = records.load_manifest(directory)
    out = []
    for s in m["shards"]:
        if split is None or s["split"] == split:
            with ards.ArrayRecordDataSource([str(directory / s["name"])]) as src:
                out.extend(records.decode(src[i]) for i in range(len(src)))
    return sorted(out, key=lambda c: (c.doc, c.index))


def test_prepare_same_tokens_idempotent_and_safe(prepared_corpus, shared_data, tok, tmp_path,
                                                  caplog):
    corpus = pretraining.TokenizedCorpus.from_sources(
        text.sources_from_globs(["wikitext2/valid.txt"], shared_data), tok)
    chunks = _all_chunks(prepared_corpus)
    np.testing.assert_array_equal(np.concatenate([c.tokens for c in chunks]), corpus.tokens)
    np.testing.assert_array_equal(np.concatenate([c.sent_lens for c in chunks]),
                                  np.diff(corpus.sent_starts))
    docs = [c.doc for c in chunks if c.index == 0]
    assert len(docs) == len(set(docs)) == corpus.num_documents
    assert all(c.tokens.size == c.sent_lens.sum() for c in chunks)
    # a chunk closes once its sentences reach seq_len - 3 tokens: only the last sentence may
    # push it over, and only a document's last chunk may stay short
    assert all(c.sent_lens[:-1].sum() < 29 for c in chunks)
    m = records.load_manifest(prepared_corpus)
    assert m["num_tokens"] == corpus.num_tokens and m["num_records"] == len(chunks)
    assert {s["split"] for s in m["shards"]} == {"train", "eval"}
    # rerun: nothing rewritten; another corpus in the same dir: refused without --overwrite
    mtimes = {p.name: p.stat().st_mtime_ns for p in prepared_corpus.iterdir()}
    args, beam = prepare.parse(["--source", "text:wikitext2/valid.txt", "--workdir",
                                str(prepared_corpus), "--seq_len", "32",
                                "--root", str(shared_data)])
    with caplog.at_level("INFO"):
        assert prepare.run(args, beam)["num_tokens"] == m["num_tokens"]
    assert "up to date" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in prepared_corpus.iterdir()} == mtimes
    args.seq_len = 64
    with pytest.raises(records.PreparedDataError, match="--overwrite"):
        prepare.run(args, beam)
    # interrupted: shards without a manifest are never read
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(prepared_corpus / m["shards"][0]["name"], half)
    with pytest.raises(records.PreparedDataError, match="did not finish"):
        stream.PreparedDataset(half, tok, max_len=32)
    # another tokenizer, another seq_len: clear errors naming the keys
    other = tmp_path / "other"
    shutil.copytree(prepared_corpus, other)
    bad = dict(m, tokenizer_sha256="0" * 64)
    (other / records.MANIFEST).write_text(json.dumps(bad))
    with pytest.raises(records.PreparedDataError, match="config.data.tokenizer"):
        stream.PreparedDataset(other, tok, max_len=32)
    with pytest.raises(records.PreparedDataError, match="config.data.seq_len=64"):
        stream.PreparedDataset(prepared_corpus, tok, max_len=64)


def test_stream_rows_fixed_by_seed_and_step(prepared_corpus, tok):
    kw = dict(max_len=32, batch_size=16, seed=3, max_predictions=5)
    one = stream.PreparedDataset(prepared_corpus, tok, **kw)
    halves = [stream.PreparedDataset(prepared_corpus, tok, process_index=p, process_count=2,
                                     **kw) for p in (0, 1)]
    for k in (0, 7):
        whole = one.batch(k)
        parts = [h.batch(k) for h in halves]
        for key in whole:
            np.testing.assert_array_equal(whole[key], np.concatenate([p[key] for p in parts]))
    it = one.iterator(worker_count=2, prefetch=2)
    got = [next(it) for _ in range(3)]
    state = it.get_state()
    after = next(it)
    it.close()
    resumed = one.iterator(worker_count=0)  # another worker count: resumes by position
    resumed.set_state(state)
    nxt = next(resumed)
    resumed.close()
    for k, b in enumerate(got + [after]):
        np.testing.assert_array_equal(b["input_ids"], one.batch(k)["input_ids"])
    for key in after:
        np.testing.assert_array_equal(after[key], nxt[key])
    _check_statistics([one.batch(k) for k in range(40)], tok)


def _check_statistics(batches, tok):
    ids = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    special = tokenization.special_ids(tok)
    w = ids["masked_lm_weights"] > 0
    pos, labels = ids["masked_lm_positions"], ids["masked_lm_ids"]
    rows = np.broadcast_to(np.arange(len(pos))[:, None], pos.shape)
    assert not np.isin(labels[w], special).any()  # never a special token or padding
    assert (ids["attention_mask"][rows[w], pos[w]] == 1).all()
    assert (np.diff(np.where(w, pos, 10**6), axis=1)[w[:, 1:]] > 0).all()  # sorted, distinct
    masked = ids["input_ids"][rows[w], pos[w]]
    assert 0.75 < np.mean(masked == tok.mask_token_id) < 0.85
    assert 0.05 < np.mean(masked == labels[w]) < 0.15
    assert 0.40 < ids["next_sentence_labels"].mean() < 0.60
    n_sep = (ids["input_ids"] == tok.sep_token_id) | (ids["input_ids"] == tok.mask_token_id)
    assert (ids["input_ids"][:, 0] == tok.cls_token_id).all() and n_sep.any()
    # segment B is token type 1 and ends with [SEP]
    types = ids["token_type_ids"]
    last_b = types.shape[1] - 1 - np.argmax(types[:, ::-1], axis=1)
    has_b = types.any(1)
    assert (ids["input_ids"][has_b, last_b[has_b]] == tok.sep_token_id).all()


def test_tfds_source_work_items(monkeypatch):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    rows = [{"text": b"One here. Two there.\nThree."}, {"text": b""}] * 1500

    def fake_source(name, split=None, data_dir=None, download=True):
        assert (name, split, download) == ("wikipedia/20230601.en", "train", False)
        return rows
    monkeypatch.setattr(tfds, "data_source", fake_source)
    items = prepare.work_items("tfds:wikipedia/20230601.en:train")
    assert [it[4:] for it in items] == [(0, 2000), (2000, 3000)]
    docs = prepare.read_item(items[1])
    assert len(docs) == 500 and docs[0] == (2000, ["One here.", "Two there.", "Three."])
    assert prepare.work_index(items[1]) == 1
    with pytest.raises(ValueError, match="--source"):
        prepare.work_items("wiki")


def test_tokenizer_hash_ignores_call_settings_but_not_the_vocabulary(tmp_path, tok):
    """A call with max_length/padding rewrites the fast tokenizer's truncation and padding
    in place: the hash a manifest stores must not depend on whether the tokenizer was used
    before in that process (a prepare in a process that tokenised before would otherwise be
    refused by every fresh run)."""
    fresh = transformers.AutoTokenizer.from_pretrained(str(paths.minilm_dir()))
    before = records.tokenizer_sha256(fresh)
    fresh(["a few words"] * 2, truncation=True, max_length=7, padding="max_length")
    assert records.tokenizer_sha256(fresh) == before == records.tokenizer_sha256(tok)
    other = transformers.AutoTokenizer.from_pretrained(
        train_helpers.tiny_tokenizer(tmp_path / "tiny", 100))
    assert records.tokenizer_sha256(other) != before
