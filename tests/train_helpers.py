"""Shared helpers for the training tests: tiny checkpoints and recipe loading."""

import importlib.util
import pathlib

import jax

from prune_ofa_jax import presets
from prune_ofa_jax.convert import params_ckpt
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64,
            max_position_embeddings=64)


def save_tiny(directory, family="bert-base-uncased", task="pretraining", num_labels=2, seed=0):
    """A randomly initialised tiny model of `family` (real 30522 vocab) as a params ckpt."""
    mcfg = model_config.by_name(family, **TINY, num_labels=num_labels)
    params = bert.init_params(bert.BertFamily(mcfg, task), jax.random.key(seed))
    params_ckpt.save_params(directory, params, mcfg, task)
    return str(directory)


def recipe(name: str, arg: str = "test", resolve: bool = True, **paths):
    """configs/<name>.py:<arg> as a ConfigDict, with init/teacher paths set and (unless
    `resolve=False`) its preset resolved, as loop.run does: no key is left None."""
    spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config(arg)
    c.init.path = paths.get("init", c.init.path)
    c.teacher.path = paths.get("teacher", c.teacher.path)
    return presets.resolve(c) if resolve else c
