"""BertFamily: config, param-tree contract, heads, masking, dropout, injection hooks, dtypes."""

import dataclasses
import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as config_lib
from prune_ofa_jax.models import layers

PRUNABLE = re.compile(
    r"(^|/)encoder/layer_\d+/(attention/(query|key|value|output)|ffn/(intermediate|output))"
    r"/kernel$|(^|/)pooler/dense/kernel$")


def tiny(model_type="bert", **kw):
    base = dict(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37,
                max_position_embeddings=64)
    if model_type == "distilbert":
        base["type_vocab_size"] = 0
    if model_type == "roberta":
        base["pad_token_id"] = 1
    base.update(kw)
    return config_lib.ModelConfig(model_type=model_type, **base)


def flat_paths(tree, is_leaf=None):
    return {"/".join(str(k.key) for k in p): v
            for p, v in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]}


def batch(pad_id=0, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, 99, (3, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return jnp.asarray(np.where(mask == 1, ids, pad_id)), jnp.asarray(mask)


@functools.lru_cache(maxsize=None)
def model_and_params(model_type, task, **kw):
    model = bert.BertFamily(tiny(model_type, **kw), task)
    return model, bert.init_params(model, jax.random.key(0))


# --- config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", config_lib.NAMES)
def test_by_name_round_trips_through_hf_and_json(name):
    cfg = config_lib.by_name(name, num_labels=3)
    assert cfg.num_labels == 3
    assert config_lib.ModelConfig.from_hf(cfg.to_hf()) == cfg
    assert config_lib.ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_named_sizes():
    tiny_cfg = config_lib.by_name("bert-tiny")
    assert (tiny_cfg.num_layers, tiny_cfg.hidden_size, tiny_cfg.num_heads,
            tiny_cfg.intermediate_size) == (2, 128, 2, 512)
    rob = config_lib.by_name("roberta-base")
    assert (rob.pad_token_id, rob.max_position_embeddings, rob.type_vocab_size) == (1, 514, 1)
    assert config_lib.by_name("distilbert-base-uncased").num_layers == 6
    assert config_lib.by_name("bert-large-uncased").hidden_size == 1024
    assert config_lib.by_name("minilm-l6").hidden_size == 384


def test_bad_names_and_tasks_raise():
    with pytest.raises(ValueError, match="unknown model name"):
        config_lib.by_name("gpt2")
    with pytest.raises(ValueError, match="model_type"):
        tiny("gpt2")
    with pytest.raises(ValueError, match="unknown task"):
        bert.BertFamily(tiny(), "ner")
    for family in ("distilbert", "roberta"):
        with pytest.raises(ValueError, match="pretraining"):
            bert.BertFamily(tiny(family), "pretraining")
    with pytest.raises(ValueError, match="activation"):
        layers.activation("mish")


# --- param tree -------------------------------------------------------------------------------
def test_param_tree_follows_contract():
    _, params = model_and_params("bert", "pretraining")
    paths = flat_paths(params)
    for i in range(2):
        for sub in ("attention/query", "attention/key", "attention/value", "attention/output",
                    "ffn/intermediate", "ffn/output"):
            assert f"backbone/encoder/layer_{i}/{sub}/kernel" in paths
            assert f"backbone/encoder/layer_{i}/{sub}/bias" in paths
        assert f"backbone/encoder/layer_{i}/attention/layer_norm/scale" in paths
    assert paths["backbone/encoder/layer_0/ffn/intermediate/kernel"].shape == (32, 37)
    assert paths["backbone/embeddings/word_embeddings/embedding"].shape == (99, 32)
    assert paths["backbone/embeddings/token_type_embeddings/embedding"].shape == (2, 32)
    for p in ("mlm_head/bias", "mlm_head/transform/kernel", "mlm_head/layer_norm/scale",
              "nsp_head/dense/kernel", "backbone/pooler/dense/kernel"):
        assert p in paths, p
    prunable = [p for p in paths if PRUNABLE.search(p)]
    assert len(prunable) == 2 * 6 + 1
    assert all(v.dtype == jnp.float32 for v in paths.values())


@pytest.mark.parametrize("family,task,heads", [
    ("bert", "cls", {"classifier/kernel", "backbone/pooler/dense/kernel"}),
    ("roberta", "cls", {"classifier/dense/kernel", "classifier/out_proj/kernel"}),
    ("distilbert", "cls", {"classifier/dense/kernel", "classifier/out_proj/kernel"}),
    ("roberta", "qa", {"qa_outputs/kernel"}),
    ("distilbert", "mlm", {"mlm_head/transform/kernel"}),
])
def test_family_heads(family, task, heads):
    _, params = model_and_params(family, task)
    paths = set(flat_paths(params))
    assert heads <= paths
    assert ("backbone/embeddings/token_type_embeddings/embedding" in paths) == (
        family != "distilbert")
    assert not any("pooler" in p for p in paths) or family == "bert"


def test_logical_specs_match_params():
    model, params = model_and_params("bert", "pretraining")
    specs = bert.logical_specs(model)
    is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
    assert jax.tree.structure(specs, is_leaf=is_spec) == jax.tree.structure(params)
    flat = {k: tuple(v) for k, v in flat_paths(specs, is_leaf=is_spec).items()}
    assert flat["backbone/embeddings/word_embeddings/embedding"] == ("vocab", "embed")
    assert flat["backbone/encoder/layer_1/ffn/output/kernel"] == ("mlp", "embed")
    assert flat["backbone/encoder/layer_0/attention/query/kernel"] == ("embed", "heads")
    rules = (("vocab", "model"), ("mlp", "model"), ("heads", "model"), ("embed", "data"))
    for spec in jax.tree.leaves(specs, is_leaf=is_spec):  # every spec resolves under rules
        nn.logical_to_mesh_axes(tuple(spec), rules)


def test_init_some_computes_only_the_wanted_leaves_with_init_values():
    model = bert.BertFamily(tiny(), "cls")
    full = flat_paths(nn.meta.unbox(bert.init_variables(model, jax.random.key(3))))
    wanted = {"params/classifier/kernel", "params/backbone/encoder/layer_1/ffn/output/bias"}
    assert wanted <= full.keys()
    some = flat_paths(bert.init_some(model, jax.random.key(3), wanted.__contains__))
    assert some.keys() == full.keys()
    for path, x in some.items():
        if path in wanted:  # the same values as the whole init's
            np.testing.assert_array_equal(np.asarray(x), np.asarray(full[path]), err_msg=path)
        else:
            assert isinstance(x, jax.ShapeDtypeStruct), path
            assert (x.shape, x.dtype) == (full[path].shape, full[path].dtype), path
    none = bert.init_some(model, jax.random.key(3), lambda path: False)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(none))


# --- forward ----------------------------------------------------------------------------------
@pytest.mark.parametrize("family,task", [("bert", "pretraining"), ("roberta", "mlm")])
def test_masked_positions_equal_gathered_full_logits(family, task):
    model, params = model_and_params(family, task)
    ids, mask = batch(model.config.pad_token_id)
    positions = jnp.array([[0, 4, 4, 8], [1, 2, 5, 0], [2, 1, 0, 0]], jnp.int32)
    full = model.apply({"params": params}, ids, mask)
    part = model.apply({"params": params}, ids, mask, masked_positions=positions)
    gathered = jnp.take_along_axis(full["mlm_logits"], positions[..., None], axis=1)
    assert part["mlm_logits"].shape == (3, 4, 99)
    diff = float(jnp.abs(part["mlm_logits"] - gathered).max())
    print(f"masked_positions vs gathered full logits ({family}): max abs diff {diff:.2e}")
    assert diff < 1e-5
    np.testing.assert_allclose(part["nsp_logits"] if "nsp_logits" in part else 0.0,
                               full["nsp_logits"] if "nsp_logits" in full else 0.0, atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta"])
def test_padding_is_masked(family):
    model, params = model_and_params(family, "base")
    ids, mask = batch(model.config.pad_token_id)
    out = model.apply({"params": params}, ids, mask, output_attentions=True,
                      output_hidden_states=True)
    assert len(out["hidden_states"]) == 3 and len(out["attentions"]) == 2
    probs = out["attentions"][0]
    assert probs.shape == (3, 4, 9, 9)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert float(jnp.abs(probs[2, :, :, 3:]).max()) == 0.0  # no attention to padded keys
    # Other tokens in the masked (tail) slots leave the real tokens' outputs unchanged.
    out2 = model.apply({"params": params}, jnp.where(mask == 1, ids, 7), mask)
    keep = mask[..., None].astype(bool)
    np.testing.assert_allclose(jnp.where(keep, out2["last_hidden_state"], 0),
                               jnp.where(keep, out["last_hidden_state"], 0), atol=1e-5)


def test_roberta_position_ids_match_hf():
    torch = pytest.importorskip("torch")
    from transformers.models.roberta import modeling_roberta  # pylint: disable=C0415
    ids, _ = batch(pad_id=1)
    ours = layers.position_ids(tiny("roberta"), ids)
    theirs = modeling_roberta.RobertaEmbeddings.create_position_ids_from_input_ids(
        torch.tensor(np.asarray(ids)), 1)
    np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())


def test_dropout_only_when_not_deterministic():
    model, params = model_and_params("bert", "cls")
    ids, mask = batch()
    det = model.apply({"params": params}, ids, mask)["logits"]
    det2 = model.apply({"params": params}, ids, mask, rngs={"dropout": jax.random.key(5)})["logits"]
    np.testing.assert_array_equal(det, det2)
    a = model.apply({"params": params}, ids, mask, deterministic=False,
                    rngs={"dropout": jax.random.key(1)})["logits"]
    b = model.apply({"params": params}, ids, mask, deterministic=False,
                    rngs={"dropout": jax.random.key(2)})["logits"]
    assert float(jnp.abs(a - det).max()) > 1e-4 and float(jnp.abs(a - b).max()) > 1e-4


def test_regression_and_qa_shapes():
    model, params = model_and_params("distilbert", "cls", num_labels=1)
    ids, mask = batch()
    assert model.apply({"params": params}, ids, mask)["logits"].shape == (3, 1)
    model, params = model_and_params("bert", "qa")
    out = model.apply({"params": params}, ids, mask)
    assert out["start_logits"].shape == out["end_logits"].shape == (3, 9)


# --- hooks ------------------------------------------------------------------------------------
class Doubling:
    """A dot_general that doubles its result (detectable)."""

    def __call__(self, lhs, rhs, dims, precision=None, preferred_element_type=None):
        return 2 * jax.lax.dot_general(lhs, rhs, dims, precision=precision)


class CountingDotGeneral(nn.Module):
    """A linen dot_general with state, as QAT's will be (collection "quant_stats")."""

    @nn.compact
    def __call__(self, lhs, rhs, dims, precision=None, preferred_element_type=None):
        count = self.variable("quant_stats", "count", lambda: jnp.zeros((), jnp.int32))
        if self.is_mutable_collection("quant_stats"):
            count.value += 1
        return jax.lax.dot_general(lhs, rhs, dims, precision=precision)


def test_dense_injector_sees_paths_and_is_used():
    seen = []

    def injector(path):
        seen.append(path)
        return Doubling if path == "backbone/encoder/layer_1/ffn/output" else None

    cfg = tiny()
    plain = bert.BertFamily(cfg, "mlm")
    params = bert.init_params(plain, jax.random.key(0))
    ids, mask = batch()
    ref = plain.apply({"params": params}, ids, mask)["mlm_logits"]
    hooked = bert.BertFamily(cfg, "mlm", dense_injector=injector)
    out = hooked.apply({"params": params}, ids, mask)["mlm_logits"]
    assert float(jnp.abs(out - ref).max()) > 1e-3
    for p in ("backbone/encoder/layer_0/attention/query", "backbone/encoder/layer_1/ffn/output",
              "mlm_head/transform"):
        assert p in seen
    identity = bert.BertFamily(cfg, "mlm", dense_injector=lambda p: None)
    np.testing.assert_array_equal(identity.apply({"params": params}, ids, mask)["mlm_logits"], ref)


def test_stateful_injected_dot_general_and_embedding_quant():
    cfg = tiny()
    model = bert.BertFamily(cfg, "qa", dense_injector=lambda p: CountingDotGeneral)
    variables = bert.init_variables(model, jax.random.key(0))
    stats = flat_paths(variables["quant_stats"])
    assert "backbone/encoder/layer_0/attention/query/CountingDotGeneral_0/count" in stats
    ids, mask = batch()
    _, updated = model.apply(variables, ids, mask, mutable=["quant_stats"])
    assert all(int(v) >= 1 for v in jax.tree.leaves(updated))
    params = nn.meta.unbox(variables["params"])
    ref = bert.BertFamily(cfg, "qa").apply({"params": params}, ids, mask)["start_logits"]
    quantised = bert.BertFamily(cfg, "qa", embedding_quant=lambda t: jnp.round(t * 8) / 8)
    out = quantised.apply({"params": params}, ids, mask)["start_logits"]
    assert float(jnp.abs(out - ref).max()) > 1e-4


# --- dtypes, jit, grads -----------------------------------------------------------------------
def mlm_loss(model, params, ids, mask):
    logits = model.apply({"params": params}, ids, mask)["mlm_logits"]
    return -jnp.mean(jax.nn.log_softmax(logits)[..., 5])


def test_bf16_compute_keeps_fp32_params_and_is_close():
    model32, params = model_and_params("bert", "mlm")
    model16 = bert.BertFamily(dataclasses.replace(model32.config, dtype="bfloat16"), "mlm")
    ids, mask = batch()
    assert all(p.dtype == jnp.float32
               for p in jax.tree.leaves(bert.init_params(model16, jax.random.key(0))))
    out16 = model16.apply({"params": params}, ids, mask)
    out32 = model32.apply({"params": params}, ids, mask)
    assert out16["last_hidden_state"].dtype == jnp.bfloat16
    assert out16["mlm_logits"].dtype == jnp.float32
    diff = float(jnp.abs(out16["mlm_logits"] - out32["mlm_logits"]).max())
    print(f"bf16 vs fp32 mlm logits: max abs diff {diff:.3e}")
    assert diff < 0.05


def test_jit_grad_and_remat_agree():
    model, params = model_and_params("bert", "mlm", num_layers=1)  # 1 layer: compile time
    ids, mask = batch()
    remat = bert.BertFamily(model.config, "mlm", remat=True)
    loss, grads = jax.jit(jax.value_and_grad(functools.partial(mlm_loss, model)))(
        params, ids, mask)
    loss_r, grads_r = jax.jit(jax.value_and_grad(functools.partial(mlm_loss, remat)))(
        params, ids, mask)
    np.testing.assert_allclose(loss, loss_r, rtol=1e-6)
    for g, gr in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_r)):
        np.testing.assert_allclose(g, gr, atol=1e-6)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    kernel_grad = grads["backbone"]["encoder"]["layer_0"]["attention"]["query"]["kernel"]
    assert float(jnp.abs(kernel_grad).max()) > 0


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_vocab_projection_grads_equal_autodiff(dtype, tol):
    """The tied decoder's custom VJP (bias grad as a matvec) equals plain autodiff."""
    from prune_ofa_jax.models import heads
    k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
    y = jax.random.normal(k1, (3, 5, 16), dtype)
    table = jax.random.normal(k2, (50, 16), dtype)
    bias = jax.random.normal(k3, (50,), jnp.float32)
    g = jax.random.normal(k4, (3, 5, 50), jnp.float32)

    def plain(y, table, bias):
        return jnp.einsum("...h,vh->...v", y, table, preferred_element_type=jnp.float32) + bias

    out, vjp = jax.vjp(heads.vocab_projection, y, table, bias)
    ref_out, ref_vjp = jax.vjp(plain, y, table, bias)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol)
    for got, want in zip(vjp(g), ref_vjp(g)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                                   rtol=tol, atol=tol * 10)
