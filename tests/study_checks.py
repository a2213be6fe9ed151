"""The compression study at :test size (python -m prune_ofa_jax.study compression --size test),
run on the tiny demo that tests/test_demo.py builds anyway: its SST-2 models (and its 80 %
upstream model, the sweep's "before" point) are reused, so the study trains only the three
tweets models and the sweep's step-matched task-GMP run (the compute-matched 2x arm is
checked as a plan, untrained). Latency: onnxruntime only (the latency function's own test
covers PyTorch), every model in its own worker."""

import csv
import json
import os

import numpy as np

from prune_ofa_jax.convert import qat_ranges
from prune_ofa_jax.study import __main__ as study_main
from prune_ofa_jax.study import compress_plan, compress_study, harness

ARGS = ("--models", "dense,sparse,sparse_int8", "--tasks", "sst2,tweets", "--size", "test",
        "--sweep_task", "sst2", "--sweep_levels", "0,0.8", "--sweep_arms", "before,after",
        "--latency_batches", "1",
        "--latency_seq_len", "32", "--latency_budget_s", "0.05", "--latency_repeats", "3",
        "--latency_runtimes", "ort")


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
        (arm, s) for arm in ("before", "after") for s in (0.0, 0.8)}
    before = {r["sparsity"]: r for r in res["sweep"] if r["when"] == "before"}
    assert before[0.8]["value"] == sst2_sparse["train_eval"]["accuracy"]  # the demo's run
    after = {r["sparsity"]: r for r in res["sweep"] if r["when"] == "after"}
    assert abs(after[0.8]["measured_sparsity"] - 0.8) < 0.01  # task GMP reached its target
    # step-matched: as many task steps as the "before" arm's fine-tune, from the teacher
    runs = out / "runs"
    matched = json.loads((runs / "sweep_sst2_matched_80" / "config.json").read_text())
    assert json.loads((runs / "sweep_sst2_matched_80" / "report.json").read_text())[
        "steps"] == res["sweep_steps"]["finetune"] == matched["train"]["steps"]
    assert matched["init"]["path"] == str(demo_dir / "1_teacher" / "model")
    assert matched["sparsity"]["begin_step"] == matched["train"]["steps"] // 2
    # compute-matched (planned only): F more steps of task GMP on the dense fine-tuned model
    plan = compress_plan.sweep_runs(compress_study.demo_pipeline("test"), demo_dir, runs,
                                    "sst2", (0.8,), test=True, arms=("after_2x",))
    (_, dense_dir), (twice, _) = plan[("after_2x", 0.8)]
    assert dense_dir == demo_dir / "3_finetune_dense" and twice.sparsity.begin_step == 0
    assert twice.init.path == str(dense_dir / "model")
    assert twice.train.steps == matched["train"]["steps"] and twice.sparsity.target == 0.8
    for task in ("sst2", "tweets"):  # baselines on the rows the runs score
        base = res["baselines"][task]
        assert base["rows"] == sum(res["results"][f"{task}_dense"]["per_class"]["support"])
        assert 0.5 <= base["majority"]["accuracy"] < 1
        iv = res["results"][f"{task}_sparse"]["interval"]
        assert iv["lo"] <= iv["mean"] <= iv["hi"]
    assert set(res["paired_vs_dense"]) == {f"{t}_{m}" for t in ("sst2", "tweets")
                                           for m in ("sparse", "sparse_int8")}
    # latency: every model side by side, each in its own worker process
    lat = res["latency"]
    assert set(lat) == {"dense", "sparse", "sparse_int8"} and set(lat["sparse_int8"]["1"]) == {
        "ort_int8"}
    pids = {w["pid"] for w in res["latency_settings"]["workers"].values()}
    assert len(pids) == 3 and os.getpid() not in pids
    assert lat["dense"]["1"]["ort_fp32"]["calls"] == 3
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
    assert "| sst2 | majority class | accuracy |" in text and "step-matched" in text
    again = json.loads((out / "results.json").read_text())
    assert again["run_wall_time_s"] == res["run_wall_time_s"] > 0  # every run's, not the rerun's
