"""The HF <-> Flax name map: module-path rules per family, a generic leaf map, per-tensor hooks.

A Flax param path ("backbone/encoder/layer_3/ffn/output/kernel") maps to one HF state-dict key
("bert.encoder.layer.3.output.dense.weight") and a hook pair (to_flax, to_hf). Backbone keys
carry the family prefix ("bert.", "distilbert.", "roberta.") in task models and none in
*Model checkpoints; `canonical_keys` strips it on import.
"""

import re
from typing import Callable, NamedTuple

import numpy as np

FAMILY_PREFIX = {"bert": "bert.", "distilbert": "distilbert.", "roberta": "roberta."}
_CLASS_STEM = {"bert": "Bert", "distilbert": "DistilBert", "roberta": "Roberta"}
_CLASS_SUFFIX = {"mlm": "ForMaskedLM", "pretraining": "ForPreTraining",
                 "cls": "ForSequenceClassification", "qa": "ForQuestionAnswering",
                 "base": "Model"}
WORD_EMBEDDINGS = "backbone/embeddings/word_embeddings/embedding"


class Hook(NamedTuple):
    to_flax: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]
    shape_to_hf: Callable[[tuple], tuple]  # for error messages in the checkpoint's layout


_identity = lambda x: x
IDENTITY = Hook(_identity, _identity, tuple)
# torch Linear weight is [out, in]; Flax Dense kernel is [in, out].
TRANSPOSE = Hook(lambda w: np.ascontiguousarray(w.T), lambda k: np.ascontiguousarray(k.T),
                 lambda shape: tuple(reversed(shape)))

# Flax leaf -> (HF leaf, hook).
_LEAVES = {"kernel": ("weight", TRANSPOSE), "bias": ("bias", IDENTITY),
           "scale": ("weight", IDENTITY), "embedding": ("weight", IDENTITY)}

_L = r"backbone/encoder/layer_(\d+)"
_EMB = [
    (r"backbone/embeddings/(word|position|token_type)_embeddings", r"{P}embeddings.\1_embeddings"),
    (r"backbone/embeddings/layer_norm", r"{P}embeddings.LayerNorm"),
]
_BERT_ENCODER = [
    (_L + r"/attention/(query|key|value)", r"{P}encoder.layer.\1.attention.self.\2"),
    (_L + r"/attention/output", r"{P}encoder.layer.\1.attention.output.dense"),
    (_L + r"/attention/layer_norm", r"{P}encoder.layer.\1.attention.output.LayerNorm"),
    (_L + r"/ffn/intermediate", r"{P}encoder.layer.\1.intermediate.dense"),
    (_L + r"/ffn/output", r"{P}encoder.layer.\1.output.dense"),
    (_L + r"/ffn/layer_norm", r"{P}encoder.layer.\1.output.LayerNorm"),
    (r"backbone/pooler/dense", r"{P}pooler.dense"),
]
_DISTIL_ENCODER = [
    (_L + r"/attention/query", r"{P}transformer.layer.\1.attention.q_lin"),
    (_L + r"/attention/key", r"{P}transformer.layer.\1.attention.k_lin"),
    (_L + r"/attention/value", r"{P}transformer.layer.\1.attention.v_lin"),
    (_L + r"/attention/output", r"{P}transformer.layer.\1.attention.out_lin"),
    (_L + r"/attention/layer_norm", r"{P}transformer.layer.\1.sa_layer_norm"),
    (_L + r"/ffn/intermediate", r"{P}transformer.layer.\1.ffn.lin1"),
    (_L + r"/ffn/output", r"{P}transformer.layer.\1.ffn.lin2"),
    (_L + r"/ffn/layer_norm", r"{P}transformer.layer.\1.output_layer_norm"),
]
_MODULE_RULES = {
    "bert": _EMB + _BERT_ENCODER + [
        (r"mlm_head/transform", "cls.predictions.transform.dense"),
        (r"mlm_head/layer_norm", "cls.predictions.transform.LayerNorm"),
        (r"nsp_head/dense", "cls.seq_relationship"),
        (r"classifier", "classifier"),
        (r"qa_outputs", "qa_outputs"),
    ],
    "roberta": _EMB + _BERT_ENCODER + [
        (r"mlm_head/transform", "lm_head.dense"),
        (r"mlm_head/layer_norm", "lm_head.layer_norm"),
        (r"classifier/(dense|out_proj)", r"classifier.\1"),
        (r"qa_outputs", "qa_outputs"),
    ],
    "distilbert": _EMB + _DISTIL_ENCODER + [
        (r"mlm_head/transform", "vocab_transform"),
        (r"mlm_head/layer_norm", "vocab_layer_norm"),
        (r"classifier/dense", "pre_classifier"),
        (r"classifier/out_proj", "classifier"),
        (r"qa_outputs", "qa_outputs"),
    ],
}
# Params that are not a Dense/Embed/LayerNorm leaf: whole-path rules.
_FULL_RULES = {
    "bert": {"mlm_head/bias": "cls.predictions.bias"},
    "roberta": {"mlm_head/bias": "lm_head.bias"},
    "distilbert": {"mlm_head/bias": "vocab_projector.bias"},
}
# HF keys tied to another tensor (the decoder shares the word embeddings): key -> Flax path.
_TIED = {
    "bert": {"cls.predictions.decoder.weight": WORD_EMBEDDINGS,
             "cls.predictions.decoder.bias": "mlm_head/bias"},
    "roberta": {"lm_head.decoder.weight": WORD_EMBEDDINGS, "lm_head.decoder.bias": "mlm_head/bias"},
    "distilbert": {"vocab_projector.weight": WORD_EMBEDDINGS},
}
# Non-persistent buffers some checkpoints still carry.
_BUFFERS = re.compile(r"(^|\.)embeddings\.(position_ids|token_type_ids)$")


def hf_class_name(model_type: str, task: str) -> str:
    return _CLASS_STEM[model_type] + _CLASS_SUFFIX[task]


def task_from_architecture(arch: str):
    """"BertForMaskedLM" -> "mlm"; None if not one of ours."""
    for model_type, stem in _CLASS_STEM.items():
        for task, suffix in _CLASS_SUFFIX.items():
            if arch == stem + suffix:
                return model_type, task
    return None


def key_prefix(model_type: str, task: str) -> str:
    """Prefix of backbone keys in the HF class for `task` ("" for *Model)."""
    return "" if task == "base" else FAMILY_PREFIX[model_type]


def hf_key(model_type: str, flax_path: str, prefix: str) -> tuple[str, Hook]:
    """Flax param path -> (HF state-dict key, hook). KeyError when no rule matches."""
    full = _FULL_RULES[model_type].get(flax_path)
    if full is not None:
        return full, IDENTITY
    module, _, leaf = flax_path.rpartition("/")
    if leaf in _LEAVES:
        for pattern, template in _MODULE_RULES[model_type]:
            match = re.fullmatch(pattern, module)
            if match:
                hf_leaf, hook = _LEAVES[leaf]
                return match.expand(template.replace("{P}", prefix)) + "." + hf_leaf, hook
    raise KeyError(f"no HF name for Flax param {flax_path!r} ({model_type})")


def tied_keys(model_type: str, task: str) -> dict:
    """HF keys that alias another param in the MLM/pretraining heads: key -> Flax path."""
    return dict(_TIED[model_type]) if task in ("mlm", "pretraining") else {}


def canonical_keys(state: dict, model_type: str) -> dict:
    """Strip the family prefix from backbone keys, rename legacy LayerNorm gamma/beta, drop
    non-persistent buffers. Result keys are as in the *Model class (heads unchanged)."""
    prefix = FAMILY_PREFIX[model_type]
    out = {}
    for key, value in state.items():
        if _BUFFERS.search(key):
            continue
        if key.startswith(prefix):
            key = key[len(prefix):]
        key = re.sub(r"(LayerNorm|layer_norm)\.gamma$", r"\1.weight", key)
        key = re.sub(r"(LayerNorm|layer_norm)\.beta$", r"\1.bias", key)
        out[key] = value
    return out


def is_head(flax_path: str) -> bool:
    """Task-specific params (absent from a base checkpoint): heads and the pooler."""
    return not flax_path.startswith("backbone/") or flax_path.startswith("backbone/pooler/")
