"""Smoke test of the benchmark machinery (never of speed): a 1-layer BERT, one timed step
per variant, every figure written to bench.json as a positive finite ratio."""

import json
import math

from prune_ofa_jax.bench import core, obs_bench, settings, variants
from prune_ofa_jax.runtime import ort

TINY = ("num_layers=1,hidden_size=32,num_heads=2,intermediate_size=64,vocab_size=512,"
        "max_position_embeddings=64")


def _tiny_config(extras: bool):
    bc = settings.get_config()
    bc.model, bc.overrides = "bert-tiny", TINY
    bc.batch_size, bc.seq_len, bc.max_predictions = 4, 16, 3
    bc.steps, bc.warmup, bc.pause_s = 1, 1, 0.0
    bc.fast_compile, bc.extras, bc.time_budget_s = True, extras, 1e9
    return bc


def _assert_ratio(key, fig):
    for name in ("value", "ratio", "paired_ratio", "min_ratio", "cpu_ratio"):
        assert math.isfinite(fig[name]) and fig[name] > 0, (key, name, fig)


def test_bench_writes_every_figure(tmp_path):
    result = core.run(_tiny_config(extras=False), str(tmp_path), log=lambda *_: None)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert set(data["figures"]) == set(core.FIGURES)
    assert data["figures"]["accelerator"] == {"skipped": "no accelerator"}
    for key in ("reference_kd_vs_dense_all_positions", "reference_kd_vs_naive",
                "prune_ofa_vs_dense", "prune_ofa_full_vocab_vs_dense", "teacher_kd_cost",
                "mask_overhead", "qat_overhead", "ours_vs_hf_torch"):
        _assert_ratio(key, data["figures"][key])
        assert data["figures"][key] == result["figures"][key]
    for name in variants.kinds(extras=False) + ["torch_full"]:
        step = data["steps"][name]
        assert step["median_s"] > 0 and math.isfinite(step["last_loss"]), (name, step)
    assert data["machine"]["versions"]["jax"] and data["machine"]["cores"] >= 1
    assert data["machine"]["int8_exact"] == ort.int8_exact()  # the CPU's flags, recorded
    assert data["model_config"]["num_layers"] == 1
    mem = data["figures"]["reference_kd_peak_memory_ratio"]
    assert mem["value"] > 0 and mem["target"] == 1.25 and isinstance(mem["met"], bool)
    assert mem["numerator_bytes"] > 0 and mem["denominator_bytes"] > 0


def test_kd_suite_runs_only_the_reference_kd_figures(tmp_path):
    bc = _tiny_config(extras=False)
    bc.suite = "kd"
    core.run(bc, str(tmp_path), log=lambda *_: None)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert set(data["steps"]) == set(variants.KD_SUITE)  # no torch, no other variant
    fig = data["figures"]["reference_kd_vs_dense_all_positions"]
    _assert_ratio("reference_kd_vs_dense_all_positions", fig)
    assert fig["target"] == 1.40 and fig["numerator"] == "reference_kd"
    assert data["figures"]["reference_kd_peak_memory_ratio"]["value"] > 0


def test_presets_suite_times_each_reference_choice_alone(tmp_path):
    bc = _tiny_config(extras=False)
    bc.suite = "presets"
    core.run(bc, str(tmp_path), log=lambda *_: None)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert set(data["steps"]) == set(variants.PRESETS_SUITE)  # no torch, no other variant
    for key in ("preset_all_token_kd_cost", "preset_regrow_cost",
                "preset_reference_vs_fast_step", "preset_seq512_cost_per_token",
                "preset_requant_cost"):
        _assert_ratio(key, data["figures"][key])
        assert data["figures"][key]["denominator"] in variants.PRESETS_SUITE
    # Each variant differs from fast's step in its own switch only.
    base = variants.base_config(bc.model, bc.overrides, bc.dtype, bc.batch_size, bc.seq_len,
                                bc.max_predictions, bc.sparsity_target, bc.seed)
    cfg = {k: variants.variant_config(base, k, "t") for k in variants.PRESETS_SUITE}
    assert cfg["prune_ofa_regrow"].sparsity.regrow and not cfg["prune_ofa"].sparsity.regrow
    ref = cfg["reference_step"]
    assert ref.sparsity.regrow and not ref.distill.mlm_positions_only
    assert ref.distill.fused_chunk > 0
    assert cfg["qat"].quant.requantize_output and not cfg["qat_no_requant"].quant.requantize_output
    long, short = cfg["dense_long"], cfg["dense"]
    assert (long.train.batch_size * 4, long.data.seq_len) == (short.train.batch_size,
                                                             short.data.seq_len * 4)


def test_figures_from_fake_times_cover_every_variant():
    names = list(core.ORDER)
    times = {n: [1.0 + 0.1 * i, 1.1 + 0.1 * i, 0.9 + 0.1 * i] for i, n in enumerate(names)}
    figs = core.figures(times, times, flop_ratio=1.33, update_every=1000)
    # the two figures figures() does not make: the accelerator's and compiled peak memory
    assert set(figs) | {"accelerator", "reference_kd_peak_memory_ratio"} == set(core.FIGURES)
    for key, fig in figs.items():
        _assert_ratio(key, fig)
    # Speed-ups are den/num: torch_full (index 0) over mlm_full_vocab (index 1) < 1 here.
    assert figs["ours_vs_hf_torch"]["value"] < 1 and not figs["ours_vs_hf_torch"]["met"]
    assert figs["mask_overhead"]["overhead_pct"] > 0


def test_accelerator_section_runs_when_forced_on_cpu(tmp_path):
    """The GPU/TPU MFU section, forced onto the 8 CPU devices with a tiny model and a stated
    peak, so its code path is exercised before any session has an accelerator."""
    bc = _tiny_config(extras=False)
    bc.accel_only, bc.accel.force, bc.accel.peak_flops = True, True, 1e12
    bc.accel.model, bc.accel.overrides, bc.accel.dtype = "bert-tiny", TINY, "bfloat16"
    bc.accel.batch_size, bc.accel.seq_len, bc.accel.max_predictions = 1, 16, 3
    bc.accel.warmup, bc.accel.steps = 1, 1
    result = core.run(bc, str(tmp_path), log=lambda *_: None)
    fig = json.loads((tmp_path / "bench.json").read_text())["figures"]["accelerator"]
    assert set(result["figures"]) == {"accelerator"}
    assert fig["global_batch"] == 8 and fig["devices"] == 8 and fig["dtype"] == "bfloat16"
    prune, dense = fig["prune_ofa"], fig["dense"]
    # the teacher's forward is counted: student 3x forward + teacher 1x = 4/3 of dense
    assert prune["flops_per_step"]["teacher"] * 3 == prune["flops_per_step"]["student"]
    assert prune["flops_per_step"]["total"] * 3 == dense["flops_per_step"]["total"] * 4
    for step in (prune, dense):
        assert step["samples_per_s"] > 0 and 0 < step["mfu"] < 1, step
    assert fig["met"] == (prune["mfu"] >= 0.45)
    ratio = fig["prune_ofa_vs_dense"]
    assert all(math.isfinite(ratio[k]) and ratio[k] > 0 for k in ("ratio", "min_ratio"))


def test_obs_suite_writes_its_figures(tmp_path):
    bc = _tiny_config(extras=False)
    bc.suite, bc.steps = "obs", 2
    bc.obs.block_size = 8
    result = obs_bench.run(bc, str(tmp_path), log=lambda *_: None)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert set(data["figures"]) == set(obs_bench.FIGURES) == set(result["figures"])
    for key in ("obs_fisher_step_vs_train_step", "obs_idle_step_vs_gmp_step"):
        _assert_ratio(key, data["figures"][key])
    prune = data["figures"]["obs_prune_s_per_1m_weights"]
    # one layer's q, k, v, o and FFN kernels, and the pooler (the upstream recipe's cover)
    assert prune["value"] > 0 and prune["prunable_weights"] == 5 * 32 * 32 + 2 * 32 * 64
    fb = data["figures"]["obs_fisher_bytes"]
    assert fb["total"] == fb["blocks"] * 8 * 8 * 4 and fb["per_device_of_8"] * 8 >= fb["total"]
    assert set(data["steps"]) == {"gmp", "obs_idle", "obs_window"}
