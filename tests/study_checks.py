"""The compression study at :test size (python -m prune_ofa_jax.study compression --size test),
run on the tiny demo that tests/test_demo.py builds anyway: its SST-2 models (and its 80 %
upstream model, the sweep's "before" point) are reused, so the study trains only the three
tweets models and the sweep's task-GMP run."""

import csv
import json

import numpy as np

from prune_ofa_jax.convert import qat_ranges
from prune_ofa_jax.study import __main__ as study_main
from prune_ofa_jax.study import harness

ARGS = ("--models", "dense,sparse,sparse_int8", "--tasks", "sst2,tweets", "--size", "test",
        "--sweep_task", "sst2", "--sweep_levels", "0,0.8", "--latency_batches", "1",
        "--latency_seq_len", "32", "--latency_budget_s", "0.05")


def check(demo_dir, out, shared_data, capsys) -> None:
    args = ("compression",) + ARGS + ("--demo", str(demo_dir), "--workdir", str(out))
    assert study_main.main(list(args)) == 0
    first = capsys.readouterr().out
    quant = qat_ranges.load(demo_dir / "4_qat" / "model")  # the QAT run's quant.json
    assert (demo_dir / "4_qat" / "model" / "quant.json").is_file() and quant["ranges"]
    res = json.loads((out / "results.json").read_text())
    assert set(res["results"]) == {f"{t}_{m}" for t in ("sst2", "tweets")
                                   for m in ("dense", "sparse", "sparse_int8")}
    for key, r in res["results"].items():
        assert r["int8_runtime"] == key.endswith("_int8"), key
        cal, pc = r["calibration"], r["per_class"]
        assert sum(cal["count"]) == sum(pc["support"]) == np.sum(pc["confusion"]), key
        assert 0.0 <= cal["ece"] <= 1.0 and set(r["robustness"]) == {"0", "0.05", "0.1", "0.2"}
        assert r["size"]["pofa_bytes"] < r["size"]["safetensors_fp32_bytes"]
    sst2_sparse = res["results"]["sst2_sparse"]
    assert abs(sst2_sparse["size"]["sparsity"] - 0.8) < 0.01
    # The runtime's SST-2 metrics are the Flax eval's when both see the same rows: the demo
    # runs evaluate the full dev set (no eval_subset in the demo recipe).
    dense = res["results"]["sst2_dense"]
    # (up to a near-tie argmax flipped by float summation order: at most one row)
    assert abs(dense["metrics"]["accuracy"] - dense["train_eval"]["accuracy"]) <= 1 / 872 + 1e-9
    assert {(r["when"], r["sparsity"]) for r in res["sweep"]} == {
        ("before", 0.0), ("after", 0.0), ("before", 0.8), ("after", 0.8)}
    before = {r["sparsity"]: r for r in res["sweep"] if r["when"] == "before"}
    assert before[0.8]["value"] == sst2_sparse["train_eval"]["accuracy"]  # the demo's run
    after = {r["sparsity"]: r for r in res["sweep"] if r["when"] == "after"}
    assert abs(after[0.8]["measured_sparsity"] - 0.8) < 0.01  # task GMP reached its target
    with open(shared_data / "disaster_tweets" / "test.csv", newline="", encoding="utf-8") as f:
        ids = [row["id"] for row in csv.DictReader(f)]
    with open(out / "kaggle" / "tweets_sparse_int8.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "target"] and [r[0] for r in rows[1:]] == ids
    assert {r[1] for r in rows[1:]} <= {"0", "1"}
    report = (out / "report.md").read_text()
    for section in ("Per-class", "Robustness", "Latency", "Sparsity sweep", "Kaggle"):
        assert section in report, section
    for png in ("reliability.png", "robustness.png", "sweep.png", "size_latency.png"):
        assert 0 < (out / png).stat().st_size < 200_000, png
    assert "[study] run" in first
    begin, end = harness.markers("compress")
    (out / "repo").mkdir()
    readme = out / "repo" / "README.md"
    readme.write_text(f"# x\n{begin}\nold\n{end}\nrest\n")
    # a rerun skips every run and evaluation, and writes the README's section
    assert study_main.main(list(args) + ["--doc", str(readme)]) == 0
    assert "[study] run" not in capsys.readouterr().out
    text = readme.read_text()
    assert "old" not in text and "](size_latency.png)" in text and text.endswith("rest\n")
    assert (out / "repo" / "size_latency.png").is_file()  # the plot, next to the page
    assert "| tweets | sparse_int8 | f1 |" in text and "Sparsity sweep on sst2" in text
    again = json.loads((out / "results.json").read_text())
    assert again["run_wall_time_s"] == res["run_wall_time_s"] > 0  # every run's, not the rerun's
