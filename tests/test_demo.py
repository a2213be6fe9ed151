"""Smoke test of the demo pipeline (configs/demo.py:test) on a tiny random BERT: every stage
runs, every artifact is there, the exported HF models reload with `transformers`, give our
logits, and hold exactly the sparsity the report states. Every report is strict JSON."""

import jax
import numpy as np
import pytest
import study_checks
import train_helpers
import transformers

from prune_ofa_jax import demo, jsonio
from prune_ofa_jax.convert import hf as hf_convert
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config


def _demo(root):
    # A tiny random BertModel in HF layout (the demo's default is the real MiniLM-L6).
    mcfg = model_config.by_name("bert-base-uncased", **train_helpers.TINY)
    params = bert.init_params(bert.BertFamily(mcfg, "base"), jax.random.key(0))
    hf_convert.export_hf(params, mcfg, "base", root / "base_hf")
    c = train_helpers.recipe("demo", "test")
    c.pipeline.base_model = str(root / "base_hf")
    summary = demo.run(c, root / "run")
    return root / "run", summary, c


@pytest.mark.slow
def test_demo_pipeline(tmp_path, shared_data, capsys):
    """One test, one build of the demo: the checks below share it (tests spread over
    xdist workers would each build their own), and so does the :test-sized compression
    study (tests/study_checks.py), which reuses the demo's SST-2 models."""
    demo = _demo(tmp_path)
    _every_stage_wrote_its_report_and_model(demo)
    _sparsity_in_report_export_and_table_agree(demo)
    _exports_reload_in_transformers_with_our_logits(demo)
    study_checks.check(demo[0], tmp_path / "study", shared_data, capsys)


def _every_stage_wrote_its_report_and_model(demo):
    run, summary, _ = demo
    for stage in ("1_teacher", "2_prune", "3_finetune_sparse", "3_finetune_dense", "4_qat"):
        report = jsonio.loads_strict((run / stage / "report.json").read_text())
        assert report["steps"] == 4
        assert (run / stage / "model" / "model.json").exists()
        assert (run / stage / "metrics.jsonl").stat().st_size > 0
    assert jsonio.loads_strict((run / "summary.json").read_text())["rows"] == summary["rows"]
    # a dense model has no prunable tensor: its sparsity is undefined: null, never NaN
    dense = jsonio.loads_strict((run / "3_finetune_dense" / "report.json").read_text())
    assert dense["sparsity"]["global"] is None
    assert (run / "log.txt").stat().st_size > 0 and (run / "2_prune" / "log.txt").exists()


def _sparsity_in_report_export_and_table_agree(demo):
    run, summary, c = demo
    target = c.pipeline.target
    prune = jsonio.loads_strict((run / "2_prune" / "report.json").read_text())
    assert prune["sparsity"]["global"] == pytest.approx(target, abs=2e-3)
    rows = {r["stage"]: r for r in summary["rows"]}
    assert rows["3_finetune_dense"]["encoder_sparsity"] < 0.01
    for stage in ("3_finetune_sparse", "4_qat"):  # the lock held through fine-tuning and QAT
        assert rows[stage]["encoder_sparsity"] >= prune["sparsity"]["global"] - 1e-6
        assert rows[stage]["size_stored_mb"] < rows[stage]["size_dense_fp32_mb"]
    sparse_export = summary["exports"]["3_finetune_sparse"]
    assert sparse_export["export_sparsity"] == pytest.approx(
        rows["3_finetune_sparse"]["encoder_sparsity"], abs=1e-6)


def _exports_reload_in_transformers_with_our_logits(demo):
    _, summary, _ = demo
    for name, e in summary["exports"].items():
        model = transformers.AutoModelForSequenceClassification.from_pretrained(e["hf_dir"])
        assert model.num_labels == 2
        assert e["max_abs_logit_diff"] < 1e-4, (name, e)
    assert np.isfinite([r["accuracy"] for r in summary["rows"]]).all()
