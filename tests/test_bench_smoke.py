"""Smoke test of the benchmark machinery (never of speed): a 1-layer BERT, one timed step
per variant, every figure written to bench.json as a positive finite ratio."""

import json
import math

from prune_ofa_jax.bench import core, settings, variants

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
    for key in ("prune_ofa_vs_dense", "prune_ofa_full_vocab_vs_dense", "teacher_kd_cost",
                "mask_overhead", "qat_overhead", "ours_vs_hf_torch"):
        _assert_ratio(key, data["figures"][key])
        assert data["figures"][key] == result["figures"][key]
    for name in variants.kinds(extras=False) + ["torch_full"]:
        step = data["steps"][name]
        assert step["median_s"] > 0 and math.isfinite(step["last_loss"]), (name, step)
    assert data["machine"]["versions"]["jax"] and data["machine"]["cores"] >= 1
    assert data["model_config"]["num_layers"] == 1


def test_figures_from_fake_times_cover_every_variant():
    names = list(core.ORDER)
    times = {n: [1.0 + 0.1 * i, 1.1 + 0.1 * i, 0.9 + 0.1 * i] for i, n in enumerate(names)}
    figs = core.figures(times, times, flop_ratio=1.33, update_every=1000)
    assert set(figs) | {"accelerator"} == set(core.FIGURES)
    for key, fig in figs.items():
        _assert_ratio(key, fig)
    # Speed-ups are den/num: torch_full (index 0) over mlm_full_vocab (index 1) < 1 here.
    assert figs["ours_vs_hf_torch"]["value"] < 1 and not figs["ours_vs_hf_torch"]["met"]
    assert figs["mask_overhead"]["overhead_pct"] > 0
