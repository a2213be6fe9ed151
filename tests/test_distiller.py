"""Distiller: augmentation (deterministic per seed, valid rows and labels), the EMD layer map,
intermediate objectives switched on by config in the upstream and fine-tuning :test recipes,
critics that checkpoint and resume exactly and are never exported, and config errors."""

import jax
import numpy as np
import pytest
import train_helpers

from prune_ofa_jax import checkpoint as ckpt_lib
from prune_ofa_jax import errors
from prune_ofa_jax.data import classification, glue, tokenization
from prune_ofa_jax.distill import augment_batches, augment_ops, emd, layer_kd
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.train import build, synthetic, validate


@pytest.fixture(scope="module")
def mrpc(shared_data):
    tok = tokenization.load_tokenizer()
    ex = glue.load("mrpc", "train", data_dir=shared_data / "glue").subset(np.arange(24))
    return tok, classification.ClassificationDataset(ex, tok, max_len=40, batch_size=8, seed=0)


def _check_rows(out, vocab, max_len, pair=True):
    ids, mask, tt = out["input_ids"], out["attention_mask"], out["token_type_ids"]
    assert ids.shape[1] == max_len
    lengths = mask.sum(1)
    for r in range(len(ids)):
        n = int(lengths[r])
        assert mask[r, :n].all() and not mask[r, n:].any()          # a prefix of ones
        real = ids[r, :n]
        assert real[0] == 101 and real[-1] == 102                   # [CLS] ... [SEP]
        seps = np.flatnonzero(real == 102)
        assert len(seps) == (2 if pair else 1)
        assert (tt[r, :seps[0] + 1] == 0).all() and (tt[r, seps[0] + 1:n] == 1).all()
        assert not vocab.special[real[1:-1]][real[1:-1] != 102].any()  # no [MASK]/[PAD] left


def test_augmentation_is_seeded_and_keeps_rows_and_labels_valid(mrpc, tiny_ckpts):
    tok, ds = mrpc
    vocab = augment_ops.Vocab.from_tokenizer(tok)
    arrays = {k: np.asarray(v, np.int64) for k, v in ds.arrays.items() if k != "labels"}
    real = arrays["attention_mask"].astype(bool)
    for kind in ("swap", "delete"):
        a = augment_ops.edit_rows(arrays, kind, 0.2, seed=3, vocab=vocab)
        b = augment_ops.edit_rows(arrays, kind, 0.2, seed=3, vocab=vocab)
        c = augment_ops.edit_rows(arrays, kind, 0.2, seed=4, vocab=vocab)
        jax.tree.map(np.testing.assert_array_equal, a, b)
        assert any((a[k] != c[k]).any() for k in a)
        _check_rows(a, vocab, 40)
        for r in range(len(arrays["input_ids"])):
            before = sorted(arrays["input_ids"][r][real[r]])
            after = sorted(a["input_ids"][r][a["attention_mask"][r] > 0])
            if kind == "swap":   # the same tokens, in another order
                assert after == before and not (a["input_ids"][r] == arrays["input_ids"][r]).all()
            else:                # tokens only removed
                assert len(after) < len(before) and not (set(after) - set(before))
    model, params = augment_batches._load_mlm(tiny_ckpts["bert"])  # pylint: disable=protected-access
    a = augment_ops.contextual_rows(arrays, model, params, 0.2, 5, vocab, top_k=5, batch_size=16)
    b = augment_ops.contextual_rows(arrays, model, params, 0.2, 5, vocab, top_k=5, batch_size=16)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    _check_rows(a, vocab, 40)
    changed = a["input_ids"] != arrays["input_ids"]
    assert changed.any(1).all()                              # every row got a substitution
    assert vocab.word[a["input_ids"][changed]].all()         # words replaced by words
    assert vocab.word[arrays["input_ids"][changed]].all()
    np.testing.assert_array_equal(a["attention_mask"], arrays["attention_mask"])

    class Cfg:  # the config.augment fields the dataset reads
        kinds, copies, pool_rows, rate, mlm_path, mlm_top_k, fraction, mixup_alpha = (
            ("swap", "contextual", "mixup"), 2, 10, 0.2, tiny_ckpts["bert"], 5, 0.5, 0.4)
    data = augment_batches.AugmentedDataset(ds, tok, Cfg, seed=1)
    again = augment_batches.AugmentedDataset(ds, tok, Cfg, seed=1)
    assert len(data.pool["source"]) == 2 * 10 and data.steps_per_epoch == 6
    assert len(set(data.pool["source"][:10]) | set(data.pool["source"][10:])) > 10
    for step in (0, 7):
        batch = data.batch(step)
        jax.tree.map(np.testing.assert_array_equal, batch, again.batch(step))
        w, lam = batch["label_weights"], batch["mix_lambda"]
        np.testing.assert_array_equal(w, [1] * 4 + [0] * 4)  # pool rows: teacher labels only
        assert (lam[:4] == 1).all() and ((lam[4:] >= 0) & (lam[4:] <= 1)).all()
        assert set(batch["labels"]) <= {0, 1} and set(batch["mix_labels"]) <= {0, 1}
        assert batch["input_ids"].shape == batch["mix_ids"].shape == (8, 40)
        np.testing.assert_array_equal(batch["attention_mask"][:4].sum(1),
                                      (batch["input_ids"][:4] != 0).sum(1))
    # a pool row's label is its source row's
    src = data.pool["source"][data.aug_rows.global_indices(0)]
    np.testing.assert_array_equal(data.global_batch(0)["labels"][4:], ds.arrays["labels"][src])


def test_emd_plan_has_uniform_marginals_and_follows_the_costs():
    cost = np.full((3, 6), 5.0)
    for s, t in ((0, 1), (1, 3), (2, 5)):
        cost[s, t] = cost[s, t - 1] = 0.0        # each student layer has two cheap partners
    loss, plan = emd.emd_loss(jax.numpy.asarray(cost))
    np.testing.assert_allclose(plan.sum(1), 1 / 3, atol=1e-4)
    np.testing.assert_allclose(plan.sum(0), 1 / 6, atol=1e-4)
    assert float(loss) < 0.01 and np.asarray(plan)[cost > 0].sum() < 1e-3
    pairs = layer_kd.layer_pairs(layer_kd.spec_lib.Spec(layer_map="emd"), 3, 6)
    assert len(pairs) == 18
    assert layer_kd.layer_pairs(layer_kd.spec_lib.Spec(layer_map="skip"), 3, 6) == (
        (0, 1), (1, 3), (2, 5))
    assert layer_kd.layer_pairs(layer_kd.spec_lib.Spec(layer_map="last"), 3, 6) == (
        (0, 3), (1, 4), (2, 5))


def _batch(c, seed):
    return synthetic.batch(c.task, c.train.batch_size, c.data.seq_len, 30522,
                           max_predictions=c.data.max_predictions, num_labels=c.num_labels,
                           seed=seed)


def _one_device():
    return mesh_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1])


def test_mi_objective_on_the_upstream_recipe(tiny_ckpts):
    """prune_ofa_bert_base:test + MI-alpha over the EMD map: one critic per layer pair, all
    trained by the step (their params move), and the metrics logged. (One device: the
    sharded steps are the same program, tested in test_train_steps.py.)"""
    c = train_helpers.recipe("prune_ofa_bert_base", "test", init=tiny_ckpts["bert"],
                             teacher=tiny_ckpts["bert"])
    c.update_from_flattened_dict({"distill.intermediate": "mi_alpha", "distill.layer_map": "emd",
                                  "distill.attention_weight": 0.5})
    validate.validate(c)
    run = build.build(c, mesh=_one_device())
    critics = run.state.aux[layer_kd.AUX_NAME]
    assert sorted(critics) == [f"critic_s{s}_t{t}" for s in range(2) for t in range(2)]
    before = jax.tree.map(np.array, critics)
    state, m = run.step_fn(run.state, run.teacher_params, mesh_lib.global_batch(_batch(c, 0),
                                                                                run.mesh))
    assert np.isfinite(float(m["loss"])) and {"inter_mi_alpha", "mi_nats", "attn_kl"} <= set(m)
    assert float(m["inter_mi_alpha"]) == pytest.approx(-float(m["mi_nats"]), abs=1e-4)
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()),
                         state.aux[layer_kd.AUX_NAME], before)
    for name in critics:  # the EMD plan weights every pair, so every critic learns
        assert moved[name]["g_student"]["out"]["kernel"] > 0, name
        assert moved[name]["g_teacher"]["out"]["kernel"] > 0, name


def test_critics_checkpoint_resume_exactly_on_the_finetune_recipe(tiny_ckpts, tmp_path):
    """finetune_glue:sst2,test + MI-alpha (skip map): the aux critics and their optimizer
    state go through an Orbax checkpoint bit for bit; the resumed run's next steps equal
    the uninterrupted run's; the params (what is exported) hold no critic."""
    teacher = train_helpers.save_tiny(tmp_path / "teacher", task="cls", seed=1)
    c = train_helpers.recipe("finetune_glue", "sst2,test", init=tiny_ckpts["bert"],
                             teacher=teacher)
    c.update_from_flattened_dict({"distill.kd_weight": 0.5, "distill.intermediate": "mi_alpha",
                                  "distill.logit_loss": "soft_ce"})
    mesh = _one_device()
    batches = [mesh_lib.global_batch(_batch(c, i), mesh) for i in range(4)]
    run = build.build(c, mesh=mesh)
    state = run.state
    for b in batches[:2]:
        state, _ = run.step_fn(state, run.teacher_params, b)
    manager = ckpt_lib.make_manager(tmp_path / "ckpt", async_save=False)
    ckpt_lib.save(manager, 2, state, {"signature": {}})
    saved = jax.tree.map(np.array, (state.aux, state.aux_opt_state))
    for b in batches[2:]:
        state, m = run.step_fn(state, run.teacher_params, b)
    fresh = build.build(c, mesh=mesh)
    resumed, _ = ckpt_lib.restore_latest(manager, fresh.state, {"signature": {}})
    jax.tree.map(np.testing.assert_array_equal, saved,
                 jax.tree.map(np.array, (resumed.aux, resumed.aux_opt_state)))
    for b in batches[2:]:
        resumed, m2 = fresh.step_fn(resumed, fresh.teacher_params, b)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.array, state.aux),
                 jax.tree.map(np.array, resumed.aux))
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.array, state.params),
                 jax.tree.map(np.array, resumed.params))
    assert float(m["mi_nats"]) == float(m2["mi_nats"])
    assert sorted(state.aux[layer_kd.AUX_NAME]) == ["critic_s0_t0", "critic_s1_t1"]
    assert not any("critic" in jax.tree_util.keystr(k)
                   for k, _ in jax.tree_util.tree_leaves_with_path(state.params))


@pytest.mark.parametrize("over,match", [
    ({"distill.intermediate": "mine"}, "config.distill.intermediate"),
    ({"distill.intermediate": "mi_alpha", "distill.mi_alpha": 1.5}, "config.distill.mi_alpha"),
    ({"distill.layer_map": "first"}, "config.distill.layer_map"),
    ({"distill.kd_weight": 0.0}, "config.distill.kd_weight"),
    ({"distill.logit_loss": "kld"}, "config.distill.logit_loss"),
    ({"augment.kinds": ("contextual",)}, "config.augment.mlm_path"),
])
def test_bad_distiller_config_names_the_key(tiny_ckpts, over, match):
    c = train_helpers.recipe("finetune_glue", "sst2,test", init=tiny_ckpts["bert"],
                             teacher=tiny_ckpts["bert"])
    c.update_from_flattened_dict({"distill.kd_weight": 0.5, "distill.intermediate": "mse"})
    c.update_from_flattened_dict(over)
    with pytest.raises(errors.ConfigError, match=match):
        validate.validate(c)
