"""The learned-masks study. At its :test size every phase runs through the loop (real SST-2
rows, the tiny BERT): the top-k rows land on the exact target, each fresh-head run holds
the pre-trained weights bit for bit under its row's final mask (movement's, whose own run
fine-tuned them, too), the table and plot are written, and a rerun skips the finished runs. The statistics and the
overlap rule on a known case, without training."""

import json

import numpy as np
import pytest

from prune_ofa_jax.convert import params_ckpt
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.study import mask_methods as study
from prune_ofa_jax.study import mask_methods_report as report


def test_mask_study_test_size(tiny_ckpts, shared_data, tmp_path, capsys):
    p = study.get_config("test")
    p.base_model, p.data_root = tiny_ckpts["bert"], str(shared_data)
    summary = study.run(p, tmp_path)
    first, second = study.plan(p, tmp_path)
    names = sorted(d.name for d in tmp_path.iterdir() if (d / "report.json").exists())
    assert names == sorted(list(first) + list(second)) and len(second) == len(p.rows)
    assert summary["phase2"]["random"]["sparsity"] == 0.5  # exact counts
    assert summary["phase1"]["movement"]["sparsity"] == 0.5
    w0, _, _ = params_ckpt.load_params(tiny_ckpts["bert"])
    base = dict(masks_lib.named_leaves(w0["backbone"]))
    frozen = [n for n in first if n.rpartition("_")[0] in study.FROZEN_ROWS] + list(second)
    for name in frozen:
        params, mcfg, _ = params_ckpt.load_params(tmp_path / name / "model")
        assert mcfg.cls_head == p.frozen_head, name
        for path, w in masks_lib.named_leaves(params["backbone"]):  # the loaded weights
            w, orig = np.asarray(w), np.asarray(base[path])
            np.testing.assert_array_equal(w[w != 0], orig[w != 0], err_msg=f"{name} {path}")
        assert not (tmp_path / name / "checkpoints").exists()  # deleted once finished
    # The fresh head sees exactly the movement run's final mask, over the pre-trained
    # weights (checked above), not the ones movement fine-tuned.
    own = report.load_masks(tmp_path / study.run_name("movement", 0) / "model")
    fresh = report.load_masks(tmp_path / study.head_name("movement", 0) / "model")
    assert all(np.array_equal(own[k], fresh[k]) for k in own)
    moved, _, _ = params_ckpt.load_params(tmp_path / study.run_name("movement", 0) / "model")
    kept_moved = [(np.asarray(w), np.asarray(base[path]))
                  for path, w in masks_lib.named_leaves(moved["backbone"]) if path in base]
    assert any(not np.array_equal(w[w != 0], orig[w != 0]) for w, orig in kept_moved)
    rand = report.load_masks(tmp_path / study.head_name("random", 0) / "model")
    assert not all(np.array_equal(own[k], rand[k]) for k in own)  # rows differ by mask
    assert not (tmp_path / "masked").exists()
    assert summary["comparisons"][0]["verdict"] == "n < 2"  # one seed: no interval
    assert summary["jaccard_verdict"] == "n < 2"
    table = (tmp_path / "table.md").read_text()
    assert all(report.LABELS[r] in table for r in p.rows) and "majority class" in table
    assert "Off target" not in table  # random and movement land on the exact count
    assert (tmp_path / "masks.png").stat().st_size > 10_000
    again = study.run(p, tmp_path)  # a rerun continues: nothing left to do
    assert "done before, skipping" in capsys.readouterr().out
    assert again["phase2"] == summary["phase2"]
    assert again["run_wall_time_s"] == summary["run_wall_time_s"] > again["wall_time_s"]
    assert json.loads((tmp_path / "summary.json").read_text())["rows"] == list(p.rows)


def _fake_masks(seed_of: dict, n: int = 3000):
    """{model dir name: masks}: 'same' rows learn one mask at every seed, 'random' rows draw
    an independent one per seed (two 3-layer tensors of n entries each, half kept)."""
    fixed = np.random.default_rng(99).permutation(n) < n // 2
    out = {}
    for name, (row, seed) in seed_of.items():
        rng = np.random.default_rng(seed + 10)
        keep = fixed if row == "adaprune" else rng.permutation(n) < n // 2
        out[name] = {(layer, m): keep.copy() for layer in range(3)
                     for m in ("attention/query", "ffn/output")}
    return out


def test_summary_intervals_pairs_and_overlap_rule(tmp_path, monkeypatch):
    p = study.get_config()
    p.rows, p.comparisons = ("feature", "random", "adaprune"), (("adaprune", "random"),)
    acc = {"feature": (0.80, 0.82, 0.84), "random": (0.60, 0.61, 0.65),
           "adaprune": (0.70, 0.72, 0.77)}
    reports, seed_of = {}, {}
    for row, values in acc.items():
        for seed, a in zip(p.seeds, values):
            names = [study.head_name(row, seed)] + ([study.run_name(row, seed)]
                                                    if row in study.LEARNED else [])
            for name in names:
                reports[name] = {"eval": {"accuracy": a}, "wall_time_s": 1.0,
                                 "sparsity": {"global": None if row == "feature" else 0.5}}
                seed_of[name] = (row, seed)
    masks = _fake_masks(seed_of)
    monkeypatch.setattr(report, "load_masks", lambda d: masks[d.parent.name])
    labels = np.array([1] * 60 + [0] * 40)
    s = report.summarise(p, tmp_path, reports, labels)
    feat = s["phase2"]["feature"]  # 0.82 +- t(0.975, 2) * 0.02 / sqrt(3)
    assert feat["mean"] == pytest.approx(0.82)
    assert feat["hi"] - feat["mean"] == pytest.approx(4.302653 * 0.02 / np.sqrt(3), rel=1e-5)
    diff = s["comparisons"][0]  # adaprune - random per seed: 0.10, 0.11, 0.12
    assert diff["mean"] == pytest.approx(0.11) and diff["verdict"] == "holds"
    assert s["majority"] == 0.6 and s["uniform"] == 0.5
    seeds = s["overlap"]["seeds"]
    assert seeds["adaprune"]["min"] == 1.0 and set(seeds["adaprune"]["pairs"]) == {
        "0-1", "0-2", "1-2"}
    assert seeds["random"]["mean"] == pytest.approx(1 / 3, abs=0.03)
    assert s["jaccard_verdict"] == "holds"
    seeds["adaprune"].update(min=0.34, max=0.36)
    assert report.jaccard_verdict(seeds, 0.5, 0.05) == "fails"
    seeds["adaprune"].update(max=0.40)
    assert report.jaccard_verdict(seeds, 0.5, 0.05) == "undecided"
    text = report.markdown(s)
    assert "0.333" in text and "holds" in text and "+11.0 [" in text
    assert report.missed_target(s) == {} and "Off target" not in text
    s["phase1"]["adaprune"]["sparsity"] = 0.42  # AdaPrune short of its stop
    assert report.missed_target(s) == {"adaprune": 0.42}
    assert "adaprune reached 0.420" in report.markdown(s)
    report.plot(s, tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 10_000
