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

from prune_ofa_jax import paths
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


def _subset(examples, n: int, seed: int):
    if not n or n >= len(examples):
        return examples
    return examples.subset(np.sort(np.random.default_rng(seed).permutation(len(examples))[:n]))


def _prepared(c, tok, tok_path: str) -> Sources:
    """Train: the Grain stream over the train shards; eval: batches of the held-out shards."""
    kw = dict(max_len=c.data.seq_len, max_predictions=c.data.max_predictions, nsp=c.data.nsp,
              tokenizer_path=tok_path)
    return Sources(
        train=stream.PreparedDataset(c.data.prepared, tok, batch_size=c.train.batch_size,
                                     seed=c.seed, **kw),
        eval=stream.PreparedDataset(c.data.prepared, tok, batch_size=c.train.eval_batch_size,
                                    seed=c.seed + 1, split="eval", **kw),
        metrics=None)


def _text(c, tok, tok_path: str) -> Sources:
    if c.data.prepared:
        return _prepared(c, tok, tok_path)
    corpus = _corpus(tuple(c.data.text_files), str(_root(c)), tok_path, c.data.source)
    train, held = corpus.split(0.05, c.seed)
    kw = dict(max_len=c.data.seq_len, max_predictions=c.data.max_predictions, nsp=c.data.nsp,
              whole_word_mask=c.data.whole_word_mask)
    return Sources(
        train=pretraining.PretrainingDataset(train, tok, batch_size=c.train.batch_size,
                                             seed=c.seed, **kw),
        eval=pretraining.PretrainingDataset(held, tok, batch_size=c.train.eval_batch_size,
                                            seed=c.seed + 1, **kw),
        metrics=None)


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


def _classification(c, tok) -> Sources:
    if c.data.kind == "tweets":
        train_ex, dev_ex = disaster_tweets.train_dev_split(disaster_tweets.load(_root(c) / TWEETS), 0.1, c.seed)

        def metrics(out):
            pred = out["logits"].argmax(-1)
            return {"accuracy": glue_metrics.accuracy(pred, dev_ex.labels),
                    "f1": glue_metrics.f1_binary(pred, dev_ex.labels)}
    else:
        spec = glue.task(c.data.glue_task)
        train_ex = _glue_examples(c, "train")
        dev_ex = _glue_examples(c, spec.eval_splits[0])

        def metrics(out):
            return glue_metrics.compute(spec.name, out["logits"], dev_ex.labels)
    train_ex = _subset(train_ex, c.data.train_subset, c.seed)
    dev_ex = _subset(dev_ex, c.data.eval_subset, c.seed)
    kw = dict(max_len=c.data.seq_len, seed=c.seed)
    train = classification.ClassificationDataset(train_ex, tok, batch_size=c.train.batch_size,
                                                 **kw)
    return Sources(
        train=augment_batches.wrap(c, train, tok),  # config.augment: + augmented rows
        eval=classification.ClassificationDataset(dev_ex, tok,
                                                  batch_size=c.train.eval_batch_size, **kw),
        metrics=metrics)


def _squad(c, tok) -> Sources:
    if c.data.source == "tfds":
        train_ex, dev_ex = squad.load_tfds("train"), squad.load_tfds("validation")
    else:
        train_ex = squad.load_json(_root(c) / SQUAD_TRAIN)
        dev_ex = squad.load_json(_root(c) / SQUAD_DEV)
    if c.data.train_subset:
        train_ex = train_ex[:c.data.train_subset]
    if c.data.eval_subset:
        dev_ex = dev_ex[:c.data.eval_subset]
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
