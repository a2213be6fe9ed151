"""config.data -> the run's data: a train source with random access `.batch(step)`, an eval
source, and the task's metric function. Reads local files under the data root (the shared
copies) or TFDS (`data.source="tfds"`, for users with network)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
from typing import Any, Callable, Optional

import numpy as np

from prune_ofa_jax import errors, paths
from prune_ofa_jax.convert import loader
from prune_ofa_jax.data import (classification, common, disaster_tweets, glue, pretraining, squad,
                                squad_features, stream, text, tokenization)
from prune_ofa_jax.distill import augment_batches
from prune_ofa_jax.eval import glue_metrics, squad_metrics
from prune_ofa_jax.models import config as model_config_lib

log = logging.getLogger(__name__)

SQUAD_TRAIN = "squad_v1.1/train_subset_11877q_44articles.json"
SQUAD_DEV = "squad_v1.1/dev-v1.1.json"
TWEETS = "disaster_tweets/train.csv"


@dataclasses.dataclass
class Sources:
    train: Any                                  # .batch(step) -> host rows of the global batch
    eval: Any                                   # MLM: .batch(i); others: .eval_batches(bs)
    metrics: Optional[Callable[[dict], dict]]   # eval outputs (all rows, in order) -> metrics


def _root(c) -> pathlib.Path:
    return pathlib.Path(c.data.root) if c.data.root else paths.data_root()


def model_config(c):
    """The run's model config as build makes it (init.path's, else model.name's with the
    overrides): its vocabulary size and pad id decide the tokenizer."""
    if c.init.path:
        return loader.model_config(c.init.path)
    return model_config_lib.by_name(c.model.name, **dict(c.model.overrides))


def _model_name(c) -> str:
    return (f"the model of config.init.path={c.init.path}" if c.init.path
            else f"config.model.name={c.model.name}")


def tokenizer_path(c) -> str:
    """The run's tokenizer dir (data/tokenization.py's rule): data.tokenizer, else init.path's
    own tokenizer files, else MiniLM's for a model with its vocabulary, else a ConfigError
    naming config.data.tokenizer and the model."""
    return tokenization.resolve(model_config(c), explicit=c.data.tokenizer,
                                model_dir=c.init.path or None, model=_model_name(c))


def tokenizer(c):
    """(tokenizer dir, the loaded tokenizer), checked against the model (one ConfigError
    naming both when its vocabulary size or pad id disagree)."""
    path = tokenizer_path(c)
    tok = tokenization.load_tokenizer(path)
    own = not c.data.tokenizer and bool(c.init.path) and path == str(c.init.path)
    tokenization.check_fits(tok, path, model_config(c), own=own, model=_model_name(c))
    return path, tok


@functools.lru_cache(maxsize=4)
def _corpus(files: tuple, root: str, tok_path: str, source: str):
    tok = tokenization.load_tokenizer(tok_path)
    if source == "tfds":
        return pretraining.TokenizedCorpus.from_tfds(files[0], tok)
    return pretraining.TokenizedCorpus.from_sources(text.sources_from_globs(files, root), tok)


def subset_indices(total: int, n: int, split_seed: int):
    """The sorted indices of a seeded random sample of n of `total` rows (None: n is 0 or
    covers them all). Random over the whole file, so a SQuAD sample spans its articles."""
    if not n or n >= total:
        return None
    return np.sort(np.random.default_rng(split_seed).permutation(total)[:n])


def _subset(examples, n: int, split_seed: int):
    idx = subset_indices(len(examples), n, split_seed)
    if idx is None:
        return examples
    if isinstance(examples, list):  # SQuAD examples
        return [examples[i] for i in idx]
    return examples.subset(idx)


def _prepared(c, tok, tok_path: str) -> Sources:
    """Train: the Grain stream over the train shards; eval: batches of the held-out shards."""
    kw = dict(max_len=c.data.seq_len, max_predictions=c.data.max_predictions, nsp=c.data.nsp,
              tokenizer_path=tok_path)
    return Sources(
        train=stream.PreparedDataset(c.data.prepared, tok, batch_size=c.train.batch_size,
                                     seed=c.seed, **kw),
        eval=(_mlm_eval(c, tok, tok_path) if c.data.eval_files else
              stream.PreparedDataset(c.data.prepared, tok, batch_size=c.train.eval_batch_size,
                                     seed=c.data.split_seed + 1, split="eval", **kw)),
        metrics=None)


def _mlm_kw(c) -> dict:
    return dict(max_len=c.data.seq_len, max_predictions=c.data.max_predictions, nsp=c.data.nsp,
                whole_word_mask=c.data.whole_word_mask)


def _files(globs, root) -> set:
    return {str(pathlib.Path(f).resolve()) for s in text.sources_from_globs(globs, root)
            for f in s.paths}


def check_eval_files(c) -> None:
    """data.eval_files must be text the run does not train on (a ConfigError otherwise)."""
    if c.data.source == "tfds" or c.data.prepared:
        return  # the train text is not local files: nothing to compare
    both = _files(c.data.eval_files, _root(c)) & _files(c.data.text_files, _root(c))
    if both:
        raise errors.ConfigError(
            f"config.data.eval_files: {sorted(both)[0]} is also in config.data.text_files, so "
            "the held-out masked-LM eval would score text the run trains on; drop it from one")


def _mlm_eval(c, tok, tok_path: str):
    """The masked-LM eval over data.eval_files (all of their documents). Its instances and
    masking are seeded by data.split_seed: every run scores on the same masked rows."""
    check_eval_files(c)
    corpus = _corpus(tuple(c.data.eval_files), str(_root(c)), tok_path, "local")
    return pretraining.PretrainingDataset(corpus, tok, batch_size=c.train.eval_batch_size,
                                          seed=c.data.split_seed + 1, **_mlm_kw(c))


def _text(c, tok, tok_path: str) -> Sources:
    """Train on data.text_files; evaluate on data.eval_files when set (the whole corpus
    trains), else on a held-out 5 % of its documents (chosen by data.split_seed)."""
    if c.data.prepared:
        return _prepared(c, tok, tok_path)
    corpus = _corpus(tuple(c.data.text_files), str(_root(c)), tok_path, c.data.source)
    if c.data.eval_files:
        train, held = corpus, _mlm_eval(c, tok, tok_path)
    else:
        train, held_corpus = corpus.split(0.05, c.data.split_seed)
        held = pretraining.PretrainingDataset(held_corpus, tok,
                                              batch_size=c.train.eval_batch_size,
                                              seed=c.data.split_seed + 1, **_mlm_kw(c))
    return Sources(
        train=pretraining.PretrainingDataset(train, tok, batch_size=c.train.batch_size,
                                             seed=c.seed, **_mlm_kw(c)),
        eval=held, metrics=None)


def _glue_examples(c, split: str):
    if c.data.source == "tfds":
        return glue.load(c.data.glue_task, split, source="tfds")
    spec, root = glue.task(c.data.glue_task), _root(c)
    for data_dir in (root / "glue", root):  # GLUE layout, or a task dir at the root (sst2/)
        try:
            glue.task_file(spec, split, data_dir)
        except common.DataError:
            continue
        return glue.load(spec.name, split, data_dir=data_dir)
    return glue.load(spec.name, split, data_dir=root)  # raises the error naming the paths


def tweets_split(root, split_seed: int = 0):
    """(train, dev) of the tweets file under data root `root`: 90/10, stratified, fixed by
    `split_seed` (config.data.split_seed), the same for every run seed and every teacher."""
    return disaster_tweets.train_dev_split(
        disaster_tweets.load(pathlib.Path(root) / TWEETS), 0.1, split_seed)


def classification_examples(c):
    """(train, dev) Examples of a glue/tweets run, after the split and the subsets: the rows
    the run trains on and scores (e.g. for a study's majority-class baseline)."""
    if c.data.kind == "tweets":
        train_ex, dev_ex = tweets_split(_root(c), c.data.split_seed)
    else:
        train_ex = _glue_examples(c, "train")
        dev_ex = _glue_examples(c, glue.task(c.data.glue_task).eval_splits[0])
    return (_subset(train_ex, c.data.train_subset, c.data.split_seed),
            _subset(dev_ex, c.data.eval_subset, c.data.split_seed))


def _classification(c, tok) -> Sources:
    train_ex, dev_ex = classification_examples(c)
    if c.data.kind == "tweets":
        def metrics(out):
            pred = out["logits"].argmax(-1)
            return {"accuracy": glue_metrics.accuracy(pred, dev_ex.labels),
                    "f1": glue_metrics.f1_binary(pred, dev_ex.labels)}
    else:
        spec = glue.task(c.data.glue_task)

        def metrics(out):
            return glue_metrics.compute(spec.name, out["logits"], dev_ex.labels)
    kw = dict(max_len=c.data.seq_len, seed=c.seed)
    train = classification.ClassificationDataset(train_ex, tok, batch_size=c.train.batch_size,
                                                 **kw)
    return Sources(
        train=augment_batches.wrap(c, train, tok),  # config.augment: + augmented rows
        eval=classification.ClassificationDataset(dev_ex, tok,
                                                  batch_size=c.train.eval_batch_size, **kw),
        metrics=metrics)


def squad_examples(c):
    """(train, dev) SquadExample lists of a squad run: seeded samples over the whole file
    (questions of every article, not the file's head), fixed by data.split_seed."""
    if c.data.source == "tfds":
        train_ex, dev_ex = squad.load_tfds("train"), squad.load_tfds("validation")
    else:
        train_ex = squad.load_json(_root(c) / SQUAD_TRAIN)
        dev_ex = squad.load_json(_root(c) / SQUAD_DEV)
    return (_subset(train_ex, c.data.train_subset, c.data.split_seed),
            _subset(dev_ex, c.data.eval_subset, c.data.split_seed))


def _squad(c, tok) -> Sources:
    train_ex, dev_ex = squad_examples(c)
    feats = squad_features.EvalFeatures(dev_ex, tok, max_len=c.data.seq_len)
    gold = squad.gold_answers(dev_ex)

    def metrics(out):
        return squad_metrics.evaluate(gold, feats.postprocess(out["start_logits"],
                                                              out["end_logits"]))
    return Sources(
        train=squad_features.train_dataset(train_ex, tok, max_len=c.data.seq_len,
                                           batch_size=c.train.batch_size, seed=c.seed),
        eval=feats, metrics=metrics)


def describe(c, sources: Sources) -> str:
    """One line for the console: what the run reads."""
    what = {"text": (f"prepared {c.data.prepared}" if c.data.prepared
                     else "text " + ", ".join(c.data.text_files)), "glue": f"GLUE {c.data.glue_task}",
            "squad": "SQuAD v1.1", "tweets": "disaster tweets"}[c.data.kind]
    if c.data.kind == "text" and c.data.eval_files:
        what += "; MLM eval on " + ", ".join(c.data.eval_files)
    epoch = getattr(sources.train, "steps_per_epoch", None)
    size = f", {epoch:,} steps per epoch" if isinstance(epoch, int) else ""
    return f"{what} ({c.data.source}{size}), seq_len {c.data.seq_len}"


def make_sources(c) -> Sources:
    tok_path, tok = tokenizer(c)
    if c.data.kind == "text":
        return _text(c, tok, tok_path)
    if c.data.kind in ("glue", "tweets"):
        return _classification(c, tok)
    if c.data.kind == "squad":
        return _squad(c, tok)
    raise ValueError(f"config.data.kind: unknown {c.data.kind!r}")
