"""Structured pruning (sparsity/groups.py, sparsity/methods/structured.py) and the compact
exports: a group mask zeroes exactly its head's or neuron's weights and a removed unit's
biases change nothing; selection counts parameters (global and per layer); the compact ONNX
graph (fp32 and int8) equals the masked model, with the parameter count the masks leave, a
layer without heads and one without neurons included; the HF export narrows the FFN, loads
with AutoModel and gives our logits (BERT, DistilBERT; RoBERTa's layers are BERT's); a
structured movement run with int8 QAT resumes exactly; config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import train_helpers

from prune_ofa_jax import errors
from prune_ofa_jax.convert import hf
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config
from prune_ofa_jax.sparsity import groups
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.sparsity import schedules
from prune_ofa_jax.sparsity.methods import base, structured
from prune_ofa_jax.train import validate

TINY3 = {**train_helpers.TINY, "num_layers": 3}  # 2 heads of 16, FFN 64


def _model(family="bert-base-uncased", num_labels=2):
    cfg = model_config.by_name(family, **TINY3, num_labels=num_labels)
    model = bert.BertFamily(cfg, "cls")
    return cfg, model, bert.init_params(model, jax.random.key(0))


def _keep():
    """Layer 0 loses head 1 and neuron 5, layer 1 every head, layer 2 every neuron."""
    keep = {"heads": np.array([[True, False], [False, False], [True, True]]),
            "neurons": np.ones((3, 64), bool)}
    keep["neurons"][0, 5] = False
    keep["neurons"][2] = False
    return keep


def _masked(cfg, params, keep):
    masks = masks_lib.init_masks(params)
    lay = groups.layout(masks, cfg)
    m = groups.expand(lay, {k: jnp.asarray(v) for k, v in keep.items()}, masks)
    return masks_lib.apply_masks(params, m), m, lay


def _batch(cfg):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 999, (4, 12))
    att = np.ones_like(ids)
    att[1, 7:] = att[3, 3:] = 0
    ids[att == 0] = cfg.pad_token_id
    return ids, att, np.zeros_like(ids)


def test_group_masks_zero_exactly_their_units_and_biases_do_not_matter():
    cfg, model, params = _model()
    pm, m, lay = _masked(cfg, params, _keep())
    assert lay.head_cost == 4 * 32 * 16 and lay.neuron_cost == 64 and lay.total == 3 * 8192
    flat, dense, mflat = hf.flatten(pm), hf.flatten(params), hf.flatten(m)
    p0 = "backbone/encoder/layer_0"
    want = {}
    for part in ("query", "key", "value"):  # head 1 = columns 16..31
        z = np.ones((32, 32), bool)
        z[:, 16:] = False
        want[f"{p0}/attention/{part}/kernel"] = z
    want[f"{p0}/attention/output/kernel"] = want[f"{p0}/attention/query/kernel"].T
    z = np.ones((32, 64), bool)
    z[:, 5] = False
    want[f"{p0}/ffn/intermediate/kernel"], want[f"{p0}/ffn/output/kernel"] = z, z.T
    for path, keep in want.items():
        np.testing.assert_array_equal(np.asarray(mflat[path]), keep, err_msg=path)
        np.testing.assert_array_equal(np.asarray(flat[path]),
                                      np.where(keep, np.asarray(dense[path]), 0), err_msg=path)
    assert not np.asarray(mflat["backbone/encoder/layer_1/attention/value/kernel"]).any()
    assert not np.asarray(mflat["backbone/encoder/layer_2/ffn/output/kernel"]).any()
    assert np.asarray(mflat["backbone/pooler/dense/kernel"]).all()  # the pooler stays dense
    kept = groups.keep_masks(lay, m)
    np.testing.assert_array_equal(np.asarray(kept["heads"]), _keep()["heads"])
    np.testing.assert_array_equal(np.asarray(kept["neurons"]), _keep()["neurons"])
    # biases are not masked, and a removed unit's biases do not reach the output
    moved = dict(flat)
    for path, units in ((f"{p0}/attention/query/bias", slice(16, 32)),
                        (f"{p0}/attention/value/bias", slice(16, 32)),
                        (f"{p0}/ffn/intermediate/bias", slice(5, 6))):
        np.testing.assert_array_equal(np.asarray(flat[path]), np.asarray(dense[path]))
        moved[path] = np.asarray(flat[path]).copy()
        moved[path][units] += 3.0  # the removed unit's entries only
    for part in ("query", "key", "value"):
        moved[f"backbone/encoder/layer_1/attention/{part}/bias"] = np.full((32,), 5.0)
    moved["backbone/encoder/layer_2/ffn/intermediate/bias"] = np.full((64,), -2.0)
    batch = _batch(cfg)
    apply = jax.jit(model.apply)  # one compile for both calls
    a = apply({"params": pm}, *batch)["logits"]
    b = apply({"params": hf.unflatten(moved)}, *batch)["logits"]
    assert not np.allclose(np.asarray(moved[f"{p0}/ffn/intermediate/bias"])[5],
                           np.asarray(dense[f"{p0}/ffn/intermediate/bias"])[5])
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_selection_counts_parameters_globally_and_per_layer():
    lay = groups.Layout(("a", "b"), num_heads=2, head_dim=4, hidden=8, intermediate=8)
    assert (lay.head_cost, lay.neuron_cost, lay.layer_total, lay.total) == (128, 16, 384, 768)
    scores = {"heads": jnp.array([[1.0, 9.0], [2.0, 8.0]]),
              "neurons": jnp.array([[0.5, 3, 3, 3, 3, 3, 3, 3], [4, 4, 4, 4, 4, 4, 4, 0.1]])}
    # global, floor(0.39 * 768) = 299 entries: the lowest per-parameter scores first,
    # neuron b7 (0.1), neuron a0 (0.5), head a0 (1), head b0 (2): 288; a neuron at 3 would
    # overshoot, so the ranking stops there
    keep = jax.device_get(groups.select(lay, scores, 0.39, "global"))
    np.testing.assert_array_equal(keep["heads"], [[False, True], [False, True]])
    assert not keep["neurons"][0, 0] and not keep["neurons"][1, 7]
    assert (~keep["neurons"]).sum() == 2
    # uniform: each layer its own 50 % budget (192 of 384)
    keep = jax.device_get(groups.select(lay, scores, 0.5, "uniform"))
    for li in range(2):
        cut = (~keep["heads"][li]).sum() * 128 + (~keep["neurons"][li]).sum() * 16
        assert 192 - 128 < cut <= 192
    keep = jax.device_get(groups.select(lay, scores, 0.0, "global"))
    assert keep["heads"].all() and keep["neurons"].all()
    frac = groups.kept_fraction(lay, groups.select(lay, scores, 1.0, "global"))
    assert float(frac) == 0.0


@pytest.mark.parametrize("family", ["bert-base-uncased", "distilbert-base-uncased"])
def test_compact_onnx_equals_masked_model_with_the_masks_parameter_count(family, tmp_path):
    import onnx

    from prune_ofa_jax.runtime import onnx_export, ort
    cfg, model, params = _model(family, num_labels=3)
    pm, m, lay = _masked(cfg, params, _keep())
    batch = _batch(cfg)
    feeds = dict(zip(ort.INPUTS, batch))
    flat = hf.flatten(jax.device_get(pm))
    size = groups.compact_size(flat, cfg)
    assert size["layers"] == [{"heads": 1, "head_dims": 16, "ffn": 63},
                              {"heads": 0, "head_dims": 0, "ffn": 64},
                              {"heads": 2, "head_dims": 16, "ffn": 0}]
    removed_kernels = int(sum((~np.asarray(x)).sum() for x in jax.tree.leaves(m)))
    removed_biases = 3 * (3 * 16) + 65  # q/k/v biases of 3 heads, 65 intermediate biases
    assert size["dense"] - size["compact"] == removed_kernels + removed_biases
    # zero padding inside layer 2's heads (AutoTinyBERT's extracts, after a locked-pattern
    # fine-tune): dims 10..15 of both heads have zero key columns (biases trained: the term
    # is the same for every key) and zero attention-output rows, so they go too
    p2 = "backbone/encoder/layer_2/attention"
    pad = np.zeros((2, 16), bool)
    pad[:, 10:] = True
    pad = pad.reshape(-1)
    flat[f"{p2}/key/kernel"] = np.where(pad, 0.0, np.asarray(flat[f"{p2}/key/kernel"]))
    flat[f"{p2}/key/bias"] = np.where(pad, 0.5, np.asarray(flat[f"{p2}/key/bias"]))
    flat[f"{p2}/output/kernel"] = np.where(pad[:, None], 0.0,
                                           np.asarray(flat[f"{p2}/output/kernel"]))
    pm = hf.unflatten(flat)
    padded = groups.compact_size(flat, cfg)
    assert padded["layers"][2] == {"heads": 2, "head_dims": 10, "ffn": 0}
    assert size["compact"] - padded["compact"] == 4 * 12 * 32 + 3 * 12
    ref = np.asarray(model.apply({"params": pm}, *batch)["logits"])
    path = onnx_export.export(pm, cfg, tmp_path / "c.onnx")
    np.testing.assert_allclose(ort.logits(ort.session(path), feeds), ref, atol=1e-5)
    size = padded
    graph = onnx.load(str(path)).graph
    n = sum(int(np.prod(i.dims)) for i in graph.initializer if "/encoder/" in i.name
            and "layer_norm" not in i.name and i.name.endswith(("/kernel", "/bias")))
    assert n == size["compact"]
    if family != "bert-base-uncased":
        return
    # int8 with QAT-style ranges: the compact graph computes what the full one does
    quant = {"config": {"requantize_output": True},
             "ranges": {k[:-len("/kernel")]: {"input_min": -3.0, "input_max": 3.0,
                                             "output_min": -4.0, "output_max": 4.0}
                        for k in hf.flatten(params) if k.endswith("/kernel")}}
    a, b = (ort.logits(ort.session(onnx_export.export(pm, cfg, tmp_path / f"q{c}.onnx",
                                                      int8=True, quant=quant, compact=c)),
                       feeds) for c in (True, False))
    train_helpers.assert_int8_close(a, b)


@pytest.mark.parametrize("family", ["bert-base-uncased", "distilbert-base-uncased"])
def test_hf_export_narrows_the_ffn_and_loads_with_automodel(family, tmp_path):
    import torch
    import transformers
    cfg, model, params = _model(family)
    keep = _keep()
    keep["neurons"][0, 30:] = False  # layers keep 29, 40 and 40 neurons: width 40
    keep["neurons"][1, 40:] = False
    keep["neurons"][2, :40] = True
    pm, _, _ = _masked(cfg, params, keep)
    out = hf.export_hf(pm, cfg, "cls", tmp_path / "hf")
    hf_model = transformers.AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    width = keep["neurons"].sum(1).max()
    assert width == 40
    got = (hf_model.config.hidden_dim if family.startswith("distil")
           else hf_model.config.intermediate_size)
    assert got == width
    ids, att, tt = _batch(cfg)
    kw = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(att)}
    if cfg.has_token_types:
        kw["token_type_ids"] = torch.tensor(tt)
    with torch.no_grad():
        ref = hf_model(**kw).logits.numpy()
    ours = np.asarray(model.apply({"params": pm}, ids, att, tt)["logits"])
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_structured_movement_with_qat_resumes_exactly(tiny_ckpts, tmp_path, monkeypatch):
    """Killed at step 3 and resumed from 2: the same params, scores, masks and optimizer
    states as the straight run; the masks remove whole heads and neurons, within one head of
    the target; fake-quant ranges are trained (quant.enabled)."""
    from test_mask_method_runs import _learned_config
    c = _learned_config(tiny_ckpts["bert"], "structured_movement",
                        **{"quant.enabled": True, "sparsity.distribution": "global",
                           "train.steps": 4, "checkpoint.every": 2, "sparsity.end_step": 2,
                           "sparsity.freeze_step": 4})
    train_helpers.run_straight_and_killed(c, tmp_path, monkeypatch, kill_at=3)
    states = train_helpers.saved_states(tmp_path, 4)
    for key in ("params", "aux", "masks", "aux_opt_state", "quant_stats"):
        jax.tree.map(np.testing.assert_array_equal, states[0][key], states[1][key])
    cfg = model_config.by_name("bert-base-uncased", **train_helpers.TINY)
    lay = groups.layout(states[0]["masks"], cfg)
    keep = groups.keep_masks(lay, states[0]["masks"])
    again = groups.expand(lay, keep, states[0]["masks"])
    jax.tree.map(np.testing.assert_array_equal, again, states[0]["masks"])  # whole units
    removed = 1 - float(groups.kept_fraction(lay, keep))
    assert 0.5 - lay.head_cost / lay.total < removed <= 0.5
    assert jax.tree.leaves(states[0]["quant_stats"])


def test_config_errors_name_the_key():
    c = train_helpers.recipe("finetune_glue", "sst2,test")
    c.sparsity.update(enabled=True, lock_pattern=False, method="structured_magnitude",
                      target=0.5, end_step=4, update_every=1, freeze_step=6)
    validate.validate(c)
    bad = c.copy_and_resolve_references()
    bad.sparsity.pattern = "2:4"
    with pytest.raises(errors.ConfigError, match=r"^config\.sparsity\.pattern"):
        validate.validate(bad)
    cfg, _, params = _model()
    ffn_only = masks_lib.init_masks(params, include=(r"ffn/(intermediate|output)/kernel$",))
    with pytest.raises(ValueError, match=r"config\.sparsity\.include"):
        groups.layout(ffn_only, cfg)


def test_magnitude_and_soft_movement_select_whole_units():
    """structured_magnitude removes the units with the smallest weights first (a zeroed head,
    then zeroed neurons) on an update step; structured_movement_soft keeps a unit while the
    sigmoid of its mean score clears tau, and its L1 weighs units by their parameters."""
    cfg, _, params = _model()
    masks = masks_lib.init_masks(params, include=(masks_lib.ENCODER_KERNELS,))
    flat = {k: np.asarray(v).copy() for k, v in hf.flatten(params).items()}
    p1 = "backbone/encoder/layer_1"
    for part in ("query", "key", "value"):
        flat[f"{p1}/attention/{part}/kernel"][:, :16] *= 1e-3  # head 0 of layer 1: tiny
    flat[f"{p1}/attention/output/kernel"][:16] *= 1e-3
    flat[f"{p1}/ffn/intermediate/kernel"][:, :8] *= 1e-3        # neurons 0-7 of layer 1
    flat[f"{p1}/ffn/output/kernel"][:8] *= 1e-3
    # a budget of 2592 entries: the head (2048) and the 8 neurons (512); a 9th would overshoot
    sched = schedules.CubicSchedule(target=2592 / 24576, initial=0.0, begin_step=0,
                                    end_step=2, update_every=1)
    mag = structured.StructuredMagnitude(schedule=sched, distribution="global", model=cfg)
    lay = groups.layout(masks, cfg)
    keep = jax.device_get(groups.keep_masks(lay, mag.masks(hf.unflatten(flat), {}, masks, 2)))
    assert not keep["heads"][1, 0] and keep["heads"].sum() == 5
    assert not keep["neurons"][1, :8].any() and keep["neurons"].sum() == 3 * 64 - 8
    kept = jax.device_get(groups.keep_masks(lay, mag.masks(hf.unflatten(flat), {}, masks, 3)))
    assert kept["heads"].all() and kept["neurons"].all()  # not an update step: masks as given

    soft = structured.StructuredMovementSoft(schedule=sched, distribution="global", model=cfg,
                                             threshold=0.5, l1=2.0)
    sflat = hf.flatten(base.map_scored(lambda m: jnp.full(m.shape, 3.0), masks))
    sflat[f"{p1}/attention/output/kernel"] = sflat[f"{p1}/attention/output/kernel"].at[:16].set(-9)
    for part in ("query", "key", "value"):
        k = f"{p1}/attention/{part}/kernel"
        sflat[k] = sflat[k].at[:, :16].set(-9.0)
    aux = {"mask_scores": hf.unflatten(sflat)}
    keep = jax.device_get(groups.keep_masks(lay, soft.masks(params, aux, masks, 2)))
    assert not keep["heads"][1, 0] and keep["heads"].sum() == 5 and keep["neurons"].all()
    pen, metrics = soft.penalty(aux, masks, 2)
    high, low = jax.nn.sigmoid(3.0), jax.nn.sigmoid(-9.0)
    want = (high * (lay.total - lay.head_cost) + low * lay.head_cost) / lay.total
    np.testing.assert_allclose(float(metrics["mask_l1"]), float(want), rtol=1e-6)
    np.testing.assert_allclose(float(pen), 2.0 * float(want), rtol=1e-6)
