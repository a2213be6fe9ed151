"""The OBS study at its :test size (real SST-2 rows, a one-layer tiny BERT): a fixed data split
written once for every seed, a teacher, the one-shot sweep and the gradual GMP / OBS runs at
their exact target; the command line on the same settings writes the page (a rerun: every
piece done before); the tweets' fixed split is the one `data.kind=tweets` makes."""

import json

import jax
import numpy as np
import train_helpers

from prune_ofa_jax.convert import params_ckpt
from prune_ofa_jax.data import disaster_tweets
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config
from prune_ofa_jax.study import obs_report, obs_study


def _one_layer_bert(directory) -> str:
    """train_helpers.save_tiny's BERT with one layer: the study's OBS, Fisher and one-shot
    programs are its own, and each layer's kernels add their own blockwise maths to them."""
    mcfg = model_config.by_name("bert-base-uncased", **{**train_helpers.TINY, "num_layers": 1},
                                num_labels=2)
    params = bert.init_params(bert.BertFamily(mcfg, "pretraining"), jax.random.key(0))
    params_ckpt.save_params(directory, params, mcfg, "pretraining")
    return str(directory)


def test_obs_study_test_size_and_its_page(shared_data, tmp_path, capsys):
    p = obs_study.get_config("test")
    p.base_model, p.data_root = _one_layer_bert(tmp_path / "bert"), str(shared_data)
    work = tmp_path / "work"
    summary = obs_study.run(p, work)
    names = sorted(d.name for d in work.iterdir() if (d / "report.json").exists())
    assert names == ["sst2_gmp_90_s0", "sst2_obs_90_s0", "sst2_teacher"]
    for method in ("gmp", "obs"):  # exact counts: the target reached by both
        assert abs(summary["gradual"]["sst2@0.9"][method]["sparsity"] - 0.9) < 1e-3
    rows = summary["oneshot"]["sst2"]["rows"]
    assert list(rows) == ["dense", "magnitude", "obs", "obs_r2"]
    assert all(set(rows[s]) == {"0.5", "0.9"} for s in ("magnitude", "obs", "obs_r2"))
    paired = summary["paired"]["sst2@0.9"]  # one seed: no interval, no verdict
    assert paired["n"] == 1 and paired["lo"] is None and paired["verdict"] == "n < 2"
    assert summary["majority"]["sst2"] >= 0.5 and summary["dev_rows"]["sst2"] == 32
    data = work / "data" / "sst2" / "sst2"
    assert len((data / "train.tsv").read_text().splitlines()) == 65  # header + 64 rows

    text, out, end = train_helpers.study_rerun_into_page(
        obs_study.STUDY, "obs_study.py", p, work, tmp_path, capsys)
    assert out.count("done before, skipping") == 4
    assert "old" not in text and "](obs.png)" in text and text.endswith(f"{end}\n## After\n")
    assert obs_report.markdown(summary) in text and "| SST-2 | 90 % |" in text
    assert "(n=1)" in text
    assert (tmp_path / "repo" / "obs.png").stat().st_size > 10_000
    again = json.loads((work / "summary.json").read_text())
    assert again["gradual"] == json.loads(json.dumps(summary["gradual"]))


def test_tweets_split_is_the_one_data_kind_tweets_makes(shared_data, tmp_path):
    p = obs_study.get_config("test")
    p.data_root = str(shared_data)
    p.tasks = {"tweets": dict(seq_len=32, train_rows=0, dev_rows=0)}
    out = obs_study.task_data(p, tmp_path, "tweets")
    train, dev = disaster_tweets.train_dev_split(
        disaster_tweets.load(shared_data / obs_study.TWEETS_CSV), 0.1, 0)
    np.testing.assert_array_equal(obs_study.dev_labels(out), dev.labels)
    lines = (out / "sst2" / "train.tsv").read_text().splitlines()
    assert len(lines) == len(train) + 1
    assert lines[1] == f"{' '.join(train.text_a[0].split())}\t{train.labels[0]}"


def _report(acc: float, sparsity: float = 0.9) -> dict:
    return {"eval": {"accuracy": acc}, "sparsity": {"global": sparsity}, "wall_time_s": 10.0,
            "cpu_time_s": 15.0}


def test_report_intervals_and_the_rule_over_three_seeds():
    """Three seeds: the paired OBS - GMP interval decides the stated rule (holds when OBS is
    ahead on every seed by more than the noise, fails when behind), the table shows every
    interval, and the cost sums every run."""
    p = obs_study.get_config("test")
    p.seeds, p.targets = (0, 1, 2), (0.8, 0.9)
    gmp = {0.8: [0.80, 0.82, 0.81], 0.9: [0.70, 0.72, 0.71]}
    obs = {0.8: [0.78, 0.79, 0.79], 0.9: [0.75, 0.76, 0.76]}  # behind at 80 %, ahead at 90 %
    reports = {"sst2_teacher": _report(0.85, 0.0)}
    for target in p.targets:
        for s in p.seeds:
            reports[obs_study.run_name("sst2", "gmp", target, s)] = _report(gmp[target][s])
            reports[obs_study.run_name("sst2", "obs", target, s)] = _report(obs[target][s])
    levels = {"0.5": {"accuracy": 0.8, "sparsity": 0.5}, "0.9": {"accuracy": 0.6,
                                                                 "sparsity": 0.9}}
    oneshot = {"sst2": {"settings": {"levels": [0.5, 0.9]}, "wall_time_s": 30.0,
                        "rows": {"dense": {"0.0": {"accuracy": 0.85}}, "magnitude": levels,
                                 "obs": levels},
                        "series_wall_s": {"magnitude": 1.0, "obs": 2.0}}}
    labels = {"sst2": np.array([0, 1, 1, 1])}
    s = obs_report.summarise(p, reports, oneshot, labels)
    assert s["paired"]["sst2@0.9"]["verdict"] == "holds"
    assert s["paired"]["sst2@0.8"]["verdict"] == "fails"
    d = s["paired"]["sst2@0.9"]
    assert d["n"] == 3 and d["lo"] < 0.0467 < d["hi"] and d["lo"] > 0
    g = s["gradual"]["sst2@0.9"]["gmp"]
    assert g["per_seed"] == gmp[0.9] and g["lo"] < 0.71 < g["hi"]
    assert s["majority"]["sst2"] == 0.75 and s["runs"] == 13
    text = obs_report.markdown(s)
    assert "| SST-2 | 90 % |" in text and "| holds |" in text and "| (fails) |" in text
    assert f"[{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]" in text
    assert "(n=" not in text.split("**The paper")[0].split("**Gradual")[1]
    p.seeds = ()  # the one-shot part only: no gradual section, the rest as before
    alone = obs_report.summarise(p, {"sst2_teacher": reports["sst2_teacher"]}, oneshot, labels)
    assert alone["gradual"] == {} and alone["targets"] == [] and alone["runs"] == 1
    text = obs_report.markdown(alone)
    assert "**Gradual" not in text and "| SST-2 | obs | 80.0 | 60.0 | 2 |" in text
