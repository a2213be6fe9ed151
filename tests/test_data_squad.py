"""SQuAD v1.1: featurisation (= the HF overflow windows), gold spans round-tripping through
features -> logits -> post-processing -> official EM/F1 on the full dev set, and bad input."""

import json

import numpy as np
import pytest

from prune_ofa_jax.data import common, squad, squad_features, tokenization
from prune_ofa_jax.eval import squad_metrics


@pytest.fixture(scope="module")
def tok():
    return tokenization.load_tokenizer()


@pytest.fixture(scope="module")
def dev(shared_data):
    return squad.load_json(shared_data / "squad_v1.1" / "dev-v1.1.json")


@pytest.fixture(scope="module")
def dev_features(dev, tok):
    """The full dev set at 384/128 (~3-5 s on 2 cores), shared by the tests of this module."""
    return squad_features.EvalFeatures(dev, tok, process_index=0, process_count=1)


def test_dev_file(dev, shared_data):
    assert len(dev) == 10_570
    assert len({ex.id for ex in dev}) == 10_570
    assert all(s >= 0 for ex in dev for s in ex.answer_starts)  # every gold span aligns
    train = squad.load_json(shared_data / "squad_v1.1" / "train_subset_11877q_44articles.json")
    assert len(train) == 11_877 and not {e.context for e in train} & {e.context for e in dev}


def test_windows_equal_hf_overflow(dev, tok):
    sub = dev[:150]
    feats = squad_features.featurize(sub, tok, max_len=384, doc_stride=128)
    enc = tok([e.question.lstrip() for e in sub], [e.context for e in sub],
              truncation="only_second", max_length=384, stride=128,
              return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(feats[k], np.array(enc[k]))
    np.testing.assert_array_equal(feats["example_index"], enc["overflow_to_sample_mapping"])
    ctx = np.array([[s == 1 for s in enc.sequence_ids(i)] for i in range(len(enc["input_ids"]))])
    np.testing.assert_array_equal(feats["offsets"][ctx], np.array(enc["offset_mapping"])[ctx])
    assert np.all(feats["offsets"][~ctx] == -1)


def test_long_contexts_get_several_windows(dev_features):
    f = dev_features.features
    counts = np.bincount(f["example_index"])
    assert counts.min() == 1 and counts.max() >= 2
    assert dev_features.num_features == len(f["input_ids"]) > 10_570
    # consecutive windows of one example overlap by doc_stride context tokens
    i = int(np.argmax(counts >= 2))
    first, second = np.flatnonzero(f["example_index"] == i)[:2]
    a = f["offsets"][first][f["offsets"][first, :, 0] >= 0]
    b = f["offsets"][second][f["offsets"][second, :, 0] >= 0]
    np.testing.assert_array_equal(a[-128:], b[:128])


def _gold_logits(examples, feats):
    """Logits peaked at a gold answer span that tokens can represent exactly (a few gold texts
    start or end inside a word, e.g. 'gold' in 'golden'; another gold answer then serves)."""
    offsets, ex_idx = feats["offsets"], feats["example_index"]
    n_f, length = offsets.shape[:2]
    start_logits = np.zeros((n_f, length), np.float32)
    end_logits = np.zeros((n_f, length), np.float32)
    done = np.zeros(len(examples), bool)
    for k in range(max(len(e.answer_texts) for e in examples)):
        text = [e.answer_texts[min(k, len(e.answer_texts) - 1)] for e in examples]
        start = np.array([e.answer_starts[min(k, len(e.answer_starts) - 1)] for e in examples])
        end = start + np.array([len(t) for t in text])
        s, e = squad_features.answer_positions(offsets, start[ex_idx], end[ex_idx])
        for f in np.flatnonzero((s > 0) & ~done[ex_idx]):
            i = ex_idx[f]
            ctx = examples[i].context
            if not done[i] and ctx[offsets[f, s[f], 0]:offsets[f, e[f], 1]] == text[i]:
                start_logits[f, s[f]] = end_logits[f, e[f]] = 10.0
                done[i] = True
    return start_logits, end_logits, done


def test_gold_spans_round_trip_to_100(dev, dev_features):
    start_logits, end_logits, done = _gold_logits(dev, dev_features.features)
    assert done.mean() > 0.999
    gold = squad.gold_answers(dev)
    pred = dev_features.postprocess(start_logits, end_logits, max_answer_length=1000)
    scores = squad_metrics.evaluate(gold, pred)
    assert scores["exact_match"] > 99.98 and scores["f1"] > 99.98  # 100.0 after rounding
    # the default 30-token answer limit only drops the few very long gold answers
    pred30 = dev_features.postprocess(start_logits, end_logits)
    assert squad_metrics.evaluate(gold, pred30)["exact_match"] > 99.8
    # wrong logits give a much lower score (the round trip is not vacuous)
    shuffled = np.roll(start_logits, 7, axis=1), np.roll(end_logits, 7, axis=1)
    assert squad_metrics.evaluate(gold, dev_features.postprocess(*shuffled))["exact_match"] < 10


def test_training_features_point_at_the_answer(shared_data, tok):
    train = squad.load_json(shared_data / "squad_v1.1" / "train_subset_11877q_44articles.json")
    sub = train[:300]
    feats = squad_features.featurize(sub, tok)
    tr = squad_features.train_features(sub, tok)
    assert len(tr["start_positions"]) == len(feats["example_index"])
    has = tr["start_positions"] > 0
    assert has.mean() > 0.9
    assert np.all(tr["end_positions"][~has] == 0)
    for f in np.flatnonzero(has):
        ex = sub[feats["example_index"][f]]
        span = ex.context[feats["offsets"][f, tr["start_positions"][f], 0]:
                          feats["offsets"][f, tr["end_positions"][f], 1]]
        assert squad_metrics.normalize_answer(ex.answer_texts[0]) in \
            squad_metrics.normalize_answer(span)
        assert len(span) <= len(ex.answer_texts[0]) + 25  # the whole-token cover, no more
    ds = squad_features.train_dataset(sub, tok, batch_size=8, seed=0, process_index=0,
                                      process_count=1)
    b = ds.batch(3)
    assert {k: v.shape for k, v in b.items()} == {
        "input_ids": (8, 384), "attention_mask": (8, 384), "token_type_ids": (8, 384),
        "start_positions": (8,), "end_positions": (8,)}
    assert all(v.dtype == np.int32 for v in b.values())


def test_short_max_len_defaults(dev, tok):
    feats = squad_features.featurize(dev[:20], tok, max_len=64)
    assert feats["input_ids"].shape[1] == 64
    assert squad_features.default_lengths(384) == (128, 64)


def _squad_json(question_ctx_answer):
    qas = [{"id": f"q{i}", "question": q, "answers": [{"text": t, "answer_start": s}]}
           for i, (q, t, s) in enumerate(question_ctx_answer[1])]
    return {"version": "1.1", "data": [{"title": "T", "paragraphs": [
        {"context": question_ctx_answer[0], "qas": qas}]}]}


def test_misaligned_answers_skip_or_error(tmp_path, tok, caplog):
    ctx = "The cat sat on the mat."
    data = _squad_json((ctx, [("Who sat?", "cat", 4), ("Where?", "mat", 3)]))
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data, indent=1))
    with caplog.at_level("WARNING"):
        ex = squad.load_json(path)
    assert [e.answer_starts for e in ex] == [(4,), (-1,)]
    assert "1 answer(s) not found" in caplog.text
    with caplog.at_level("WARNING"):
        tr = squad_features.train_features(ex, tok, max_len=32)
    assert "1 of 2 questions have no aligned answer" in caplog.text
    assert len(tr["start_positions"]) == 1
    line = next(i for i, ln in enumerate(path.read_text().split("\n"), 1) if '"q1"' in ln)
    with pytest.raises(common.DataError, match=rf"s.json:{line}: question q1: answer 'mat'"):
        squad.load_json(path, on_misaligned="error")


@pytest.mark.parametrize("content, match", [
    (b"", r"bad.json: empty"),
    (b'{"data": [\n{"paragraphs": [}\n', r"bad.json:2: invalid JSON"),
    (b'{"version": "1.1"}', r"bad.json: the top level needs a list field 'data'"),
    (b'{"data": [{"paragraphs": [{"qas": []}]}]}', r"needs a str field 'context'"),
    (b'{"data": [{"paragraphs": [{"context": "c",\n "qas": [{"id": "x1",\n'
     b' "answers": []}]}]}]}', r"bad.json:2: question x1 needs a str field 'question'"),
    (b'{"data": [{"paragraphs": [{"context": "caf\xe9", "qas": []}]}]}',
     r"bad.json:1: not valid utf-8"),
])
def test_bad_squad_files(tmp_path, content, match):
    (tmp_path / "bad.json").write_bytes(content)
    with pytest.raises(common.DataError, match=match):
        squad.load_json(tmp_path / "bad.json")


def test_tfds_adapter(monkeypatch):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    rec = {"id": b"a1", "title": b"T", "context": b"The cat sat.", "question": b"Who?",
           "answers": {"text": [b"cat", b"dog"], "answer_start": np.array([4, 0])}}
    monkeypatch.setattr(tfds, "data_source", lambda name, split=None, data_dir=None,
                        download=True: [rec])
    (ex,) = squad.load_tfds("validation")
    assert ex.id == "a1" and ex.answer_texts == ("cat", "dog") and ex.answer_starts == (4, -1)
