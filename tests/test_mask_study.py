"""The mask-method study at its :test size: every method runs through the loop (real SST-2
rows, the tiny BERT), the frozen rows export the loaded weights bit for bit under their
masks, the top-k rows and AdaPrune's stop land on the exact target, the table, overlap and
spread are written, and a rerun skips the finished runs."""

import json

import numpy as np
import pytest

from prune_ofa_jax.convert import params_ckpt
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.study import mask_methods as study
from prune_ofa_jax.study import mask_methods_report


def test_mask_study_test_size(tiny_ckpts, shared_data, tmp_path, capsys):
    p = study.get_config("test")
    p.base_model, p.data_root = tiny_ckpts["bert"], str(shared_data)
    summary = study.run(p, tmp_path)
    names = sorted(d.name for d in tmp_path.iterdir() if (d / "report.json").exists())
    assert names == sorted(study.plan(p, tmp_path)) and len(names) == len(study.ROWS)
    scores = summary["scores"]
    for row in ("magnitude", "gmp", "movement_hard", "adaprune"):  # exact counts
        assert scores[f"{row}@0.5"]["sst2"]["sparsity"]["mean"] == 0.5, row
    for row in ("movement_soft", "supermask"):  # thresholds: whatever the scores say
        assert 0.0 <= scores[f"{row}@0.5"]["sst2"]["sparsity"]["mean"] < 1.0, row
    w0, _, _ = params_ckpt.load_params(tiny_ckpts["bert"])
    base = dict(masks_lib.named_leaves(w0["backbone"]))
    for row in study.FROZEN_ROWS:  # kept weights are the loaded ones, bit for bit
        name = study.run_name("sst2", row, 0.5, 0)
        params, mcfg, _ = params_ckpt.load_params(tmp_path / name / "model")
        assert mcfg.cls_head == p.frozen_head
        for path, w in masks_lib.named_leaves(params["backbone"]):
            w, orig = np.asarray(w), np.asarray(base[path])
            np.testing.assert_array_equal(w[w != 0], orig[w != 0], err_msg=f"{row} {path}")
        assert not (tmp_path / name / "checkpoints").exists()  # deleted once finished
    for pair, by_layer in summary["jaccard"]["0.5"].items():
        assert len(by_layer) == 2 and all(0.0 <= j <= 1.0 for j in by_layer), pair
    spread = summary["spread"]["0.5"]["magnitude"]
    assert spread["type"]["q"] == pytest.approx(0.5)  # uniform: every tensor at the target
    table = (tmp_path / "table.md").read_text()
    assert all(label in table for label in mask_methods_report.LABELS.values())
    assert (tmp_path / "masks.png").stat().st_size > 10_000
    again = study.run(p, tmp_path)  # a rerun continues: nothing left to do
    assert "done before, skipping" in capsys.readouterr().out
    assert again["scores"] == summary["scores"]
    assert again["run_wall_time_s"] == summary["run_wall_time_s"] > again["wall_time_s"]
    assert json.loads((tmp_path / "summary.json").read_text())["rows"] == list(study.ROWS)
