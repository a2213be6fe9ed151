"""Pre-training data: corpus reading, MLM masking statistics, NSP balance, determinism, resume
and process sharding (real WikiText-2 validation text, the real uncased WordPiece vocab)."""

import numpy as np
import pytest

from prune_ofa_jax.data import common, instances, pretraining, text, tokenization

L = 64


@pytest.fixture(scope="module")
def tok():
    return tokenization.load_tokenizer()


@pytest.fixture(scope="module")
def corpus(shared_data, tok):
    src = text.TextFiles([str(shared_data / "wikitext2" / "valid.txt")], "wikitext")
    return pretraining.TokenizedCorpus.from_sources([src], tok)


def make(corpus, tok, **kw):
    args = dict(max_len=L, batch_size=64, seed=3, process_index=0, process_count=1)
    args.update(kw)
    return pretraining.PretrainingDataset(corpus, tok, **args)


def test_corpus_documents(corpus):
    assert corpus.num_documents == 60  # WikiText-2 valid has 60 articles
    assert corpus.num_tokens > 200_000
    assert np.all(np.diff(corpus.sent_starts) > 0)  # no empty sentences kept


def test_batch_layout(corpus, tok):
    ds = make(corpus, tok)
    b = ds.batch(0)
    p = int(round(0.15 * L))
    assert ds.max_predictions == p
    shapes = {k: (v.shape, v.dtype) for k, v in b.items()}
    assert shapes == {
        "input_ids": ((64, L), np.int32), "attention_mask": ((64, L), np.int32),
        "token_type_ids": ((64, L), np.int32), "masked_lm_positions": ((64, p), np.int32),
        "masked_lm_ids": ((64, p), np.int32), "masked_lm_weights": ((64, p), np.float32),
        "next_sentence_labels": ((64,), np.int32)}
    ids, att = b["input_ids"], b["attention_mask"]
    assert np.all(ids[:, 0] == tok.cls_token_id)
    assert np.all((ids == tok.sep_token_id).sum(1) == 2)
    assert np.all(ids[att == 0] == tok.pad_token_id)
    # attention is a prefix; token types are 0...0 1...1 0(pad) ...
    assert np.all(np.diff(att, axis=1) <= 0)
    assert np.all(b["token_type_ids"][att == 0] == 0)
    # unused prediction slots are zeroed
    unused = b["masked_lm_weights"] == 0
    assert np.all(b["masked_lm_positions"][unused] == 0) and np.all(b["masked_lm_ids"][unused] == 0)


def _collect(ds, steps):
    out = [ds.batch(s) for s in steps]
    return {k: np.concatenate([b[k] for b in out]) for k in out[0]}


def test_masking_statistics(corpus, tok):
    ds = make(corpus, tok)
    b = _collect(ds, range(20))
    w = b["masked_lm_weights"] > 0
    rows = np.nonzero(w)[0]
    pos = b["masked_lm_positions"][w]
    orig = b["masked_lm_ids"][w]
    now = b["input_ids"][rows, pos]
    n = w.sum()
    assert n >= 10_000
    is_mask = now == tok.mask_token_id
    kept = now == orig
    rand = ~is_mask & ~kept
    assert abs(is_mask.mean() - 0.8) < 0.02
    assert abs(rand.mean() - 0.1) < 0.015
    assert abs(kept.mean() - 0.1) < 0.015
    # ~15% of the maskable (non-special, non-pad) tokens are predicted
    n_real = b["attention_mask"].sum() - 3 * len(b["attention_mask"])  # minus [CLS] [SEP] [SEP]
    assert abs(n / n_real - 0.15) < 0.01
    # predicted positions hold no special token originally and are never padding
    assert not np.isin(orig, tokenization.special_ids(tok)).any()
    assert np.all(b["attention_mask"][rows, pos] == 1)
    # random replacements are never special tokens
    assert not np.isin(now[rand], tokenization.special_ids(tok)).any()
    # positions outside the predictions are untouched: no [MASK] anywhere else
    mask_count = (b["input_ids"] == tok.mask_token_id).sum()
    assert mask_count == is_mask.sum()


def test_special_and_padding_never_masked(corpus, tok):
    b = make(corpus, tok, max_len=128, short_seq_prob=0.9, batch_size=32).batch(1)
    w = b["masked_lm_weights"] > 0
    rows = np.nonzero(w)[0]
    pos = b["masked_lm_positions"][w]
    assert np.all(pos > 0)  # never [CLS]
    assert np.all(b["attention_mask"][rows, pos] == 1)  # never padding
    orig = b["masked_lm_ids"][w]
    assert not np.isin(orig, [tok.cls_token_id, tok.sep_token_id, tok.pad_token_id]).any()
    assert (b["attention_mask"] == 0).any()  # short sequences did produce padding


def test_same_seed_same_batches_and_resume(corpus, tok):
    ds = make(corpus, tok)
    spe = ds.steps_per_epoch
    steps = [0, 1, spe + 2, 3 * spe + 1]  # crosses epochs
    stream = [ds.batch(s) for s in range(3 * spe + 2)]
    resumed = make(corpus, tok)  # a fresh object, same seed: "resume" at arbitrary steps
    for s in steps:
        got = resumed.batch(s)
        for k in got:
            np.testing.assert_array_equal(got[k], stream[s][k])
    other = make(corpus, tok, seed=4).batch(0)
    assert not np.array_equal(other["input_ids"], stream[0]["input_ids"])
    # epochs differ (fresh instances and masking), steps differ
    assert not np.array_equal(stream[0]["input_ids"], stream[1]["input_ids"])
    assert not np.array_equal(stream[0]["input_ids"], stream[spe]["input_ids"])


def test_process_shards_form_the_global_batch(corpus, tok):
    full = make(corpus, tok, batch_size=32).batch(5)
    shards = [make(corpus, tok, batch_size=32, process_index=p, process_count=4).batch(5)
              for p in range(4)]
    assert shards[0]["input_ids"].shape == (8, L)
    assert not np.array_equal(shards[0]["input_ids"], shards[1]["input_ids"])
    for k in full:
        np.testing.assert_array_equal(np.concatenate([s[k] for s in shards]), full[k])


def test_nsp_balance_and_pairs(corpus, tok):
    ds = make(corpus, tok, max_len=128)
    b = _collect(ds, range(8))
    assert abs(b["next_sentence_labels"].mean() - 0.5) < 0.06
    plan, _ = ds._plan(0)  # pylint: disable=protected-access
    assert abs(plan[:, instances.IS_RANDOM].mean() - 0.5) < 0.03
    actual = plan[plan[:, instances.IS_RANDOM] == 0]
    assert np.all(actual[:, instances.A_HI] <= actual[:, instances.B_LO])  # B follows A
    lengths = plan[:, 1] - plan[:, 0] + plan[:, 3] - plan[:, 2]
    assert lengths.max() <= 128 - 3 and lengths.min() >= 2
    # short targets with probability 0.1 add a tail of short instances (~5% under 100 tokens)
    rng = np.random.default_rng(0)
    no_short = instances.nsp_plan(corpus.sent_starts, corpus.doc_starts, 128, 0.0, rng)
    no_short_len = no_short[:, 1] - no_short[:, 0] + no_short[:, 3] - no_short[:, 2]
    assert 0.025 < np.mean(lengths < 100) - np.mean(no_short_len < 100) < 0.09


def test_mlm_only_single_segments(corpus, tok):
    b = make(corpus, tok, nsp=False).batch(0)
    assert np.all(b["next_sentence_labels"] == 0)
    assert np.all(b["token_type_ids"] == 0)
    assert np.all((b["input_ids"] == tok.sep_token_id).sum(1) == 1)


def test_whole_word_masking(corpus, tok):
    cont = tokenization.continuation_table(tok)
    b = make(corpus, tok, whole_word_mask=True, batch_size=32).batch(0)
    checked = 0
    for r in range(32):
        w = b["masked_lm_weights"][r] > 0
        chosen = set(b["masked_lm_positions"][r][w].tolist())
        orig = b["input_ids"][r].copy()
        orig[b["masked_lm_positions"][r][w]] = b["masked_lm_ids"][r][w]
        n = b["attention_mask"][r].sum()
        for p in range(1, n - 1):
            # a continuation piece is masked iff the piece before it is
            if cont[orig[p]] and orig[p - 1] not in (tok.cls_token_id, tok.sep_token_id):
                assert (p in chosen) == (p - 1 in chosen)
                checked += 1
    assert checked > 50


def test_masking_counts_are_exact():
    cfg_ids = np.arange(10, 100)
    from prune_ofa_jax.data import masking  # pylint: disable=import-outside-toplevel
    cfg = masking.MaskingConfig(mask_id=3, random_ids=cfg_ids)
    ids = np.array([1, *range(20, 60), 2, 0, 0], np.int32)
    maskable = np.zeros(len(ids), bool)
    maskable[1:41] = True
    out, pos, lab, w = masking.mask_row(ids, maskable, 10, cfg, np.random.default_rng(0))
    assert w.sum() == 6  # round(0.15 * 40)
    assert np.all(np.diff(pos[:6]) > 0) and np.all(lab[:6] == ids[pos[:6]])
    assert np.array_equal(out[~np.isin(np.arange(len(ids)), pos[:6])],
                          ids[~np.isin(np.arange(len(ids)), pos[:6])])


def test_truncate_pair_matches_bert_loop():
    rng = np.random.default_rng(0)
    for _ in range(300):
        la, lb, m = (int(x) for x in rng.integers(1, 80, 3))
        a, b = la, lb
        while a + b > m:  # google-research/bert truncate_seq_pair, lengths only
            if a > b:
                a -= 1
            else:
                b -= 1
        assert instances.truncate_pair(la, lb, m) == (la - a, lb - b)


def test_sentence_splitting_rules():
    got = text.split_sentences('Mr. Smith met Dr. Jones at 5 p.m. today. "Fine," he said! '
                               'H. americanus lives in the U.S. Atlantic. Is it? Yes.')
    assert got == ['Mr. Smith met Dr. Jones at 5 p.m. today.', '"Fine," he said!',
                   'H. americanus lives in the U.S. Atlantic.', 'Is it?', 'Yes.']


def test_doc_formats(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("First doc line one. Second sentence\nwraps here.\n\nSecond doc.\n")
    assert text.read_documents([text.TextFiles([str(f)], "blank_line")]) == [
        ["First doc line one.", "Second sentence wraps here."], ["Second doc."]]
    assert text.read_documents([text.TextFiles([str(f)], "bert")]) == [
        ["First doc line one. Second sentence", "wraps here."], ["Second doc."]]
    assert len(text.read_documents([text.TextFiles([str(f)], "line")])) == 3
    assert len(text.read_documents([text.TextFiles([str(f)], "file")])) == 1
    w = tmp_path / "w.txt"
    w.write_text(" = A = \n \n Alpha one . Alpha two .\n = = Sec = = \n Alpha 1 @.@ 5 .\n"
                 " = B = \n Beta .\n")
    assert text.read_documents([text.TextFiles([str(w)], "wikitext")]) == [
        ["Alpha one .", "Alpha two .", "Alpha 1.5 ."], ["Beta ."]]


def test_bad_text_inputs(tmp_path, tok):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(common.DataError, match="empty.txt"):
        text.read_documents([text.TextFiles([str(empty)])])
    bad = tmp_path / "latin.txt"
    bad.write_bytes(b"fine line\nC\xe6sar here\n")
    with pytest.raises(common.DataError, match=r"latin.txt:2"):
        text.read_documents([text.TextFiles([str(bad)])])
    docs = text.read_documents([text.TextFiles([str(bad)], encoding="latin-1")])
    assert docs == [["fine line C\u00e6sar here"]]
    with pytest.raises(common.DataError, match="missing"):
        text.read_documents([text.TextFiles([str(tmp_path / "missing.txt")])])
    tiny = pretraining.TokenizedCorpus.from_documents([["one short sentence."]], tok)
    with pytest.raises(ValueError, match="global batch"):
        pretraining.PretrainingDataset(tiny, tok, batch_size=8, process_index=0, process_count=1)


def test_tfds_documents_adapter(monkeypatch):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    records = [{"text": b"Para one. Para two.\nNext para.", "title": b"t"}, {"text": b""}]
    calls = {}

    def fake_source(name, split=None, data_dir=None, download=True):
        calls.update(name=name, split=split, data_dir=data_dir, download=download)
        return records

    monkeypatch.setattr(tfds, "data_source", fake_source)
    docs = text.tfds_documents("wikipedia/20230601.en", "train", "/d")
    assert docs == [["Para one.", "Para two.", "Next para."]]
    assert calls == {"name": "wikipedia/20230601.en", "split": "train", "data_dir": "/d",
                     "download": False}


def test_process_defaults_and_batch_divisibility(corpus, tok):
    assert common.process_info(None, None) == (0, 1)  # jax.process_index()/count() here
    ds = pretraining.PretrainingDataset(corpus, tok, max_len=L, batch_size=8)
    assert ds.batch(0)["input_ids"].shape == (8, L)
    with pytest.raises(ValueError, match="multiple of the process count"):
        make(corpus, tok, batch_size=10, process_index=0, process_count=4)
    with pytest.raises(ValueError, match="process_index"):
        make(corpus, tok, process_index=4, process_count=4)


def test_heldout_document_split(corpus):
    train, held = corpus.split(0.1, seed=0)
    assert held.num_documents == 6 and train.num_documents == 54
    assert train.num_tokens + held.num_tokens == corpus.num_tokens
    docs = lambda c: {c.tokens[c.sent_starts[c.doc_starts[d]]:  # noqa: E731
                                c.sent_starts[c.doc_starts[d + 1]]].tobytes()
                      for d in range(c.num_documents)}
    assert not docs(train) & docs(held) and docs(train) | docs(held) == docs(corpus)
