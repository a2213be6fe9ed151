"""Which rows are train, dev and held out (train/inputs.py): fixed by data.split_seed, never by
the run's seed; SQuAD samples spread over the articles; data.eval_files is the masked-LM eval
and only it."""

import numpy as np
import pytest

from prune_ofa_jax import config_base, errors
from prune_ofa_jax.train import inputs


def _config(shared_data, kind: str, **data):
    c = config_base.base()
    c.data.kind, c.data.root = kind, str(shared_data)
    c.data.update(data)
    return c


def test_squad_subsets_span_articles_and_follow_the_split_seed(shared_data):
    def ids(seed=0, split_seed=0):
        c = _config(shared_data, "squad", train_subset=400, eval_subset=300,
                    split_seed=split_seed)
        c.seed = seed
        train, dev = inputs.squad_examples(c)
        return train, dev

    train, dev = ids()
    assert len(train) == 400 and len(dev) == 300
    # The file's head is one article; a random sample covers most of dev's 48 and train's 44.
    assert len({e.title for e in dev}) >= 30 and len({e.title for e in train}) >= 30
    again_train, again_dev = ids(seed=1)  # another run seed: the same questions
    assert [e.id for e in again_dev] == [e.id for e in dev]
    assert [e.id for e in again_train] == [e.id for e in train]
    other = ids(split_seed=1)[1]  # another split seed: another sample
    assert len({e.id for e in other} & {e.id for e in dev}) < 100
    c = _config(shared_data, "squad", eval_subset=0)
    assert len(inputs.squad_examples(c)[1]) == 10_570  # 0 = the full dev set


def test_tweets_dev_split_is_one_for_every_run_seed(shared_data, monkeypatch):
    rows = {}
    for seed in (0, 1, 4):
        c = _config(shared_data, "tweets", train_subset=32)
        c.seed = seed
        rows[seed] = inputs.classification_examples(c)
    for seed in (1, 4):
        assert rows[seed][1].text_a == rows[0][1].text_a
        np.testing.assert_array_equal(rows[seed][1].labels, rows[0][1].labels)
        assert rows[seed][0].text_a == rows[0][0].text_a  # the train subset too
    assert len(rows[0][1]) == 761
    c = _config(shared_data, "tweets", split_seed=1)
    assert inputs.classification_examples(c)[1].text_a != rows[0][1].text_a
    # make_sources scores every seed on those rows (a seed-dependent split would differ here).
    evals = []
    for seed in (0, 1):
        c = _config(shared_data, "tweets", train_subset=32, eval_subset=40, seq_len=32)
        c.seed, c.init.path = seed, ""
        c.model.name = "bert-base-uncased"
        evals.append(next(inputs.make_sources(c).eval.eval_batches(40))["input_ids"])
    np.testing.assert_array_equal(evals[0], evals[1])


def _text_root(tmp_path):
    (tmp_path / "mine").mkdir()
    train = "\n\n".join(f"The river flows past the mill number {i}. Boats carry grain and "
                        f"timber down to the harbour." for i in range(300))
    held = "\n\n".join(f"Quantum lattices entangle photon {i}. Physicists measure "
                       f"decoherence in cryogenic vacuum." for i in range(60))
    (tmp_path / "mine" / "train.txt").write_text(train)
    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "test.txt").write_text(held)
    return tmp_path


def _mlm_config(root, seed=0, **data):
    c = config_base.base()
    c.seed = seed
    c.data.update(dict(kind="text", root=str(root), text_files=("mine/*.txt",), seq_len=24,
                       max_predictions=4, nsp=True), **data)
    c.train.batch_size, c.train.eval_batch_size = 8, 8
    return c


def test_mlm_eval_reads_only_the_eval_files(tmp_path):
    root = _text_root(tmp_path)
    _, tok = inputs.tokenizer(_mlm_config(root))
    vocab = lambda text: set(tok(text, add_special_tokens=False)["input_ids"])
    held_words = vocab((root / "held" / "test.txt").read_text())
    train_words = vocab((root / "mine" / "train.txt").read_text())
    src = [inputs.make_sources(_mlm_config(root, seed, eval_files=("held/*.txt",)))
           for seed in (0, 1)]
    batch = src[0].eval.batch(0)
    label_ids = set(batch["masked_lm_ids"][batch["masked_lm_weights"] > 0].tolist())
    unmasked = batch["attention_mask"].astype(bool)
    np.put_along_axis(unmasked, batch["masked_lm_positions"], False, axis=1)
    seen = set(batch["input_ids"][unmasked].tolist()) - set(tok.all_special_ids)
    assert label_ids and seen and (label_ids | seen) <= held_words
    assert not (label_ids | seen) & (train_words - held_words)
    # Every run seed scores the same masked rows; training uses the whole train corpus.
    for k in batch:
        np.testing.assert_array_equal(batch[k], src[1].eval.batch(0)[k])
    assert src[0].train.corpus.num_documents == 300
    # The eval text may not be training text too.
    c = _mlm_config(root, eval_files=("mine/train.txt",))
    with pytest.raises(errors.ConfigError, match="config.data.eval_files: .*train.txt"):
        inputs.make_sources(c)


def test_mlm_held_out_split_ignores_the_run_seed(tmp_path):
    root = _text_root(tmp_path)
    a, b = (inputs.make_sources(_mlm_config(root, seed)) for seed in (0, 3))
    np.testing.assert_array_equal(a.eval.batch(0)["input_ids"], b.eval.batch(0)["input_ids"])
    assert not np.array_equal(a.train.batch(0)["input_ids"], b.train.batch(0)["input_ids"])
