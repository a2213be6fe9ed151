"""`--config.preset=reference|fast`: one test per row of the README's preset table, checked on
the resolved config (and, where it costs no compile, on what the config builds), plus the
rules around it: explicit values win, bad names fail, preset "" keeps config_base's defaults."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import train_helpers
from absl import flags
from ml_collections import config_flags

from prune_ofa_jax import config_base, demo, errors, presets
from prune_ofa_jax.quant import fake_quant, qat
from prune_ofa_jax.train import build, loop

UPSTREAM = ("prune_ofa_bert_base", "85")


def _recipe(name, arg, preset=None, **over):
    c = train_helpers.recipe(name, arg, resolve=False)
    if preset is not None:
        c.preset = preset
    c.update_from_flattened_dict(over)  # {"data.seq_len": 128, ...}
    return presets.resolve(c)


def _cli(*argv):
    """The config exactly as main.py parses it from the command line."""
    argv = ["main", *argv]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, sys_argv=argv)
    fv(argv)
    return fv.config


def test_recipes_default_to_reference_others_to_none():
    for name, arg in (UPSTREAM, ("prune_ofa_distilbert", "90"), ("prune_ofa_bert_large", "90"),
                      ("finetune_glue", "mrpc"), ("finetune_squad", ""), ("qat", "sst2")):
        assert train_helpers.recipe(name, arg, resolve=False).preset == "reference", name
    assert train_helpers.recipe("teacher_prep", "", resolve=False).preset == ""
    assert train_helpers.recipe("demo", "", resolve=False).pipeline.preset == ""


def test_row_mlm_distillation_positions():
    ref = _recipe(*UPSTREAM)
    assert ref.distill.mlm_positions_only is False and ref.distill.fused_chunk > 0
    assert _recipe(*UPSTREAM, preset="fast").distill.mlm_positions_only is True


def test_row_pruned_weights_regrow():
    assert _recipe(*UPSTREAM).sparsity.regrow is True
    assert _recipe(*UPSTREAM, preset="fast").sparsity.regrow is False
    assert build.make_method(_recipe(*UPSTREAM)).regrow is True


@pytest.mark.parametrize("preset", ["reference", "fast"])
def test_row_last_mask_update_at_80k_inclusive(preset):
    sched = build.make_method(_recipe(*UPSTREAM, preset=preset)).schedule
    steps = jnp.arange(0, 100_001)
    updates = np.flatnonzero(np.asarray(jax.jit(jax.vmap(sched.is_update_step))(steps)))
    assert updates[-1] == 80_000 and sched.last_update_step == 80_000
    assert len(updates) == 81 and np.all(np.diff(updates) == 1_000)  # 0, 1k, ..., 80k


def test_row_upstream_seq_len_and_override():
    assert _recipe(*UPSTREAM).data.seq_len == 512
    assert _recipe(*UPSTREAM, preset="fast").data.seq_len == 128
    assert _recipe(*UPSTREAM, **{"data.seq_len": 128}).data.seq_len == 128  # phase 1 of two
    assert _recipe("teacher_prep", "").data.seq_len == 128  # no preset: as before


def test_row_max_predictions_follow_seq_len():
    assert _recipe(*UPSTREAM).data.max_predictions == 77          # round(0.15 * 512)
    assert _recipe(*UPSTREAM, preset="fast").data.max_predictions == 19
    assert _recipe(*UPSTREAM, **{"data.max_predictions": 60}).data.max_predictions == 60
    assert _recipe("teacher_prep", "").data.max_predictions == 20  # no preset: as before
    with pytest.raises(errors.ConfigError,
                       match=r"config\.data\.max_predictions.*data\.max_predictions=77 or "
                             r"leave it unset"):
        _recipe(*UPSTREAM, **{"data.max_predictions": 20})  # 3.9 % of 512 tokens


def test_row_adam_eps_and_qat_ema():
    for preset in ("reference", "fast"):
        c = _recipe("qat", "sst2", preset=preset)
        assert c.optim.eps == 1e-8 and c.quant.ema_decay == 0.99


class _Head(nn.Module):
    """Three Dense layers named as in the model, each with a nonzero bias."""
    injector: object

    @nn.compact
    def __call__(self, x):
        out = {}
        for path in ("encoder/layer_0/attention/query", "encoder/layer_0/attention/value",
                     "classifier"):
            out[path] = nn.Dense(8, dot_general_cls=self.injector(path),
                                 bias_init=nn.initializers.constant(0.3), name=path.replace(
                                     "/", "_"))(x)
        return out


def test_row_qat_output_requantized_after_bias_with_exclusions():
    c = _recipe("qat", "sst2")
    qcfg = qat.QuantConfig.from_dict(
        {k: v for k, v in c.quant.to_dict().items() if k != "enabled"})
    for path, requant in (("backbone/encoder/layer_0/attention/query", True),
                          ("backbone/encoder/layer_3/ffn/intermediate", True),
                          ("backbone/encoder/layer_3/ffn/output", True),
                          ("backbone/pooler/dense", True),
                          ("backbone/encoder/layer_0/attention/output", False),
                          ("backbone/encoder/layer_0/attention/value", False),
                          ("classifier", False), ("classifier/out_proj", False)):
        assert qcfg.requantizes(path) is requant, path
    model = _Head(qat.make_injector(qcfg))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 16)), jnp.float32)
    v = model.init(jax.random.key(0), x)
    y, m = model.apply(v, x, mutable=["quant_stats"])
    query = m["quant_stats"]["encoder_layer_0_attention_query"]["qat"]
    scale, zp = fake_quant.asymmetric_params(query["output_min"], query["output_max"])
    levels = y["encoder/layer_0/attention/query"] / scale + zp  # the biased output is on grid
    np.testing.assert_allclose(levels, jnp.round(levels), atol=2e-3)
    for name in ("encoder_layer_0_attention_value", "classifier"):
        assert "output_min" not in m["quant_stats"][name]["qat"], name


def test_row_qat_is_the_finetune_plus_quant_and_kd():
    ft = _recipe("finetune_glue", "mnli")
    q = _recipe("qat", "mnli")
    assert q.quant.enabled and not ft.quant.enabled
    for key in ("train.epochs", "train.steps", "train.batch_size", "optim.lr",
                "optim.warmup_fraction", "optim.warmup_steps", "data.seq_len"):
        node_q, node_f = q, ft
        for part in key.split("."):
            node_q, node_f = node_q[part], node_f[part]
        assert node_q == node_f, key
    kd = _recipe("qat", "mnli", **{"teacher.path": "/teacher"}).distill
    assert (kd.kd_weight, kd.task_weight, kd.temperature) == (0.5, 0.5, 2.0)
    assert q.distill.kd_weight == 0.0  # no teacher, no KD


def test_row_finetune_epochs_batch_seq_and_kd():
    glue = _recipe("finetune_glue", "stsb", **{"teacher.path": "/teacher"})
    assert (glue.train.epochs, glue.train.batch_size, glue.data.seq_len) == (3, 32, 128)
    assert glue.distill.kd_weight == 0.5 and glue.optim.warmup_fraction == 0.1
    squad = _recipe("finetune_squad", "")
    assert (squad.train.epochs, squad.train.batch_size, squad.data.seq_len) == (2, 12, 384)
    assert squad.distill.kd_weight == 0.0
    sources = types.SimpleNamespace(train=types.SimpleNamespace(steps_per_epoch=1_234))
    steps = presets.resolve_steps(glue, sources)
    assert steps.train.steps == 3 * 1_234 and steps.optim.warmup_steps == 370  # 10 %
    assert glue.train.steps != steps.train.steps  # a copy
    explicit = _recipe("finetune_glue", "sst2", **{"optim.warmup_steps": 5})
    assert presets.resolve_steps(explicit, sources).optim.warmup_steps == 5
    with pytest.raises(errors.ConfigError, match="config.train.epochs"):
        presets.resolve_steps(glue, types.SimpleNamespace(train=object()))


def test_command_line_beats_preset():
    c = presets.resolve(_cli(f"--config={train_helpers.REPO}/configs/prune_ofa_bert_base.py:90",
                             "--config.preset=fast", "--config.sparsity.regrow=True",
                             "--config.data.seq_len=256", "--config.optim.eps=1e-6"))
    assert (c.preset, c.sparsity.regrow, c.distill.mlm_positions_only) == ("fast", True, True)
    assert (c.data.seq_len, c.data.max_predictions, c.optim.eps) == (256, 38, 1e-6)
    g = presets.resolve(_cli(f"--config={train_helpers.REPO}/configs/finetune_glue.py:rte",
                             "--config.train.epochs=0", "--config.train.steps=50",
                             "--config.distill.kd_weight=0.0", "--config.teacher.path=/t"))
    assert presets.resolve_steps(g).train.steps == 50 and g.distill.kd_weight == 0.0


def test_unknown_preset_is_a_config_error(tmp_path):
    c = config_base.base()
    c.preset = "paper"
    with pytest.raises(errors.ConfigError, match=r"config\.preset"):
        presets.resolve(c)
    with pytest.raises(errors.ConfigError, match=r"config\.preset"):
        loop.run(c, tmp_path)  # before anything is built


def test_no_preset_keeps_config_base_defaults():
    c = config_base.base()
    r = presets.resolve(c)
    assert (r.distill.mlm_positions_only, r.sparsity.regrow, r.distill.kd_weight) == (
        True, False, 0.0)
    assert (r.data.seq_len, r.data.max_predictions, r.optim.eps) == (128, 20, 1e-6)
    assert (r.quant.ema_decay, r.quant.requantize_output, r.quant.requantize_exclude) == (
        0.9999, False, ())
    assert c.data.seq_len is None and presets.is_resolved(r)  # resolve returns a copy


def test_demo_and_test_variants_stay_small_and_fast(tmp_path):
    p = train_helpers.recipe("demo", "", resolve=False).pipeline
    for name, (cfg, _) in demo.stage_configs(p, tmp_path).items():
        r = presets.resolve(cfg)
        assert r.preset == "" and r.train.epochs == 0, name
        assert (r.sparsity.regrow, r.distill.mlm_positions_only, r.optim.eps) == (
            False, True, 1e-6), name
    for name, arg in (("prune_ofa_bert_base", "test"), ("finetune_glue", "sst2,test"),
                      ("qat", "sst2,test")):
        r = train_helpers.recipe(name, arg)
        assert r.preset == "fast" and r.data.seq_len <= 64 and r.train.epochs == 0, name
        assert r.train.steps == 8 and r.model.overrides.num_layers == 2, name
