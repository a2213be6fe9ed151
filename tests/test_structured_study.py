"""The structured study at its :test size (real SST-2 rows, the tiny BERT): a teacher, a dense
and a structured row, their compact sizes and latencies, the page written by the command line
on the same settings (a rerun: every piece done before); its derived rows cut from a
teacher: the first k layers (with the head), and an AutoTinyBERT architecture whose zero
padding the compact ONNX graph drops (logits equal)."""

import json

import jax
import numpy as np
import train_helpers

from prune_ofa_jax.convert import hf, params_ckpt
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config
from prune_ofa_jax.nas import extract, space
from prune_ofa_jax.sparsity import groups
from prune_ofa_jax.study import structured_models, structured_report, structured_study


def test_structured_study_test_size_and_its_page(tiny_ckpts, shared_data, tmp_path, capsys):
    p = structured_study.get_config("test")
    p.base_model, p.data_root = tiny_ckpts["bert"], str(shared_data)
    work = tmp_path / "work"
    summary = structured_study.run(p, work)
    names = sorted(d.name for d in work.iterdir() if (d / "report.json").exists())
    assert names == ["sst2_dense_s0", "sst2_st50_s0", "sst2_teacher"]
    t = summary["tasks"]["sst2"]
    st, dense = t["rows"]["st50"], t["rows"]["dense"]
    assert 0.5 - 2048 / 16384 < st["removed"] <= 0.5  # within one head of the target
    assert st["encoder_params"] < dense["encoder_params"] == st["encoder_params_dense"]
    assert set(st["latency"]) == {"1", "2"} and dense["latency"]["2"]["speedup"] == 1.0
    assert st["vs_dense"]["n"] == 1 and st["vs_dense"]["verdict"] == "n < 2"
    assert t["majority"] >= 0.5 and t["dev_rows"] == 872
    assert [x["x"] for x in t["budgets"]["1"]] == list(structured_report.BUDGETS)

    text, out, end = train_helpers.study_rerun_into_page(
        structured_study.STUDY, "structured_study.py", p, work, tmp_path, capsys)
    assert out.count("done before, skipping") == 4  # 3 runs and the latency
    assert "\nold\n" not in text and "](structured.png)" in text
    assert text.endswith(f"{end}\n## After\n") and "| structured 50 % | 1 |" in text
    assert (tmp_path / "repo" / "structured.png").stat().st_size > 10_000
    again = json.loads((work / "summary.json").read_text())
    assert again["tasks"]["sst2"]["rows"]["st50"]["per_seed"] == st["per_seed"]


def test_derived_rows_layer_drop_and_autotinybert_padding(tmp_path):
    from prune_ofa_jax.runtime import onnx_export, ort
    cfg = model_config.by_name("bert-base-uncased", **train_helpers.TINY, num_labels=2)
    model = bert.BertFamily(cfg, "cls")
    params = bert.init_params(model, jax.random.key(0))
    params_ckpt.save_params(tmp_path / "teacher" / "model", params, cfg, "cls")
    p = structured_study.get_config("test")
    drop = structured_models.derived(p, tmp_path, "sst2", tmp_path / "teacher",
                                     dict(family="layer_drop", level=1))
    dp, dcfg, task = params_ckpt.load_params(drop)
    assert dcfg.num_layers == 1 and task == "cls" and list(dp["backbone"]["encoder"]) == ["layer_0"]
    np.testing.assert_array_equal(np.asarray(dp["classifier"]["kernel"]),
                                  np.asarray(params["classifier"]["kernel"]))
    # the AutoTinyBERT row's extraction (structured_models.derived runs its command)
    arch = space.Arch(**structured_models.arch_of("1/32/48/12"))
    sub, acfg = extract.submodel(params, cfg, arch)
    ap = {**jax.device_get(sub), "classifier": jax.device_get(params["classifier"])}
    flat = {k: np.asarray(v) for k, v in hf.flatten(ap).items()}
    size = groups.compact_size(flat, acfg)
    assert size["layers"] == [{"heads": 2, "head_dims": 6, "ffn": 48}]  # 2 heads of 6 real dims
    amodel = bert.BertFamily(acfg, "cls")
    ids = np.random.default_rng(0).integers(5, 999, (3, 10))
    feeds = dict(zip(ort.INPUTS, (ids, np.ones_like(ids), np.zeros_like(ids))))
    got = ort.logits(ort.session(onnx_export.export(ap, acfg, tmp_path / "a.onnx")), feeds)
    ref = np.asarray(amodel.apply({"params": ap}, *feeds.values())["logits"])
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_timed_runs_every_seed_of_the_structured_rows_or_the_first():
    """Latency: the dense model first; the structured rows' every seed (their shapes differ
    by seed) unless every_seed=False; the other rows' first seed."""
    runs = {f"{t}_{k}_s{s}": (None, None, t, k, s) for t in ("sst2", "tweets")
            for k in ("dense", "gmp80", "st70") for s in (1, 0, 2)}
    assert structured_models.timed_runs(runs, "sst2") == [
        "sst2_dense_s0", "sst2_gmp80_s0", "sst2_st70_s1", "sst2_st70_s0", "sst2_st70_s2"]
    assert structured_models.timed_runs(runs, "tweets", every_seed=False) == [
        "tweets_dense_s0", "tweets_gmp80_s0", "tweets_st70_s0"]
