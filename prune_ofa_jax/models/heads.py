"""Task heads: masked LM (tied decoder), next-sentence prediction, sequence classification
(each family's own head) and span QA. Layouts follow the HF PyTorch heads exactly so the
converter is a pure name map.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prune_ofa_jax.models import config as config_lib
from prune_ofa_jax.models import layers

Injector = layers.Injector


@jax.custom_vjp
def vocab_projection(y: jax.Array, table: jax.Array, bias: jax.Array) -> jax.Array:
    """fp32 logits `y @ table.T + bias` ([..., H] x [V, H] -> [..., V]).

    Same math as the einsum plus a broadcast add; the custom VJP only changes how the bias
    gradient is computed: a matrix-vector product `ones @ g` instead of a column sum over
    the [N, V] logit gradient, which XLA:CPU reduces 30-40x slower at V = 30522 (76 ms vs
    2 ms for N = 640; `python -m prune_ofa_jax.bench` measures the whole step).
    """
    return jnp.einsum("...h,vh->...v", y, table, preferred_element_type=jnp.float32) + bias


def _vocab_projection_fwd(y, table, bias):
    return vocab_projection(y, table, bias), (y, table, bias)


def _vocab_projection_bwd(res, g):
    y, table, bias = res
    g2 = g.reshape(-1, g.shape[-1])
    dy = jnp.einsum("...v,vh->...h", g.astype(y.dtype), table,
                    preferred_element_type=jnp.float32).astype(y.dtype)
    dtable = jnp.einsum("nv,nh->vh", g2.astype(y.dtype), y.reshape(-1, y.shape[-1]),
                        preferred_element_type=jnp.float32).astype(table.dtype)
    dbias = jnp.ones((g2.shape[0],), jnp.float32) @ g2.astype(jnp.float32)
    return dy, dtable, dbias.astype(bias.dtype)


vocab_projection.defvjp(_vocab_projection_fwd, _vocab_projection_bwd)


class MlmHead(nn.Module):
    """transform (Dense H->H) -> act -> LayerNorm -> x @ word_table.T + bias.

    BERT/DistilBERT use the encoder activation, RoBERTa's lm_head always erf-gelu.
    """
    config: config_lib.ModelConfig
    dense_injector: Injector = None

    @nn.compact
    def __call__(self, x, word_table, project: bool = True):
        """fp32 logits; with `project=False` the decoder's inputs instead, (y, table, bias),
        for a loss that applies the projection itself (distill/fused_mlm.py)."""
        cfg = self.config
        y = layers.dense(self, "transform", cfg.hidden_size, ("embed", "mlp"), cfg,
                         self.dense_injector)(x)
        act = "gelu" if cfg.model_type == "roberta" else cfg.hidden_act
        y = layers.activation(act)(y)
        y = layers.layer_norm(y, cfg, "layer_norm")
        bias_init = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab",))
        bias = self.param("bias", bias_init, (cfg.vocab_size,), jnp.float32)
        if not project:
            return y, word_table.astype(y.dtype), bias
        return vocab_projection(y, word_table.astype(y.dtype), bias)  # fp32 for the losses


class NspHead(nn.Module):
    """BERT's seq_relationship: Dense(2) on the pooled output."""
    config: config_lib.ModelConfig
    dense_injector: Injector = None

    @nn.compact
    def __call__(self, pooled):
        cfg = self.config
        out = layers.dense(self, "dense", 2, ("embed", None), cfg, self.dense_injector)(pooled)
        return out.astype(jnp.float32)


class Pooler(nn.Module):
    """BERT/RoBERTa pooler: tanh(Dense([CLS]))."""
    config: config_lib.ModelConfig
    dense_injector: Injector = None

    @nn.compact
    def __call__(self, hidden):
        cfg = self.config
        d = layers.dense(self, "dense", cfg.hidden_size, ("embed", "mlp"), cfg, self.dense_injector)
        return jnp.tanh(d(hidden[:, 0]))


class TwoLayerClassifier(nn.Module):
    """RoBERTa (dropout, dense, tanh, dropout, out_proj) and DistilBERT (dense, relu,
    dropout, out_proj) heads on the first token. Params: classifier/{dense,out_proj}."""
    config: config_lib.ModelConfig
    dense_injector: Injector = None

    @nn.compact
    def __call__(self, hidden, deterministic: bool):
        cfg, inj = self.config, self.dense_injector
        drop = nn.Dropout(cfg.cls_dropout)
        dense = layers.dense(self, "dense", cfg.hidden_size, ("embed", "mlp"), cfg, inj)
        x = hidden[:, 0]
        if cfg.model_type == "roberta":
            x = drop(x, deterministic=deterministic)
            x = jnp.tanh(dense(x))
        else:
            x = nn.relu(dense(x))
        x = drop(x, deterministic=deterministic)
        return layers.dense(self, "out_proj", cfg.num_labels, ("mlp", None), cfg, inj)(x)


def qa_logits(module: nn.Module, hidden, cfg: config_lib.ModelConfig, injector: Injector,
              deterministic: bool):
    """Span QA: qa_outputs Dense(2) -> (start_logits, end_logits) [B, L] each."""
    if cfg.model_type == "distilbert":
        hidden = nn.Dropout(cfg.qa_dropout)(hidden, deterministic=deterministic)
    out = layers.dense(module, "qa_outputs", 2, ("embed", None), cfg, injector)(hidden)
    out = out.astype(jnp.float32)
    return out[..., 0], out[..., 1]


class LayerMixHead(nn.Module):
    """Adapting by Pruning's head (Gao et al. 2021): a learned softmax-weighted average of
    every encoder layer's [CLS] vector, then a 1-hidden-layer MLP (Dense H -> H, tanh,
    dropout, Dense -> labels). Params: classifier/{layer_weights [L], dense, out_proj}.
    Uniform weights at init; the embedding output is not mixed in. `pool="mean"`: each
    layer's mean over the non-padding tokens instead of [CLS], for encoders trained with
    mean pooling (all-MiniLM's [CLS] barely varies with the input below its last layer)."""
    config: config_lib.ModelConfig
    dense_injector: Injector = None
    pool: str = "cls"

    @nn.compact
    def __call__(self, all_hidden, attention_mask, deterministic: bool):
        cfg, inj = self.config, self.dense_injector
        layers_out = jnp.stack(all_hidden[1:]).astype(jnp.float32)  # [L, B, T, H]
        if self.pool == "mean":
            m = jnp.ones(layers_out.shape[1:3], jnp.float32) if attention_mask is None else (
                attention_mask.astype(jnp.float32))
            pooled = jnp.einsum("lbth,bt->lbh", layers_out, m) / jnp.maximum(
                m.sum(-1), 1.0)[None, :, None]
        else:
            pooled = layers_out[:, :, 0]
        w = self.param("layer_weights", nn.with_logical_partitioning(
            nn.initializers.zeros_init(), (None,)), (pooled.shape[0],), jnp.float32)
        x = jnp.einsum("l,lbh->bh", jax.nn.softmax(w), pooled)
        drop = nn.Dropout(cfg.cls_dropout)
        x = drop(x, deterministic=deterministic)
        x = jnp.tanh(layers.dense(self, "dense", cfg.hidden_size, ("embed", "mlp"), cfg, inj)(x))
        x = drop(x, deterministic=deterministic)
        return layers.dense(self, "out_proj", cfg.num_labels, ("mlp", None), cfg, inj)(x)


def classifier_logits(module: nn.Module, hidden, pooled, cfg: config_lib.ModelConfig,
                      injector: Injector, deterministic: bool, all_hidden=None,
                      attention_mask=None):
    """Family-specific classification head, created as child "classifier" of `module`;
    `cfg.cls_head` layer_mix[_mean]: LayerMixHead over `all_hidden` (embeddings + layers)."""
    if cfg.cls_head in ("layer_mix", "layer_mix_mean"):
        pool = "mean" if cfg.cls_head == "layer_mix_mean" else "cls"
        out = LayerMixHead(cfg, injector, pool, name="classifier")(all_hidden, attention_mask,
                                                                   deterministic)
    elif cfg.model_type == "bert":
        x = nn.Dropout(cfg.cls_dropout)(pooled, deterministic=deterministic)
        out = layers.dense(module, "classifier", cfg.num_labels, ("embed", None), cfg, injector)(x)
    else:
        out = TwoLayerClassifier(cfg, injector, name="classifier")(hidden, deterministic)
    return out.astype(jnp.float32)


def gather_positions(hidden, positions: Optional[jnp.ndarray]):
    """hidden [B,L,H] at int positions [B,P] -> [B,P,H]; all positions when None."""
    if positions is None:
        return hidden
    return jnp.take_along_axis(hidden, positions[..., None].astype(jnp.int32), axis=1)

