"""Encoder building blocks shared by BERT, DistilBERT and RoBERTa (Flax Linen).

Post-LayerNorm transformer layers as in the HF PyTorch models, with three twists:
- every Dense gets its `dot_general_cls` from an injector keyed by the Dense's param path,
  so quantisation-aware training plugs in without touching this file;
- every param carries logical axis names (see LOGICAL_AXES) for sharding rules;
- matmuls run in the compute dtype (bf16 option), softmax and LayerNorm in float32.
"""

import functools
import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prune_ofa_jax.models import config as config_lib

Injector = Optional[Callable[[str], Any]]

# Logical axis names used by the params (the mesh rules map these to mesh axes):
#   vocab: vocabulary rows; embed: the model width H (residual stream);
#   heads: the H = num_heads*head_dim side of attention projections;
#   mlp: the FFN width I, and the output side of square H->H head/pooler layers.
LOGICAL_AXES = ("vocab", "embed", "heads", "mlp")

ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # erf gelu, as torch
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def activation(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def compute_dtype(cfg: config_lib.ModelConfig):
    return jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32


def dense(module: nn.Module, name: str, features: int, axes, cfg: config_lib.ModelConfig,
          injector: Injector) -> nn.Dense:
    """An nn.Dense child of `module` with logical axes and an injected dot_general."""
    path = "/".join(tuple(module.path) + (name,))
    dot_general_cls = injector(path) if injector is not None else None
    return nn.Dense(
        features, dtype=compute_dtype(cfg), param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.normal(cfg.initializer_range), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)),
        dot_general_cls=dot_general_cls, name=name)


def layer_norm(x, cfg: config_lib.ModelConfig, name: str):
    """LayerNorm in float32 (exact variance, as torch), result cast back to the compute dtype."""
    ln = nn.LayerNorm(
        epsilon=cfg.layer_norm_eps, dtype=jnp.float32, param_dtype=jnp.float32,
        use_fast_variance=False,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
        name=name)
    return ln(x.astype(jnp.float32)).astype(compute_dtype(cfg))


class Embed(nn.Module):
    """An embedding table; returns the (optionally fake-quantised) table itself."""
    num_embeddings: int
    features: int
    axes: tuple
    init_range: float
    quant: Optional[Callable] = None

    @nn.compact
    def __call__(self):
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(self.init_range), self.axes),
            (self.num_embeddings, self.features), jnp.float32)
        return table if self.quant is None else self.quant(table)


def position_ids(cfg: config_lib.ModelConfig, input_ids):
    """0..L-1 (BERT/DistilBERT); RoBERTa: pad_idx+1.. over non-pad tokens, pads get pad_idx."""
    if cfg.model_type == "roberta":
        mask = (input_ids != cfg.pad_token_id).astype(jnp.int32)
        return jnp.cumsum(mask, axis=1) * mask + cfg.pad_token_id
    return jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)


class Embeddings(nn.Module):
    """Word + position (+ token type) embeddings, LayerNorm, dropout.

    Returns (embedded [B,L,H] in compute dtype, word table [V,H] for the tied MLM decoder).
    """
    config: config_lib.ModelConfig
    embedding_quant: Optional[Callable] = None

    @nn.compact
    def __call__(self, input_ids, token_type_ids, deterministic: bool, mix=None):
        """`mix` = (mix_ids [B, L], mix_lambda [B]): embedding mixup, the word embeddings
        become lambda * E[input_ids] + (1 - lambda) * E[mix_ids] (positions and token types
        stay the row's own)."""
        cfg = self.config
        word_table = Embed(cfg.vocab_size, cfg.hidden_size, ("vocab", "embed"),
                           cfg.initializer_range, self.embedding_quant, name="word_embeddings")()
        pos_table = Embed(cfg.max_position_embeddings, cfg.hidden_size, (None, "embed"),
                          cfg.initializer_range, self.embedding_quant, name="position_embeddings")()
        x = jnp.take(word_table, input_ids, axis=0)
        if mix is not None:
            lam = jnp.asarray(mix[1], x.dtype)[:, None, None]
            x = lam * x + (1 - lam) * jnp.take(word_table, mix[0], axis=0)
        if cfg.has_token_types:
            tt_table = Embed(cfg.type_vocab_size, cfg.hidden_size, (None, "embed"),
                             cfg.initializer_range, self.embedding_quant,
                             name="token_type_embeddings")()
            if token_type_ids is None:
                token_type_ids = jnp.zeros_like(input_ids)
            x = x + jnp.take(tt_table, token_type_ids, axis=0)
        x = x + jnp.take(pos_table, position_ids(cfg, input_ids), axis=0)
        x = layer_norm(x, cfg, "layer_norm")
        x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
        return x, word_table


class Attention(nn.Module):
    """Multi-head self-attention + output projection + residual + LayerNorm."""
    config: config_lib.ModelConfig
    dense_injector: Injector = None

    @nn.compact
    def __call__(self, x, mask_bias, deterministic: bool):
        cfg, inj = self.config, self.dense_injector
        b, l, h = x.shape
        split = lambda t: t.reshape(b, l, cfg.num_heads, cfg.head_dim)
        q = split(dense(self, "query", h, ("embed", "heads"), cfg, inj)(x))
        k = split(dense(self, "key", h, ("embed", "heads"), cfg, inj)(x))
        v = split(dense(self, "value", h, ("embed", "heads"), cfg, inj)(x))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        scores = scores / math.sqrt(cfg.head_dim) + mask_bias
        probs = jax.nn.softmax(scores, axis=-1)
        dropped = nn.Dropout(cfg.attention_dropout)(probs, deterministic=deterministic)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", dropped.astype(v.dtype), v).reshape(b, l, h)
        out = dense(self, "output", h, ("heads", "embed"), cfg, inj)(ctx)
        if cfg.model_type != "distilbert":  # DistilBERT has no dropout on the attention output
            out = nn.Dropout(cfg.hidden_dropout)(out, deterministic=deterministic)
        return layer_norm(out + x, cfg, "layer_norm"), probs


class Ffn(nn.Module):
    """intermediate -> activation -> output -> dropout -> residual + LayerNorm."""
    config: config_lib.ModelConfig
    dense_injector: Injector = None

    @nn.compact
    def __call__(self, x, deterministic: bool):
        cfg, inj = self.config, self.dense_injector
        y = dense(self, "intermediate", cfg.intermediate_size, ("embed", "mlp"), cfg, inj)(x)
        y = activation(cfg.hidden_act)(y)
        y = dense(self, "output", cfg.hidden_size, ("mlp", "embed"), cfg, inj)(y)
        y = nn.Dropout(cfg.hidden_dropout)(y, deterministic=deterministic)
        return layer_norm(y + x, cfg, "layer_norm")


class Layer(nn.Module):
    """One post-LN transformer layer; returns (hidden, attention probabilities)."""
    config: config_lib.ModelConfig
    dense_injector: Injector = None

    @nn.compact
    def __call__(self, x, mask_bias, deterministic: bool):
        x, probs = Attention(self.config, self.dense_injector, name="attention")(
            x, mask_bias, deterministic)
        x = Ffn(self.config, self.dense_injector, name="ffn")(x, deterministic)
        return x, probs


def attention_bias(attention_mask, shape):
    """[B,L] 1/0 mask -> additive float32 bias [B,1,1,L] (HF uses the same finfo.min)."""
    if attention_mask is None:
        return jnp.zeros((shape[0], 1, 1, shape[1]), jnp.float32)
    keep = attention_mask.astype(bool)[:, None, None, :]
    return jnp.where(keep, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)


class Encoder(nn.Module):
    """`num_layers` Layers named layer_{i}; collects hidden states / attentions on request."""
    config: config_lib.ModelConfig
    dense_injector: Injector = None
    remat: bool = False

    @nn.compact
    def __call__(self, x, mask_bias, deterministic: bool):
        layer_cls = nn.remat(Layer, static_argnums=(3,)) if self.remat else Layer
        hidden_states, attentions = [x], []
        for i in range(self.config.num_layers):
            x, probs = layer_cls(self.config, self.dense_injector, name=f"layer_{i}")(
                x, mask_bias, deterministic)
            hidden_states.append(x)
            attentions.append(probs)
        return x, tuple(hidden_states), tuple(attentions)
