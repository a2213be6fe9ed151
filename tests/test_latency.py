"""The one latency function (runtime/latency.py): every variant runs in a worker process of
its own (never the test's), the result holds the documented fields, the median's interval
is the order-statistics one, and the inference bench and the compression study both time
through it. Tiny models, two rounds: seconds, and never a claim about speed."""

import os
import pathlib

import jax
import numpy as np
import pytest

from prune_ofa_jax.bench import inference, settings
from prune_ofa_jax.convert import hf, params_ckpt
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config
from prune_ofa_jax.runtime import latency
from prune_ofa_jax.study import compress_eval

TINY = dict(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, vocab_size=1100,
            max_position_embeddings=32, num_labels=2)
STATS = {"median_ms", "p50_ms", "p10_ms", "p90_ms", "p95_ms", "mean_ms", "min_ms", "max_ms",
         "median_ci95_ms", "cpu_median_ms", "seq_per_s", "calls", "rounds", "times_ms"}


@pytest.fixture(scope="module")
def tiny():
    mcfg = model_config.by_name("bert-base-uncased", **TINY)
    return bert.init_params(bert.BertFamily(mcfg, "cls"), jax.random.key(0)), mcfg


def test_each_variant_in_its_own_worker_with_the_documented_fields(tiny, tmp_path):
    params, mcfg = tiny
    # PyTorch from a config alone (random weights, the same time): no torch in this process
    variants = [latency.onnx_variant("ort_fp32", params, mcfg, tmp_path / "m.onnx"),
                latency.torch_config_variant("torch_fp32", hf.hf_config(mcfg, "cls"),
                                             tmp_path / "hf")]
    s = latency.Settings(threads=1, warmup=1, repeats=2, vocab_hi=1100)
    res = latency.measure(variants, (1, 2), 8, s, log=lambda *_: None)
    pids = {w["pid"] for w in res["workers"].values()}
    assert len(pids) == 2 and os.getpid() not in pids
    assert {w["threads"] for w in res["workers"].values()} == {1}
    assert set(res["batches"]) == {"1", "2"} and res["seq_len"] == 8
    for per in res["batches"].values():
        assert set(per) == {"ort_fp32", "torch_fp32"}
        for st in per.values():
            assert set(st) == STATS and st["calls"] == st["rounds"] == 2
            assert st["min_ms"] <= st["p10_ms"] <= st["median_ms"] <= st["p90_ms"] <= st["max_ms"]
            assert st["median_ci95_ms"] is None  # 2 calls cannot give a 95 % interval
    r = latency.speedup(res["batches"]["2"], fast="ort_fp32", slow="torch_fp32")
    per = res["batches"]["2"]
    assert r["ratio"] == pytest.approx(per["torch_fp32"]["median_ms"] / per["ort_fp32"]["median_ms"])
    assert r["rounds"] == 2 and r["paired_p10"] <= r["paired_median"] <= r["paired_p90"]


def test_a_failing_variant_names_the_worker_error(tmp_path):
    bad = latency.Variant("broken", "ort", str(tmp_path / "missing.onnx"))
    with pytest.raises(latency.WorkerError, match="latency worker"):
        latency.measure([bad], (1,), 8, latency.Settings(threads=1, repeats=1),
                        log=lambda *_: None)
    with pytest.raises(ValueError, match="runtime"):
        latency.Variant("x", "tensorrt", "m")


def test_median_interval_on_known_cases():
    # n = 10: [x(2), x(9)] (coverage 1 - 2 * 11/1024 = 97.9 %); n = 5: none reaches 95 %
    assert latency.median_ci(list(range(10, 0, -1))) == [2, 9]
    assert latency.median_ci([1, 2, 3, 4, 5]) is None
    # n = 6: [min, max] covers 1 - 2/64 = 96.9 %
    assert latency.median_ci([3, 1, 2, 6, 5, 4]) == [1, 6]


def _spy(monkeypatch):
    """Replaces latency.measure by a recorder returning made-up stats (no process)."""
    calls = []

    def fake(variants, batch_sizes, seq_len, settings=latency.Settings(), log=print):
        calls.append([v.name for v in variants])
        for v in variants:
            assert pathlib.Path(v.path).exists(), v
        return {"settings": {"threads": settings.threads}, "seq_len": seq_len, "workers": {},
                "batches": {str(b): {v.name: latency.stats([1e-3 * (1 + i)] * 3, [1e-3] * 3,
                                                           b, 3)
                                     for i, v in enumerate(variants)} for b in batch_sizes}}
    monkeypatch.setattr(latency, "measure", fake)
    return calls


def test_the_bench_and_the_study_time_through_the_one_function(tiny, tmp_path, monkeypatch):
    params, mcfg = tiny
    calls = _spy(monkeypatch)
    bc = settings.get_config()
    bc.inference.models, bc.seq_len = "bert-tiny-test", 8
    bc.inference.batch_sizes = (1,)
    monkeypatch.setattr(inference, "_model", lambda name, ic: (params, mcfg, None, name))
    result = inference.run(bc, str(tmp_path / "bench"), log=lambda *_: None)
    assert calls[-1] == ["torch_fp32", "ort_fp32", "ort_int8", "torch_fp32_sparse",
                         "ort_fp32_sparse", "ort_int8_sparse", "ort_fp32_structured",
                         "ort_int8_structured"]
    st = result["structured"]["bert-tiny-test"]  # made-up times: dense fp32 2 ms, these 7, 8
    assert st["figures"]["structured_vs_dense_ort_fp32_b1"]["ratio"] == pytest.approx(2 / 7)
    assert st["shape"]["encoder_params"] < st["shape"]["encoder_params_dense"]
    fig = result["models"]["bert-tiny-test"]["1"]["figures"]
    assert fig["int8_vs_ort_fp32"] == pytest.approx(2 / 3)  # made-up times 1, 2, 3 ms
    assert set(result["models"]["bert-tiny-test"]["1"]["ratios"]) == set(fig) - {
        "int8_target_2x_met"}
    mdir = tmp_path / "model"
    params_ckpt.save_params(mdir, params, mcfg, "cls")
    out = compress_eval.latency({"dense": mdir}, tmp_path / "lat", (1,), 8,
                                latency.Settings(threads=1))
    assert calls[-1] == ["dense/ort_fp32", "dense/torch_fp32"]
    assert set(out["models"]["dense"]["1"]) == {"ort_fp32", "torch_fp32"}
    assert np.isclose(out["speedups"]["1"]["ORT fp32 over PyTorch fp32 (dense)"]["ratio"], 2.0)
