"""One loader for every model format the project reads, wherever a path names a model
(`init.path`, `teacher.path`, `augment.mlm_path`, the command lines):

- a params checkpoint: DIR/model.json + DIR/params/ (every run's `model/`, `import-hf`);
- a Hugging Face model dir: DIR/config.json + weights (safetensors or a PyTorch .bin);
- a packed file (`convert pack`, .pofa): one file, checked section by section.

`kind(path)` says which one a path holds, `model_config(path)` reads only its config and
`load(path, ...)` the params. Any of them may be on gs:// (an HF dir and a packed file are
read from a local copy: paths.local). A model's tokenizer files sit beside it (a params
checkpoint, an HF dir); data/tokenization.py says which tokenizer a model uses.
"""

from __future__ import annotations

from typing import Any, Optional

from etils import epath

from prune_ofa_jax import errors, paths
from prune_ofa_jax.convert import hf, pack_ckpt, packed, params_ckpt
from prune_ofa_jax.models import config as config_lib

PARAMS, HF, PACKED = "params", "hf", "packed"


def kind(path) -> str:
    """PARAMS, HF or PACKED; a UserError naming the path when it holds none of them."""
    p = epath.Path(path)
    if (p / params_ckpt.MODEL_JSON).exists():
        return PARAMS
    if (p / "config.json").exists():
        return HF
    if packed.is_packed(p):
        return PACKED
    what = "does not exist" if not p.exists() else "holds no model"
    raise errors.UserError(
        f"{path} {what}: a model is a params checkpoint (a dir with {params_ckpt.MODEL_JSON}), "
        "a Hugging Face model dir (with config.json) or a packed .pofa file")


def model_config(path) -> config_lib.ModelConfig:
    """The model's config, without reading its weights."""
    k = kind(path)
    if k == PARAMS:
        return params_ckpt.load_model_json(path)[0]
    if k == HF:
        return config_lib.ModelConfig.from_pretrained_dir(paths.local(path, ("config.json",)))
    header, _ = packed.read_header(path)
    return config_lib.ModelConfig.from_dict(header["model_config"])


def load(path, task: Optional[str] = None, num_labels: Optional[int] = None,
         init_missing_heads: bool = False) -> tuple[Any, config_lib.ModelConfig, str]:
    """(params, ModelConfig, task) from any of the three formats. `task`, `num_labels` and
    `init_missing_heads` matter for an HF dir, whose heads are built for `task` (None: the
    one its config.json's architectures imply); the other formats record their own task."""
    k = kind(path)
    if k == PARAMS:
        return params_ckpt.load_params(path)
    if k == PACKED:
        return pack_ckpt.load_packed(path)[:3]
    task = hf.resolve_task(path, task)
    params, mcfg = hf.import_hf(path, task, num_labels=num_labels,
                                init_missing_heads=init_missing_heads)
    return params, mcfg, task
