"""GLUE / tweet loaders on the real shared files, classification batching, and bad input."""

import numpy as np
import pytest

from prune_ofa_jax.data import classification, common, disaster_tweets, glue, tokenization


@pytest.fixture(scope="module")
def tok():
    return tokenization.load_tokenizer()


@pytest.fixture(scope="module")
def mrpc_dev(shared_data):
    return glue.load("mrpc", "validation", shared_data / "glue")


def test_sst2_and_mrpc_published_row_counts(shared_data, mrpc_dev):
    train = glue.load("sst2", "train", shared_data / "sst2")
    dev = glue.load("sst2", "validation", shared_data)  # the GLUE root layout also works
    assert (len(train), len(dev)) == (67_349, 872)
    assert train.text_b is None and set(np.unique(train.labels)) == {0, 1}
    assert 0.5 < train.labels.mean() < 0.6  # SST-2 train is 55.8% positive
    assert train.text_a[0].startswith("hide new secretions")
    mtrain = glue.load("mrpc", "train", shared_data / "glue" / "MRPC")
    assert (len(mtrain), len(mrpc_dev)) == (3_668, 408)
    assert int(mtrain.labels.sum()) == 2_474  # 67.4% paraphrases
    assert mtrain.text_a[0].startswith("Amrozi accused") and mtrain.text_b[0].startswith("Referring")
    test = glue.load("mrpc", "test", shared_data / "glue")
    assert len(test) == 1_725 and np.all(test.labels == -1)


def test_task_table():
    assert set(glue.TASKS) == {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte",
                               "wnli"}
    assert glue.task("STS-B").num_labels == 1 and glue.task("stsb").is_regression
    assert glue.task("mnli").num_labels == 3
    assert glue.task("mnli").eval_splits == ("validation_matched", "validation_mismatched")
    assert glue.task("cola").metrics[0] == "matthews_corr"
    with pytest.raises(ValueError, match="unknown GLUE task"):
        glue.task("squad")


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_all_layouts_from_local_files(tmp_path):
    root = tmp_path / "glue"
    (root / "CoLA").mkdir(parents=True)
    _write(root / "CoLA" / "train.tsv", ["gj04\t1\t\tOur friends won't buy this.",
                                         "gj04\t0\t*\tThey drank the pub."])
    _write(root / "CoLA" / "test.tsv", ["index\tsentence", "0\tBill whistled."])
    (root / "STS-B").mkdir()
    _write(root / "STS-B" / "dev.tsv", [
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
        "0\tmain\tf\t2012\t1\tnone\tnone\tA man plays.\tA man is playing.\t4.750"])
    (root / "MNLI").mkdir()
    header = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
              "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
    _write(root / "MNLI" / "dev_mismatched.tsv", [
        header, "0\t1\t1n\tletters\t(\t(\t(\t(\tP one.\tH one.\tneutral\tneutral",
        "1\t2\t2c\tletters\t(\t(\t(\t(\tP two.\tH two.\tcontradiction\tcontradiction"])
    (root / "QNLI").mkdir()
    _write(root / "QNLI" / "train.tsv", ["index\tquestion\tsentence\tlabel",
                                         "0\tWhat?\tThis.\tnot_entailment"])
    cola = glue.load("cola", "train", root)
    assert cola.text_a == ["Our friends won't buy this.", "They drank the pub."]
    assert cola.labels.tolist() == [1, 0]
    assert glue.load("cola", "test", root).text_a == ["Bill whistled."]
    sts = glue.load("stsb", "validation", root)
    assert sts.labels.dtype == np.float32 and sts.labels[0] == pytest.approx(4.75)
    assert sts.text_b == ["A man is playing."]
    mnli = glue.load("mnli", "validation_mismatched", root)
    assert mnli.labels.tolist() == [1, 2] and mnli.text_a == ["P one.", "P two."]
    assert glue.load("qnli", "train", root).labels.tolist() == [1]


def test_tfds_adapter(monkeypatch):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    seen = {}

    def fake(name, split=None, data_dir=None, download=True):
        seen.update(name=name, split=split, download=download)
        return [{"premise": b"P.", "hypothesis": b"H.", "label": 2, "idx": 0}]

    monkeypatch.setattr(tfds, "data_source", fake)
    ex = glue.load("mnli", "validation_matched", "/tfds", source="tfds")
    assert seen == {"name": "glue/mnli", "split": "validation_matched", "download": False}
    assert ex.text_a == ["P."] and ex.text_b == ["H."] and ex.labels.tolist() == [2]


def test_tokenisation_matches_hf_call(mrpc_dev, tok):
    ds = classification.ClassificationDataset(mrpc_dev, tok, max_len=48, batch_size=8,
                                              process_index=0, process_count=1)
    ref = tok(list(mrpc_dev.text_a), list(mrpc_dev.text_b), truncation="longest_first",
              max_length=48, padding="max_length", return_tensors="np")
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(ds.arrays[k], ref[k])


def test_classification_batches(mrpc_dev, tok):
    kw = dict(max_len=32, batch_size=16, seed=1)
    ds = classification.ClassificationDataset(mrpc_dev, tok, process_index=0, process_count=1,
                                              **kw)
    assert ds.steps_per_epoch == 408 // 16
    b = ds.batch(0)
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == {
        "input_ids": ((16, 32), np.int32), "attention_mask": ((16, 32), np.int32),
        "token_type_ids": ((16, 32), np.int32), "labels": ((16,), np.int32)}
    # an epoch visits distinct rows; the next epoch is a different order; a fresh object agrees
    epoch0 = np.concatenate([ds.batch(s)["input_ids"] for s in range(ds.steps_per_epoch)])
    assert len({r.tobytes() for r in epoch0}) > 0.95 * len(epoch0)
    again = classification.ClassificationDataset(mrpc_dev, tok, process_index=0,
                                                 process_count=1, **kw)
    np.testing.assert_array_equal(again.batch(30)["input_ids"], ds.batch(30)["input_ids"])
    assert not np.array_equal(ds.batch(0)["input_ids"], ds.batch(ds.steps_per_epoch)["input_ids"])
    shards = [classification.ClassificationDataset(mrpc_dev, tok, process_index=p,
                                                   process_count=2, **kw).batch(7)
              for p in range(2)]
    for k in b:
        np.testing.assert_array_equal(np.concatenate([s[k] for s in shards]), ds.batch(7)[k])


def test_eval_batches_cover_every_row_once(mrpc_dev, tok):
    ds = classification.ClassificationDataset(mrpc_dev, tok, max_len=32, batch_size=8,
                                              process_index=0, process_count=1)
    batches = list(ds.eval_batches(100))
    assert len(batches) == ds.num_eval_batches(100) == 5
    w = np.concatenate([b["weights"] for b in batches])
    assert w.dtype == np.float32 and w.sum() == 408 and np.all(w[408:] == 0)
    labels = np.concatenate([b["labels"] for b in batches])[w > 0]
    np.testing.assert_array_equal(labels, mrpc_dev.labels)
    # two processes: each sees half of every global batch; together every row once
    halves = [list(classification.ClassificationDataset(
        mrpc_dev, tok, max_len=32, batch_size=8, process_index=p, process_count=2
    ).eval_batches(100)) for p in range(2)]
    merged = np.concatenate([np.concatenate([h[i]["input_ids"] for h in halves])
                             for i in range(5)])
    np.testing.assert_array_equal(merged, np.concatenate([b["input_ids"] for b in batches]))


def test_regression_labels_are_float(tok):
    ex = classification.Examples(["a", "b", "c"], ["x", "y", "z"],
                                 np.array([0.5, 1.0, 4.5], np.float32))
    ds = classification.ClassificationDataset(ex, tok, max_len=8, batch_size=2,
                                              process_index=0, process_count=1)
    assert ds.batch(0)["labels"].dtype == np.float32
    b = next(ds.eval_batches(4))
    assert b["labels"].tolist() == [0.5, 1.0, 4.5, 0.5] and b["weights"].tolist() == [1, 1, 1, 0]


def test_tweets(shared_data):
    ex = disaster_tweets.load(shared_data / "disaster_tweets" / "train.csv")
    assert len(ex) == 7_613 and int(ex.labels.sum()) == 3_271
    test = disaster_tweets.load(shared_data / "disaster_tweets" / "test.csv", require_labels=False)
    assert len(test) == 3_263 and np.all(test.labels == -1)
    train, dev = disaster_tweets.train_dev_split(ex, 0.1, seed=0)
    assert len(train) + len(dev) == len(ex) and abs(len(dev) - 761) <= 1
    assert abs(dev.labels.mean() - ex.labels.mean()) < 0.002  # stratified
    assert sorted(train.text_a + dev.text_a) == sorted(ex.text_a)  # a partition of the rows
    again = disaster_tweets.train_dev_split(ex, 0.1, seed=0)[1]
    assert again.text_a == dev.text_a
    assert disaster_tweets.train_dev_split(ex, 0.1, seed=1)[1].text_a != dev.text_a


@pytest.mark.parametrize("content, match", [
    (b"", r"sst2/train.tsv: empty"),
    (b"sentence\tlabel\ngood film\t1\nbad\tfilm\t0\n", r"sst2/train.tsv:3: 3 tab-separated"),
    (b"text\tlabel\ngood film\t1\n", r"sst2/train.tsv:1: missing column.*sentence"),
    (b"sentence\tscore\ngood film\t1\n", r"sst2/train.tsv:1: missing column.*label"),
    (b"sentence\tlabel\ngood film\t1\nna\xefve\t0\n", r"sst2/train.tsv:3: not valid utf-8"),
    (b"sentence\tlabel\ngood film\t1\nbad film\tpositive\n", r"sst2/train.tsv:3: label"),
])
def test_bad_glue_files(tmp_path, content, match):
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train.tsv").write_bytes(content)
    with pytest.raises(common.DataError, match=match):
        glue.load("sst2", "train", tmp_path / "sst2")


def test_bad_stsb_score(tmp_path):
    _write(tmp_path / "dev.tsv", ["sentence1\tsentence2\tscore", "a\tb\t4.0", "a\tb\thigh"])
    with pytest.raises(common.DataError, match=r"dev.tsv:3: score 'high'"):
        glue.load("stsb", "validation", tmp_path)


@pytest.mark.parametrize("content, match", [
    (b"", r"t.csv: empty"),
    (b"id,keyword,location,text\n1,,,hello\n", r"t.csv:1: missing column.*target"),
    (b"id,keyword,location,text,target\n1,,,hello,1\n2,,,bye\n", r"t.csv:3: 4 fields"),
    (b"id,keyword,location,text,target\n1,,,\"multi\nline\",1\n2,,,x,yes\n",
     r"t.csv:4: target 'yes'"),
    (b"id,keyword,location,text,target\n1,,,caf\xe9,1\n", r"t.csv:2: not valid utf-8"),
])
def test_bad_tweet_files(tmp_path, content, match):
    (tmp_path / "t.csv").write_bytes(content)
    with pytest.raises(common.DataError, match=match):
        disaster_tweets.load(tmp_path / "t.csv")
