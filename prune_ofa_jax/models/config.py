"""ModelConfig: one frozen dataclass for BERT, DistilBERT and RoBERTa encoders.

Built offline from `transformers` config classes (no downloads) and converted both ways, so a
checkpoint's `model.json` and an HF `config.json` describe the same network.
"""

import dataclasses
import json
import pathlib
from typing import Any, Optional

import transformers

MODEL_TYPES = ("bert", "distilbert", "roberta")
DTYPES = ("float32", "bfloat16")
CLS_HEADS = ("default", "layer_mix", "layer_mix_mean")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters (defaults: bert-base-uncased).

    `dtype` is the compute dtype; params are always float32. `num_labels` sizes the
    classification head (1 = regression). `classifier_dropout` None means `hidden_dropout`
    (HF convention; DistilBERT's `seq_classif_dropout`). `qa_dropout` is DistilBERT-only.
    `cls_head` "layer_mix" replaces the classification head by Adapting by Pruning's,
    "layer_mix_mean" by the same over each layer's mean-pooled tokens (no HF class has
    either: convert/hf.py exports the encoder plus the head as its own file).
    """
    model_type: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    pad_token_id: int = 0
    initializer_range: float = 0.02
    num_labels: int = 2
    dtype: str = "float32"
    classifier_dropout: Optional[float] = None
    qa_dropout: float = 0.1
    cls_head: str = "default"   # default (the family's HF head) | layer_mix | layer_mix_mean
    #                             (models/heads.LayerMixHead over [CLS] | over mean-pooled tokens)

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(
                f"unknown model_type {self.model_type!r}; expected one of {MODEL_TYPES}")
        if self.cls_head not in CLS_HEADS:
            raise ValueError(f"unknown cls_head {self.cls_head!r}; expected one of {CLS_HEADS}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; expected one of {DTYPES}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def has_token_types(self) -> bool:
        return self.model_type != "distilbert"

    @property
    def cls_dropout(self) -> float:
        return self.hidden_dropout if self.classifier_dropout is None else self.classifier_dropout

    def replace(self, **overrides) -> "ModelConfig":
        return dataclasses.replace(self, **overrides)

    # --- JSON -----------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**d)

    # --- transformers ---------------------------------------------------------
    @classmethod
    def from_hf(cls, hf_config: Any, dtype: str = "float32") -> "ModelConfig":
        """From a `transformers` BertConfig / DistilBertConfig / RobertaConfig."""
        model_type = getattr(hf_config, "model_type", None)
        if model_type == "distilbert":
            return cls(
                model_type="distilbert", vocab_size=hf_config.vocab_size, hidden_size=hf_config.dim,
                num_layers=hf_config.n_layers, num_heads=hf_config.n_heads,
                intermediate_size=hf_config.hidden_dim,
                max_position_embeddings=hf_config.max_position_embeddings, type_vocab_size=0,
                hidden_act=hf_config.activation, layer_norm_eps=1e-12,
                hidden_dropout=hf_config.dropout, attention_dropout=hf_config.attention_dropout,
                pad_token_id=_pad(hf_config, 0), initializer_range=hf_config.initializer_range,
                num_labels=hf_config.num_labels, dtype=dtype,
                classifier_dropout=hf_config.seq_classif_dropout, qa_dropout=hf_config.qa_dropout)
        if model_type in ("bert", "roberta"):
            return cls(
                model_type=model_type, vocab_size=hf_config.vocab_size,
                hidden_size=hf_config.hidden_size, num_layers=hf_config.num_hidden_layers,
                num_heads=hf_config.num_attention_heads,
                intermediate_size=hf_config.intermediate_size,
                max_position_embeddings=hf_config.max_position_embeddings,
                type_vocab_size=hf_config.type_vocab_size, hidden_act=hf_config.hidden_act,
                layer_norm_eps=hf_config.layer_norm_eps,
                hidden_dropout=hf_config.hidden_dropout_prob,
                attention_dropout=hf_config.attention_probs_dropout_prob,
                pad_token_id=_pad(hf_config, 0 if model_type == "bert" else 1),
                initializer_range=hf_config.initializer_range, num_labels=hf_config.num_labels,
                dtype=dtype, classifier_dropout=getattr(hf_config, "classifier_dropout", None),
                qa_dropout=0.0)
        raise ValueError(
            f"unsupported HF model_type {model_type!r}; supported: {', '.join(MODEL_TYPES)}")

    def to_hf(self, **extra) -> Any:
        """The matching `transformers` config (extra kwargs, e.g. architectures, passed on)."""
        common = dict(vocab_size=self.vocab_size,
                      max_position_embeddings=self.max_position_embeddings,
                      initializer_range=self.initializer_range, pad_token_id=self.pad_token_id,
                      num_labels=self.num_labels, **extra)
        if self.model_type == "distilbert":
            return transformers.DistilBertConfig(
                dim=self.hidden_size, n_layers=self.num_layers, n_heads=self.num_heads,
                hidden_dim=self.intermediate_size, activation=self.hidden_act,
                dropout=self.hidden_dropout, attention_dropout=self.attention_dropout,
                seq_classif_dropout=self.cls_dropout, qa_dropout=self.qa_dropout,
                sinusoidal_pos_embds=False, **common)
        cls = transformers.BertConfig if self.model_type == "bert" else transformers.RobertaConfig
        return cls(
            hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, intermediate_size=self.intermediate_size,
            type_vocab_size=self.type_vocab_size, hidden_act=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps, hidden_dropout_prob=self.hidden_dropout,
            attention_probs_dropout_prob=self.attention_dropout,
            classifier_dropout=self.classifier_dropout, **common)

    @classmethod
    def from_pretrained_dir(cls, path, dtype: str = "float32") -> "ModelConfig":
        """From an HF model directory's config.json (read locally, never downloaded)."""
        path = pathlib.Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"no config.json in {path}")
        raw = json.loads(cfg_file.read_text())
        model_type = raw.get("model_type")
        if model_type not in MODEL_TYPES:
            raise ValueError(
                f"unsupported HF model_type {model_type!r} in {cfg_file}; "
                f"supported: {', '.join(MODEL_TYPES)}")
        hf_config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
        return cls.from_hf(hf_config, dtype=dtype)


def _pad(hf_config, default: int) -> int:
    pad = getattr(hf_config, "pad_token_id", None)
    return default if pad is None else int(pad)


def _named_hf_configs() -> dict:
    """Well-known architectures, from `transformers` config defaults (offline)."""
    return {
        "bert-base-uncased": transformers.BertConfig(),
        "bert-large-uncased": transformers.BertConfig(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
            intermediate_size=4096),
        "distilbert-base-uncased": transformers.DistilBertConfig(),
        # RobertaConfig() defaults are BERT's; these are roberta-base's published values.
        "roberta-base": transformers.RobertaConfig(
            max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5),
        "minilm-l6": transformers.BertConfig(
            hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
            intermediate_size=1536),
        "bert-tiny": transformers.BertConfig(
            hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    }


NAMES = ("bert-base-uncased", "bert-large-uncased", "distilbert-base-uncased", "roberta-base",
         "minilm-l6", "bert-tiny")


def by_name(name: str, **overrides) -> ModelConfig:
    """A named architecture with field overrides, e.g. by_name("bert-tiny", num_labels=3)."""
    configs = _named_hf_configs()
    if name not in configs:
        raise ValueError(f"unknown model name {name!r}; known: {', '.join(NAMES)}")
    return ModelConfig.from_hf(configs[name]).replace(**overrides)
