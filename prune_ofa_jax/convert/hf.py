"""HF PyTorch checkpoints <-> Flax params for BertFamily (pure name map + per-tensor hooks).

import_hf: HF model dir (config.json + model.safetensors | pytorch_model.bin | sharded index)
  -> (params, ModelConfig). Heads the task needs but the source lacks are an error unless
  `init_missing_heads` (then freshly initialised and logged).
export_hf: params -> an HF dir loadable by transformers' Auto* classes (safetensors) with the
  tokenizer files of `tokenizer_dir`, written to `<out>.tmp` and renamed, so a failure leaves
  nothing behind (a bucket `out`: built locally, then uploaded with config.json last). Values
  are copied exactly (float32), so pruned zeros stay zero; FFN neurons removed by
  structured pruning leave the file as far as one intermediate_size allows (compact_ffn).
An HF dir on gs:// is read from a local copy (paths.local): transformers and safetensors read
local files only.
"""

import dataclasses
import json
import logging
import pathlib
import shutil
import tempfile
from typing import Any, Optional

import jax
import numpy as np
from etils import epath

from prune_ofa_jax import paths
from prune_ofa_jax.convert import hf_names, layer_mix
from prune_ofa_jax.data import tokenization
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as config_lib
from prune_ofa_jax.sparsity import groups

log = logging.getLogger(__name__)

TOKENIZER_FILES = tokenization.TOKENIZER_FILES


class ConversionError(ValueError):
    """Bad conversion input (missing dir/tensor, shape mismatch, absent head, ...)."""


# --- flat path <-> nested dict ------------------------------------------------------------
def flatten(tree: Any) -> dict:
    """{"a/b/c": leaf} from a nested dict of arrays (or ShapeDtypeStructs)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(k.key) for k in path): leaf for path, leaf in leaves}


def unflatten(flat: dict) -> dict:
    tree = {}
    for path, leaf in flat.items():
        node = tree
        *parents, name = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[name] = leaf
    return tree


# --- reading an HF dir ----------------------------------------------------------------------
def _read_tensor_file(path: pathlib.Path) -> dict:
    import torch  # pylint: disable=import-outside-toplevel
    if path.suffix == ".safetensors":
        import safetensors.torch  # pylint: disable=import-outside-toplevel
        state = safetensors.torch.load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    # .float() so bf16/fp16 sources work; fp32 stays bit-identical.
    return {k: v.float().numpy() for k, v in state.items() if v.is_floating_point()}


def read_state_dict(hf_dir: pathlib.Path) -> dict:
    """All float tensors of an HF model dir as float32 numpy arrays."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = hf_dir / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state = {}
            for shard in shards:
                state.update(_read_tensor_file(hf_dir / shard))
            return state
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (hf_dir / name).is_file():
            return _read_tensor_file(hf_dir / name)
    raise ConversionError(f"no model.safetensors or pytorch_model.bin in {hf_dir}")


def _read_hf_config(hf_dir: pathlib.Path) -> tuple[dict, config_lib.ModelConfig]:
    if not hf_dir.is_dir():
        raise ConversionError(f"HF model dir not found: {hf_dir}")
    cfg_file = hf_dir / "config.json"
    if not cfg_file.is_file():
        raise ConversionError(f"no config.json in {hf_dir}")
    raw = json.loads(cfg_file.read_text())
    if raw.get("model_type") not in config_lib.MODEL_TYPES:
        raise ConversionError(
            f"unsupported architecture: model_type {raw.get('model_type')!r} "
            f"(architectures {raw.get('architectures')}) in {cfg_file}; "
            f"supported model types: {', '.join(config_lib.MODEL_TYPES)}")
    try:
        return raw, config_lib.ModelConfig.from_pretrained_dir(hf_dir)
    except (ValueError, TypeError) as e:
        raise ConversionError(f"cannot read {cfg_file}: {e}") from e


def infer_task(raw_config: dict) -> str:
    """Task from config.json's `architectures` (e.g. BertForMaskedLM -> "mlm")."""
    archs = raw_config.get("architectures") or []
    for arch in archs:
        found = hf_names.task_from_architecture(arch)
        if found:
            return found[1]
    raise ConversionError(
        f"unsupported architecture {archs}: cannot infer the task; pass --task "
        f"({'|'.join(bert.TASKS)}) to import the encoder with a chosen head")


def resolve_task(hf_dir, task: Optional[str] = None) -> str:
    """`task` if given, else the one implied by the dir's config.json architectures."""
    if task is not None:
        return task
    return infer_task(_read_hf_config(paths.local(hf_dir, ("config.json",)))[0])


# --- import -------------------------------------------------------------------------------
def _fetch(state: dict, model_type: str, path: str, expected) -> Optional[np.ndarray]:
    """The Flax-layout tensor for `path`, or None if absent. Shape-checked."""
    key, hook = hf_names.hf_key(model_type, path, prefix="")
    if key not in state:
        return None
    want = hook.shape_to_hf(tuple(expected.shape))
    if tuple(state[key].shape) != want:
        raise ConversionError(
            f"shape mismatch for {key}: checkpoint {tuple(state[key].shape)}, model config "
            f"expects {want} (Flax {path} {tuple(expected.shape)})")
    return hook.to_flax(state[key])


def _check_tied(state: dict, model_type: str, task: str, flat: dict) -> list:
    """Tied decoder tensors in the source must equal what they alias; returns keys used."""
    used = []
    for key, target in hf_names.tied_keys(model_type, task).items():
        if key in state:
            used.append(key)
            if not np.array_equal(state[key], flat[target]):
                raise ConversionError(
                    f"{key} differs from {target}: untied MLM decoders are not supported "
                    "(BertFamily ties the decoder to the word embeddings)")
    return used


def import_hf(hf_dir, task: Optional[str] = None, num_labels: Optional[int] = None,
              init_missing_heads: bool = False, rng_seed: int = 0,
              dtype: str = "float32") -> tuple[dict, config_lib.ModelConfig]:
    """HF model dir -> (params as nested dict of float32 jax arrays, ModelConfig).

    task None: inferred from config.json's architectures. num_labels overrides the config's
    (classification). Heads (and the pooler) the task needs but the source lacks raise
    ConversionError unless init_missing_heads, which initialises them from rng_seed.
    """
    hf_dir = paths.local(hf_dir)
    raw, model_config = _read_hf_config(hf_dir)
    task = task or infer_task(raw)
    overrides = {"dtype": dtype}
    if num_labels is not None:
        overrides["num_labels"] = int(num_labels)
    model_config = model_config.replace(**overrides)
    try:
        model = bert.BertFamily(model_config, task)
    except ValueError as e:
        raise ConversionError(str(e)) from e
    state = hf_names.canonical_keys(read_state_dict(hf_dir), model_config.model_type)
    expected = flatten(bert.abstract_params(model))
    flat, missing_heads = {}, []
    for path, shape in expected.items():
        value = _fetch(state, model_config.model_type, path, shape)
        if value is not None:
            flat[path] = value
        elif hf_names.is_head(path):
            missing_heads.append(path)
        else:
            key = hf_names.hf_key(model_config.model_type, path, prefix="")[0]
            raise ConversionError(f"missing tensor {key} (for {path}) in {hf_dir}")
    if missing_heads:
        _fill_missing_heads(flat, missing_heads, model, task, init_missing_heads, rng_seed, hf_dir)
    used = {hf_names.hf_key(model_config.model_type, p, "")[0] for p in expected}
    used.update(_check_tied(state, model_config.model_type, task, flat))
    unused = sorted(set(state) - used)
    if unused:
        log.info("ignored %d source tensors not used by task %r: %s", len(unused), task,
                 ", ".join(unused[:8]) + (" ..." if len(unused) > 8 else ""))
    params = unflatten({k: jax.numpy.asarray(v) for k, v in flat.items()})
    return params, model_config


def _head_modules(paths) -> list:
    return sorted({p.rpartition("/")[0] or p for p in paths})


def _fill_missing_heads(flat, missing, model, task, init_missing_heads, rng_seed, hf_dir):
    names = ", ".join(_head_modules(missing))
    if not init_missing_heads:
        raise ConversionError(
            f"task head absent from source: task {task!r} needs {names}, not in {hf_dir}; "
            "pass --init_missing_heads (init_missing_heads=True) to initialise them freshly")
    wanted = {"params/" + p for p in missing}
    fresh = flatten(bert.init_some(model, jax.random.key(rng_seed), wanted.__contains__)
                    ["params"])
    for path in missing:
        flat[path] = np.asarray(fresh[path])
    log.warning("initialised missing heads freshly (seed %d): %s", rng_seed, names)


# --- export -------------------------------------------------------------------------------
def to_hf_state_dict(params: Any, model_config: config_lib.ModelConfig, task: str) -> dict:
    """Flax params -> {HF key: float32 numpy} for the HF class of (family, task), tied keys
    included. ConversionError on missing params or wrong shapes."""
    bert.check_task(model_config, task)
    model = bert.BertFamily(model_config, task)
    expected = flatten(bert.abstract_params(model))
    flat = flatten(params)
    missing = sorted(set(expected) - set(flat))
    if missing:
        raise ConversionError(f"params lack {len(missing)} tensors for task {task!r}: "
                              + ", ".join(missing[:5]))
    extra = sorted(set(flat) - set(expected))
    if extra:
        log.warning("not exported (not part of task %r): %s", task, ", ".join(extra[:8]))
    prefix = hf_names.key_prefix(model_config.model_type, task)
    state = {}
    for path, shape in expected.items():
        value = np.asarray(jax.device_get(flat[path]), dtype=np.float32)
        if value.shape != tuple(shape.shape):
            raise ConversionError(f"param {path} has shape {value.shape}, config expects "
                                  f"{tuple(shape.shape)}")
        key, hook = hf_names.hf_key(model_config.model_type, path, prefix)
        state[key] = hook.to_hf(value)
    for key, target in hf_names.tied_keys(model_config.model_type, task).items():
        state[key] = state[hf_names.hf_key(model_config.model_type, target, prefix)[0]]
    return state


def hf_config(model_config: config_lib.ModelConfig, task: str) -> Any:
    """The transformers config written with an export (architectures set, QA has 2 labels)."""
    extra = {"architectures": [hf_names.hf_class_name(model_config.model_type, task)]}
    if task == "qa":
        extra["num_labels"] = 2
    elif task == "cls" and model_config.num_labels == 1:
        extra["problem_type"] = "regression"
    cfg = model_config.replace(num_labels=extra.pop("num_labels", model_config.num_labels))
    return cfg.to_hf(**extra)


def compact_ffn(params: Any, model_config: config_lib.ModelConfig):
    """(params, model_config) with the FFN as narrow as one `intermediate_size` for every
    layer allows: each layer's FFN neurons whose output row is zero (removed by a structured
    method) dropped, then zero neurons appended up to the widest layer's count (a zero
    intermediate column, bias 0 and output row add exactly nothing). Heads stay in the
    dense shape with zeros: transformers (5.x) holds one head count and one head size for
    every layer and no `pruned_heads`. Unchanged when no layer lost a neuron."""
    flat = {k: np.asarray(jax.device_get(v)) for k, v in flatten(params).items()}
    kept = [n for _, n, _ in groups.kept_units(flat, model_config)]
    width = max([len(n) for n in kept] + [1])
    if not kept or width >= model_config.intermediate_size:
        return params, model_config
    for prefix, neurons in zip(groups.layer_prefixes(flat), kept):
        pad = width - len(neurons)
        for name, axis in (("ffn/intermediate/kernel", 1), ("ffn/intermediate/bias", 0),
                           ("ffn/output/kernel", 0)):
            w = np.take(flat[f"{prefix}/{name}"], neurons, axis=axis)
            widths = [(0, 0)] * w.ndim
            widths[axis] = (0, pad)
            flat[f"{prefix}/{name}"] = np.pad(w, widths)
    log.info("HF export: FFN width %d -> %d (the widest layer's kept neurons; narrower "
             "layers zero-padded); heads kept in the dense shape with zeros",
             model_config.intermediate_size, width)
    return unflatten(flat), model_config.replace(intermediate_size=width)


def export_hf(params: Any, model_config: config_lib.ModelConfig, task: str, out_dir,
              tokenizer_dir=None, overwrite: bool = False, compact: bool = True):
    """Writes an HF PyTorch model dir (config.json + model.safetensors [+ the tokenizer files
    of `tokenizer_dir`, local or gs://]); `out_dir` local or gs://. A layer_mix classifier
    (no HF class has it): the encoder as the family's base model plus the head in its own
    file (convert/layer_mix.py). `compact`: FFN neurons removed by structured pruning are
    dropped as far as one intermediate_size allows (compact_ffn); pruned heads stay as
    zeros. Returns the dir (a pathlib.Path, an epath for a bucket)."""
    if compact:
        params, model_config = compact_ffn(params, model_config)
    if paths.is_bucket(out_dir):
        return _export_to_bucket(params, model_config, task, out_dir, tokenizer_dir, overwrite)
    if task == "cls" and model_config.cls_head != "default":
        if not layer_mix.has_head(params):
            raise ConversionError("params lack the layer_mix classifier "
                                  "(classifier/layer_weights)")
        base = dataclasses.replace(model_config, cls_head="default")
        out = export_hf({"backbone": params["backbone"]}, base, "base", out_dir,
                        tokenizer_dir, overwrite)
        layer_mix.write_head(out, params["classifier"], model_config)
        return out
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
    out = pathlib.Path(out_dir).absolute()
    if out.exists() and not overwrite:
        raise ConversionError(f"output dir already exists: {out}")
    if tokenizer_dir is not None and not epath.Path(tokenizer_dir).is_dir():
        raise ConversionError(f"tokenizer dir not found: {tokenizer_dir}")
    state = to_hf_state_dict(params, model_config, task)
    cfg = hf_config(model_config, task)
    model_cls = getattr(transformers, hf_names.hf_class_name(model_config.model_type, task))
    model = model_cls(cfg)
    result = model.load_state_dict({k: torch.tensor(v) for k, v in state.items()},
                                   strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConversionError(f"HF {model_cls.__name__} state mismatch: missing "
                              f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        model.save_pretrained(str(tmp))
        if tokenizer_dir is not None:
            for name in TOKENIZER_FILES:
                src = epath.Path(tokenizer_dir) / name
                if src.exists():
                    paths.copy_file(src, tmp / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _export_to_bucket(params, model_config, task, out_dir, tokenizer_dir, overwrite):
    """export_hf into a local scratch dir, then uploaded: config.json (what makes it an HF
    dir, convert/loader.py) goes last, so an upload cut short is no model."""
    out = epath.Path(out_dir)
    if out.exists() and not overwrite:
        raise ConversionError(f"output dir already exists: {out}")
    with tempfile.TemporaryDirectory(prefix="prune_ofa_jax_export_") as scratch:
        local = export_hf(params, model_config, task, pathlib.Path(scratch) / out.name,
                          tokenizer_dir)
        if out.exists():
            out.rmtree()
        files = sorted(local.iterdir(), key=lambda f: f.name == "config.json")
        for f in files:
            paths.upload(f, out / f.name)
    return out
