"""The elastic BERT: one forward for every prefix sub-model of a BertFamily ("base") param tree.

The supernet's params ARE a BertFamily params tree of the largest arch (the teacher's shape,
MiniLM-L6 here), so the teacher, the supernet and every extracted sub-model share one layout
and one converter. `slice_params(params, shape)` cuts a tree to `shape` (an Arch): the first
`layers` layers, the first `hidden` dims of the embeddings, LayerNorms and every Linear, the
first `ffn` FFN neurons, and each of the 12 heads cut to its first qkv/12 dims (AutoTinyBERT's
"head sub-matrix extraction"). `forward` runs a sliced tree:

- exact (`active=None`): the sub-model itself, shapes = the arch (extraction, fine-tuning,
  latency);
- masked (`active` = int32 [layers, hidden, ffn, qkv], traced): a bucket-shaped tree runs any
  arch it holds. Dims past the arch's widths are zeroed after every op that could fill them
  (LayerNorm statistics over the active prefix only), and layers past its depth are skipped
  with `lax.cond`, which runs one branch. The result equals the exact sub-model (tested), and
  one compiled step serves every arch of a bucket.

Float32 throughout (the supernet is small; bf16 is the main model's option, not this one's).
Returns the last hidden state, the last layer's attention scores (scaled, before the mask
bias and softmax: the KD target) and the pooled [CLS].
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from prune_ofa_jax.models import layers as layers_lib
from prune_ofa_jax.nas import space as space_lib


def num_layers(params) -> int:
    return sum(1 for k in params["backbone"]["encoder"] if k.startswith("layer_"))


def shape_of(params, num_heads: int) -> space_lib.Arch:
    """The Arch a (sliced) tree has."""
    layer = params["backbone"]["encoder"]["layer_0"]
    return space_lib.Arch(num_layers(params), layer["attention"]["query"]["kernel"].shape[0],
                          layer["ffn"]["intermediate"]["kernel"].shape[1],
                          layer["attention"]["query"]["kernel"].shape[1])


def _heads_cols(kernel, rows: int, num_heads: int, head_dim: int):
    """[H, n*dh_max] -> [rows, n*head_dim]: each head's first head_dim output columns."""
    h, width = kernel.shape
    per = kernel.reshape(h, num_heads, width // num_heads)[:rows, :, :head_dim]
    return per.reshape(rows, num_heads * head_dim)


def _heads_bias(bias, num_heads: int, head_dim: int):
    return bias.reshape(num_heads, -1)[:, :head_dim].reshape(-1)


def _heads_rows(kernel, cols: int, num_heads: int, head_dim: int):
    """[n*dh_max, H] -> [n*head_dim, cols]: each head's first head_dim input rows."""
    width, h = kernel.shape
    per = kernel.reshape(num_heads, width // num_heads, h)[:, :head_dim, :cols]
    return per.reshape(num_heads * head_dim, cols)


def _slice_layer(p, d: int, f: int, dh: int, n: int) -> dict:
    att, ffn = p["attention"], p["ffn"]
    ln = lambda t: {"scale": t["scale"][:d], "bias": t["bias"][:d]}
    qkv = {k: {"kernel": _heads_cols(att[k]["kernel"], d, n, dh),
               "bias": _heads_bias(att[k]["bias"], n, dh)} for k in ("query", "key", "value")}
    return {
        "attention": {**qkv, "output": {"kernel": _heads_rows(att["output"]["kernel"], d, n, dh),
                                        "bias": att["output"]["bias"][:d]},
                      "layer_norm": ln(att["layer_norm"])},
        "ffn": {"intermediate": {"kernel": ffn["intermediate"]["kernel"][:d, :f],
                                 "bias": ffn["intermediate"]["bias"][:f]},
                "output": {"kernel": ffn["output"]["kernel"][:f, :d],
                           "bias": ffn["output"]["bias"][:d]},
                "layer_norm": ln(ffn["layer_norm"])}}


def slice_params(params, shape: space_lib.Arch, num_heads: int = 12) -> dict:
    """The prefix sub-tree of `shape` (the pooler too, when the tree has one)."""
    d, dh = shape.hidden, shape.qkv // num_heads
    bb = params["backbone"]
    emb = bb["embeddings"]
    out = {"embeddings": {
        **{k: {"embedding": emb[k]["embedding"][:, :d]} for k in emb if k != "layer_norm"},
        "layer_norm": {"scale": emb["layer_norm"]["scale"][:d],
                       "bias": emb["layer_norm"]["bias"][:d]}},
        "encoder": {f"layer_{i}": _slice_layer(bb["encoder"][f"layer_{i}"], d, shape.ffn, dh,
                                               num_heads)
                    for i in range(shape.layers)}}
    if "pooler" in bb:
        out["pooler"] = {"dense": {"kernel": bb["pooler"]["dense"]["kernel"][:d, :d],
                                   "bias": bb["pooler"]["dense"]["bias"][:d]}}
    return {"backbone": out}


class _Masks:
    """Prefix masks of the active widths (all None in exact mode)."""

    def __init__(self, active, shape: space_lib.Arch, num_heads: int):
        self.active = active
        if active is None:
            self.d = self.f = self.h = None
            self.n_d = float(shape.hidden)
            self.head_dim = float(shape.qkv // num_heads)
            return
        active = jnp.asarray(active, jnp.int32)
        self.d = (jnp.arange(shape.hidden) < active[1]).astype(jnp.float32)
        self.f = (jnp.arange(shape.ffn) < active[2]).astype(jnp.float32)
        self.h = (jnp.arange(shape.qkv // num_heads) < active[3] // num_heads).astype(jnp.float32)
        self.n_d = active[1].astype(jnp.float32)
        self.head_dim = (active[3] // num_heads).astype(jnp.float32)


def _apply(m, x):
    return x if m is None else x * m


def layer_norm(x, p, eps: float, masks: _Masks):
    """LayerNorm over the active prefix (as torch's: exact variance, eps inside the root)."""
    if masks.d is None:
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
    else:
        mean = (x * masks.d).sum(-1, keepdims=True) / masks.n_d
        var = jnp.square((x - mean) * masks.d).sum(-1, keepdims=True) / masks.n_d
    y = (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]
    return _apply(masks.d, y)


def _dense(x, p):
    return x @ p["kernel"] + p["bias"]


def _dropout(x, rate: float, rng, deterministic: bool):
    if deterministic or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _layer(p, x, bias, cfg, masks: _Masks, num_heads: int, deterministic: bool, rng):
    b, l, _ = x.shape
    rngs = jax.random.split(rng, 3) if rng is not None else [None] * 3
    split = lambda t: _apply(masks.h, t.reshape(b, l, num_heads, -1))
    att = p["attention"]
    q, k, v = (split(_dense(x, att[n])) for n in ("query", "key", "value"))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(masks.head_dim)
    probs = jax.nn.softmax(scores + bias, axis=-1)
    probs_d = _dropout(probs, cfg.attention_dropout, rngs[0], deterministic)
    ctx = jnp.einsum("bhqk,bkhd->bqhd", probs_d, v).reshape(b, l, -1)
    out = _dropout(_apply(masks.d, _dense(ctx, att["output"])), cfg.hidden_dropout, rngs[1],
                   deterministic)
    x = layer_norm(out + x, att["layer_norm"], cfg.layer_norm_eps, masks)
    ffn = p["ffn"]
    h = _apply(masks.f, layers_lib.activation(cfg.hidden_act)(_dense(x, ffn["intermediate"])))
    out = _dropout(_apply(masks.d, _dense(h, ffn["output"])), cfg.hidden_dropout, rngs[2],
                   deterministic)
    return layer_norm(out + x, ffn["layer_norm"], cfg.layer_norm_eps, masks), scores


def forward(params, input_ids, attention_mask=None, token_type_ids=None, *, cfg,
            active: Optional[jax.Array] = None, deterministic: bool = True, rng=None) -> dict:
    """Sliced params (exact or bucket shape) -> {"last_hidden_state" [B, L, d],
    "scores" [B, heads, L, L] (last layer, scaled, pre-mask), "pooled" [B, d] (if a pooler)}.
    `cfg`: the supernet's ModelConfig (heads, eps, activation, dropout rates)."""
    n = cfg.num_heads
    shape = shape_of(params, n)
    masks = _Masks(active, shape, n)
    bb = params["backbone"]
    emb = bb["embeddings"]
    if token_type_ids is None:
        token_type_ids = jnp.zeros_like(input_ids)
    x = (jnp.take(emb["word_embeddings"]["embedding"], input_ids, axis=0)
         + jnp.take(emb["token_type_embeddings"]["embedding"], token_type_ids, axis=0)
         + jnp.take(emb["position_embeddings"]["embedding"],
                    layers_lib.position_ids(cfg, input_ids), axis=0))
    x = layer_norm(_apply(masks.d, x), emb["layer_norm"], cfg.layer_norm_eps, masks)
    rng = rng if rng is not None else jax.random.key(0)
    x = _dropout(x, cfg.hidden_dropout, jax.random.fold_in(rng, 10_000), deterministic)
    bias = layers_lib.attention_bias(attention_mask, input_ids.shape)
    scores = jnp.zeros((x.shape[0], n) + input_ids.shape[1:] * 2, jnp.float32)
    for i in range(shape.layers):
        run = lambda x, s, i=i: _layer(bb["encoder"][f"layer_{i}"], x, bias, cfg, masks, n,
                                       deterministic, jax.random.fold_in(rng, i))
        if masks.active is None or i == 0:  # every arch has at least one layer
            x, scores = run(x, scores)
        else:
            x, scores = jax.lax.cond(i < masks.active[0], run, lambda x, s: (x, s), x, scores)
    out = {"last_hidden_state": x, "scores": scores}
    if "pooler" in bb:
        out["pooled"] = _apply(masks.d, jnp.tanh(_dense(x[:, 0], bb["pooler"]["dense"])))
    return out


def active_array(arch: space_lib.Arch) -> jax.Array:
    return jnp.asarray([arch.layers, arch.hidden, arch.ffn, arch.qkv], jnp.int32)


def masked_scores(scores, attention_mask):
    """Scores with the masked (padding) keys zeroed, as their KD loss reads them."""
    if attention_mask is None:
        return scores
    keep = attention_mask.astype(bool)[:, None, None, :]
    return jnp.where(keep, scores, 0.0)
