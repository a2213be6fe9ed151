"""BertFamily: one Linen module for BERT, DistilBERT and RoBERTa encoders with task heads.

Tasks: "mlm" (masked LM, decoder tied to the word embeddings), "pretraining" (MLM + NSP, as
BertForPreTraining; BERT only), "cls" (sequence classification; regression when
num_labels == 1), "qa" (span QA), "base" (encoder, plus pooler where HF's *Model has one).
The param tree's names ("backbone/encoder/layer_3/ffn/output/kernel", ...) are fixed by the
HF name map in convert/hf_names.py, which maps each of them to one Hugging Face state-dict
key: renaming a submodule here breaks import and export until that map follows.
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prune_ofa_jax.models import config as config_lib
from prune_ofa_jax.models import heads, layers

TASKS = ("mlm", "pretraining", "cls", "qa", "base")


def check_task(cfg: config_lib.ModelConfig, task: str) -> None:
    """ValueError for unknown tasks and for heads HF does not define for the family."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if task == "pretraining" and cfg.model_type != "bert":
        raise ValueError(
            f"task 'pretraining' (MLM+NSP) exists only for bert, not {cfg.model_type} "
            "(HF has no such head); use task 'mlm'")


def has_pooler(cfg: config_lib.ModelConfig, task: str) -> bool:
    """Whether the HF model for (family, task) carries a pooler (BertModel/RobertaModel do,
    BertForMaskedLM/QA do not, DistilBERT never)."""
    if cfg.model_type == "bert":
        return task in ("pretraining", "cls", "base")
    if cfg.model_type == "roberta":
        return task == "base"
    return False


class Backbone(nn.Module):
    """Embeddings + encoder (+ pooler). Returns a dict and the word table for tied decoding."""
    config: config_lib.ModelConfig
    with_pooler: bool = False
    dense_injector: layers.Injector = None
    embedding_quant: Optional[Callable] = None
    remat: bool = False

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids, deterministic: bool,
                 mix=None):
        cfg = self.config
        x, word_table = layers.Embeddings(cfg, self.embedding_quant, name="embeddings")(
            input_ids, token_type_ids, deterministic, mix)
        bias = layers.attention_bias(attention_mask, input_ids.shape)
        x, hidden_states, attentions = layers.Encoder(
            cfg, self.dense_injector, self.remat, name="encoder")(x, bias, deterministic)
        out = {"last_hidden_state": x, "hidden_states": hidden_states, "attentions": attentions}
        if self.with_pooler:
            out["pooler_output"] = heads.Pooler(cfg, self.dense_injector, name="pooler")(x)
        return out, word_table


class BertFamily(nn.Module):
    """Encoder + task head.

    Output keys (a dict): "last_hidden_state" always; "mlm_logits" (mlm, pretraining;
    "mlm_hidden"/"mlm_table"/"mlm_bias" instead with `mlm_hidden=True`), "nsp_logits"
    (pretraining), "logits" (cls), "start_logits"/"end_logits" (qa), "pooler_output" (base,
    where the family has a pooler); "hidden_states"/"attentions" when asked for.

    Attributes:
      config: ModelConfig (family, sizes, compute dtype).
      task: one of TASKS.
      dense_injector: path -> dot_general_cls or None, for every Dense (QAT hook).
      embedding_quant: optional function applied to embedding tables before lookup (and to the
        tied decoder, which is the same table).
      remat: rematerialise each encoder layer in the backward pass (memory for compute).
    """
    config: config_lib.ModelConfig
    task: str = "base"
    dense_injector: layers.Injector = None
    embedding_quant: Optional[Callable] = None
    remat: bool = False

    def __post_init__(self):
        check_task(self.config, self.task)
        super().__post_init__()

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *,
                 masked_positions=None, deterministic: bool = True,
                 output_hidden_states: bool = False, output_attentions: bool = False,
                 mlm_hidden: bool = False, mix_ids=None, mix_lambda=None):
        """`masked_positions` [B, P]: MLM logits only there. `mlm_hidden`: no MLM logits at
        all; "mlm_hidden" [B, L, H], "mlm_table" and "mlm_bias" (the tied decoder's inputs)
        instead, for a loss that projects chunk by chunk (distill/fused_mlm.py).
        `mix_ids` [B, L] and `mix_lambda` [B]: word-embedding mixup with those rows
        (distill/augment.py)."""
        cfg, task, inj = self.config, self.task, self.dense_injector
        mix = None if mix_ids is None else (mix_ids, mix_lambda)
        enc, word_table = Backbone(cfg, has_pooler(cfg, task), inj, self.embedding_quant,
                                   self.remat, name="backbone")(
                                       input_ids, attention_mask, token_type_ids, deterministic,
                                       mix)
        hidden = enc["last_hidden_state"]
        out = {"last_hidden_state": hidden}
        if "pooler_output" in enc and task == "base":
            out["pooler_output"] = enc["pooler_output"]
        if task in ("mlm", "pretraining"):
            picked = heads.gather_positions(hidden, masked_positions)
            mlm = heads.MlmHead(cfg, inj, name="mlm_head")(picked, word_table, not mlm_hidden)
            if mlm_hidden:
                out["mlm_hidden"], out["mlm_table"], out["mlm_bias"] = mlm
            else:
                out["mlm_logits"] = mlm
        if task == "pretraining":
            out["nsp_logits"] = heads.NspHead(cfg, inj, name="nsp_head")(enc["pooler_output"])
        if task == "cls":
            out["logits"] = heads.classifier_logits(
                self, hidden, enc.get("pooler_output"), cfg, inj, deterministic,
                all_hidden=enc["hidden_states"], attention_mask=attention_mask)
        if task == "qa":
            out["start_logits"], out["end_logits"] = heads.qa_logits(self, hidden, cfg, inj,
                                                                     deterministic)
        if output_hidden_states:
            out["hidden_states"] = enc["hidden_states"]
        if output_attentions:
            out["attentions"] = enc["attentions"]
        return out


def _dummy_inputs(seq_len: int):
    return jnp.zeros((1, seq_len), jnp.int32)


def _init_fn(model: BertFamily, seq_len: int) -> Callable:
    def init(key):
        rng_params, rng_dropout = jax.random.split(key)
        return model.init({"params": rng_params, "dropout": rng_dropout}, _dummy_inputs(seq_len))
    return init


def init_variables(model: BertFamily, rng: jax.Array, seq_len: int = 8) -> dict:
    """All variable collections (boxed with logical axes), e.g. for QAT's quant_stats.
    Compiled: an eager init of BERT-size models is ~4x slower."""
    return jax.jit(_init_fn(model, seq_len))(rng)


def path_str(path) -> str:
    """"a/b/c" of a jax.tree_util key path through nested dicts."""
    return "/".join(str(getattr(k, "key", k)) for k in path)


def init_some(model: BertFamily, rng: jax.Array, wanted: Callable[[str], bool],
              seq_len: int = 8) -> dict:
    """init_variables, unboxed, with only the leaves whose slash path (path_str, e.g.
    "params/classifier/kernel") `wanted` accepts computed; the others are
    jax.ShapeDtypeStruct, to graft a loaded checkpoint onto. The computed leaves equal
    init_variables' (the same program: XLA drops the unwanted leaves' initialisers), and the
    compile is of that smaller program, or none when nothing is wanted."""
    init = _init_fn(model, seq_len)
    abstract = nn.meta.unbox(jax.eval_shape(init, rng))
    flat, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    picked = [i for i, (path, _) in enumerate(flat) if wanted(path_str(path))]
    leaves = [x for _, x in flat]
    if picked:
        def init_picked(key):
            every = jax.tree.leaves(nn.meta.unbox(init(key)))
            return [every[i] for i in picked]
        for i, x in zip(picked, jax.jit(init_picked)(rng)):
            leaves[i] = x
    return jax.tree_util.tree_unflatten(treedef, leaves)


def init_params(model: BertFamily, rng: jax.Array, seq_len: int = 8) -> Any:
    """Freshly initialised params as plain arrays (logical-axis boxes removed)."""
    return nn.meta.unbox(init_variables(model, rng, seq_len)["params"])


def abstract_params(model: BertFamily, seq_len: int = 8) -> Any:
    """jax.ShapeDtypeStruct pytree of the params (no computation, no memory)."""
    boxed = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), seq_len))
    return nn.meta.unbox(boxed["params"])


def logical_specs(model: BertFamily, seq_len: int = 8) -> Any:
    """Pytree of logical PartitionSpecs matching init_params(model, ...)."""
    boxed = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), seq_len))
    return nn.get_partition_spec(boxed)["params"]
