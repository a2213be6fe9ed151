"""The public Python surface: load a model and predict, build a run from a config, and train
with a loss term or a pruning method defined in your own code. docs/api.md shows it in use
(its example is run by tests/test_api.py).

    from prune_ofa_jax import api
    model = api.load("runs/sst2/model")          # a run's model/, an HF dir or a .pofa file
    model.predict(["a gripping film", "dull"])   # Prediction(logits [N, C], labels [N])
    config = api.recipe("finetune_glue:sst2")    # configs/finetune_glue.py:sst2
    report = api.train(config, "runs/mine", loss_terms=(my_term,), method=my_method)

Extending without editing the package: `LossTerm` (train/objectives.py) adds a term to the
objective; a `Method` subclass (sparsity/methods/base.py), registered with
`register_method(name)` or passed as `method=`, chooses the masks. The registries of the
distillation terms are `distill.intermediate.DISTANCES`, `distill.mi.BOUNDS` and
`distill.losses.LOGIT_LOSSES`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import pathlib
from typing import Any, Optional, Sequence

import jax
import numpy as np
from etils import epath

from prune_ofa_jax import errors, paths
from prune_ofa_jax.convert import loader
from prune_ofa_jax.data import tokenization
from prune_ofa_jax.models import bert
from prune_ofa_jax.sparsity import methods
from prune_ofa_jax.train import build as build_lib
from prune_ofa_jax.train import loop, objectives

LossTerm = objectives.LossTerm      # a term of your own: LossTerm(name, fn, weight, ...)
Method = methods.Method             # the pruning-method interface (sparsity/methods/base.py)
register_method = methods.register  # @register_method("name"): --config.sparsity.method=name


@dataclasses.dataclass(frozen=True)
class Prediction:
    """logits: [N, num_labels] float32; labels: [N] argmax class ids (for a regression head,
    num_labels 1, the predicted values)."""
    logits: np.ndarray
    labels: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A loaded model: `params` (masks baked in), `model_config` (models/config.py), `task`
    ("cls", "mlm", "pretraining", "qa"), `tokenizer` (an HF fast tokenizer) and `module`
    (the Flax BertFamily to `apply`)."""
    params: Any
    model_config: Any
    task: str
    tokenizer: Any
    module: Any

    @property
    def max_len(self) -> int:
        """The longest input the position embeddings cover (RoBERTa's start after pad+1)."""
        cfg = self.model_config
        offset = cfg.pad_token_id + 1 if cfg.model_type == "roberta" else 0
        return cfg.max_position_embeddings - offset

    def predict(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None, *,
                max_len: Optional[int] = None, batch_size: int = 32) -> Prediction:
        """Classify `texts` (with `pairs` as the second segment for sentence-pair tasks):
        tokenised to `max_len` tokens (default: 128, or fewer if the model's position
        embeddings cover fewer), run in fixed-size batches of `batch_size` through one
        compiled forward (the last batch padded)."""
        if self.task != "cls":
            raise errors.UserError(f"predict classifies sentences; this is a {self.task!r} "
                                   "model (fine-tune it with a cls recipe, e.g. finetune_glue)")
        if max_len is None:
            max_len = min(128, self.max_len)
        if not 8 <= max_len <= self.max_len:
            raise errors.UserError(f"predict: max_len {max_len} is outside [8, {self.max_len}] "
                                   "(the model's position embeddings)")
        texts = list(texts)
        if pairs is not None and len(pairs) != len(texts):
            raise errors.UserError(f"predict: {len(texts)} texts but {len(pairs)} pairs")
        if not texts:
            n = self.model_config.num_labels
            return Prediction(np.zeros((0, n), np.float32), np.zeros((0,), np.int64))
        arrays = tokenization.encode_pairs(self.tokenizer, texts,
                                           None if pairs is None else list(pairs), max_len)
        n = len(texts)
        padded = -(-n // batch_size) * batch_size
        cols = [np.zeros((padded, max_len), np.int32) for _ in range(3)]
        for col, key in zip(cols, ("input_ids", "attention_mask", "token_type_ids")):
            col[:n] = arrays[key]
            col[n:] = col[0]  # padding rows: copies of a real row, then dropped
        out = [np.asarray(self._logits(self.params, *(c[i:i + batch_size] for c in cols)))
               for i in range(0, padded, batch_size)]
        logits = np.concatenate(out)[:n].astype(np.float32)
        labels = logits[:, 0] if logits.shape[1] == 1 else np.argmax(logits, -1)
        return Prediction(logits, labels)

    @functools.cached_property
    def _logits(self):
        module = self.module

        @jax.jit
        def logits(params, input_ids, attention_mask, token_type_ids):
            return module.apply({"params": params}, input_ids, attention_mask, token_type_ids,
                                deterministic=True)["logits"]
        return logits


def load(path, *, task: Optional[str] = None, num_labels: Optional[int] = None,
         tokenizer=None) -> Model:
    """The model at `path` (a run's model/ params checkpoint, a Hugging Face dir or a packed
    .pofa file; convert/loader.py) with its tokenizer, by data/tokenization.py's rule:
    `tokenizer` (a dir) if given, else the model dir's own tokenizer files, else MiniLM's
    uncased BERT vocabulary when the model has it, else a UserError; one whose vocabulary
    size or pad id disagree with the model is refused. `task` and `num_labels` matter only
    for an HF dir (default: what its config.json says)."""
    params, mcfg, task = loader.load(path, task, num_labels)
    own = epath.Path(path).is_dir()
    tok_dir = tokenization.resolve(mcfg, explicit=tokenizer, model_dir=path if own else None,
                                   key="tokenizer", model=f"the model at {path}")
    tok = tokenization.load_tokenizer(tok_dir)
    tokenization.check_fits(tok, tok_dir, mcfg, own=tokenizer is None and tok_dir == str(path),
                            key="tokenizer", model=f"the model at {path}")
    return Model(params=params, model_config=mcfg, task=task, tokenizer=tok,
                 module=bert.BertFamily(mcfg, task))


def recipe(spec: str):
    """The ConfigDict of a recipe: "finetune_glue:sst2,test" (configs/<name>.py, then the
    argument its get_config takes) or a file path "my_recipe.py[:arg]"."""
    name, _, arg = str(spec).partition(":")
    path = pathlib.Path(name) if name.endswith(".py") and pathlib.Path(name).is_file() \
        else paths.recipe(name)
    if not path.is_file():
        raise errors.UserError(f"recipe {spec!r}: no file {path} (recipes are in "
                               f"{paths.recipes_dir()})")
    module_spec = importlib.util.spec_from_file_location(f"recipe_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def build(config, *, mesh=None, method: Optional[Method] = None,
          loss_terms: Sequence[LossTerm] = ()) -> build_lib.Run:
    """Everything a run needs but the data (train/build.py's Run: model, params, teacher,
    state, the jitted step and eval): `run.step_fn(run.state, run.teacher_params, batch)`.
    `method` replaces the config's pruning method; `loss_terms` are added to the objective."""
    return build_lib.build(config, mesh, method=method, loss_terms=tuple(loss_terms))


def train(config, workdir, *, method: Optional[Method] = None,
          loss_terms: Sequence[LossTerm] = (), build_fn=None) -> dict:
    """Train per `config` in `workdir` (train/loop.py: resume, checkpoints, metrics.jsonl,
    eval, the final model/ and report.json, which it returns). `method` and `loss_terms` go
    to the builder (`build_fn`, default train/build.py's); each term is logged under its
    name."""
    options = {}
    if method is not None:
        options["method"] = method
    if loss_terms:
        options["loss_terms"] = tuple(loss_terms)
    return loop.run(config, workdir, build_fn=build_fn, **options)
