"""A params-only checkpoint: an Orbax StandardCheckpointer tree under `params/` plus `model.json`
({"model_config": ..., "task": ...}) and the model's tokenizer files beside them (an HF
tokenizer dir's: tokenizer.json, vocab.txt, ...; data/tokenization.py). Written by `import-hf`
and at the end of training (masks baked in), read by `export-hf` and every model loader.

Writes are all-or-nothing. Locally everything goes to `<dir>.tmp` first and is renamed into
place. In a bucket (gs://), where a rename copies every object, the files are written in
place with `model.json` last: a dir without it is no checkpoint (convert/loader.py), so a
write cut short is never read as one. Paths go through etils.epath, as Orbax's do.
"""

import json
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from prune_ofa_jax import paths
from prune_ofa_jax.data import tokenization
from prune_ofa_jax.models import config as config_lib

MODEL_JSON = "model.json"
PARAMS_DIR = "params"


def _tmp_path(path: epath.Path) -> epath.Path:
    # Deterministic (not random) so every process of a multi-host job agrees on it.
    return path.with_name(path.name + ".tmp")


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
        multihost_utils.sync_global_devices(name)


def copy_tokenizer(src, dst) -> list:
    """Copies the tokenizer files `src` holds (local or gs://) into `dst`; their names."""
    src, dst = epath.Path(src), epath.Path(dst)
    names = [n for n in tokenization.TOKENIZER_FILES if (src / n).exists()]
    for name in names:
        paths.copy_file(src / name, dst / name)
    return names


def save_params(directory, params: Any, model_config: config_lib.ModelConfig, task: str,
                overwrite: bool = False, tokenizer_dir=None) -> epath.Path:
    """Saves params (any pytree of arrays; sharded jax arrays are fine) + model.json, and the
    tokenizer files of `tokenizer_dir` when given.

    Raises FileExistsError when `directory` exists and overwrite is False. In a multi-host job
    every process must call this (Orbax writes each process's shards).
    """
    final = paths.absolute(directory)
    if final.exists() and not overwrite:
        raise FileExistsError(f"checkpoint dir already exists: {final}")
    in_place = paths.is_bucket(final)
    tmp = final if in_place else _tmp_path(final)
    if jax.process_index() == 0:
        if tmp.exists():
            tmp.rmtree()
        tmp.mkdir(parents=True, exist_ok=True)
    _sync("params_ckpt_mkdir")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp / PARAMS_DIR, params)
    checkpointer.wait_until_finished()
    checkpointer.close()
    if jax.process_index() == 0:
        if tokenizer_dir is not None:
            copy_tokenizer(tokenizer_dir, tmp)
        meta = {"model_config": model_config.to_dict(), "task": task}
        (tmp / MODEL_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if not in_place:
            if final.exists():
                final.rmtree()
            tmp.rename(final)
    _sync("params_ckpt_rename")
    return final


def load_model_json(directory) -> tuple[config_lib.ModelConfig, str]:
    """(model_config, task) recorded in a params checkpoint."""
    path = paths.absolute(directory)
    meta_file = path / MODEL_JSON
    if not meta_file.is_file():
        raise FileNotFoundError(f"not a params checkpoint (no {MODEL_JSON}): {path}")
    meta = json.loads(meta_file.read_text())
    return config_lib.ModelConfig.from_dict(meta["model_config"]), meta["task"]


def load_params(directory, sharding: Optional[Any] = None
                ) -> tuple[Any, config_lib.ModelConfig, str]:
    """(params, model_config, task). Arrays land on `sharding` (one Sharding for all leaves, or a
    pytree of them); default: the first local device. Independent of how they were saved."""
    path = paths.absolute(directory)
    model_config, task = load_model_json(path)
    checkpointer = ocp.StandardCheckpointer()
    tree = checkpointer.metadata(path / PARAMS_DIR).item_metadata.tree
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    is_meta = lambda x: hasattr(x, "shape") and hasattr(x, "dtype")
    if isinstance(sharding, jax.sharding.Sharding):
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, np.dtype(m.dtype),
                                                             sharding=sharding),
                              tree, is_leaf=is_meta)
    else:
        target = jax.tree.map(lambda m, s: jax.ShapeDtypeStruct(m.shape, np.dtype(m.dtype),
                                                                sharding=s),
                              tree, sharding, is_leaf=is_meta)
    params = checkpointer.restore(path / PARAMS_DIR, target)
    checkpointer.close()
    return params, model_config, task
