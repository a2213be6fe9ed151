"""The Prune OFA study (prune_ofa_jax/study/reproduce.py): its rows differ exactly where the
comparison says (one change per row, step-matched task GMP), its report gives the intervals,
baselines and verdicts of known numbers, and the `:test` size runs end to end into a table,
a plot and the page section."""

import jax
import numpy as np
import pytest
import train_helpers

from prune_ofa_jax import jsonio, paths, presets
from prune_ofa_jax.convert import hf as hf_convert
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config
from prune_ofa_jax.study import harness, reproduce, reproduce_report


def _resolved(runs, name):
    return presets.resolve(runs[name][0])


def _get(c, key):
    for part in key.split("."):
        c = c[part]
    return c


def test_rows_differ_only_where_the_comparison_says(tmp_path):
    p = reproduce.get_config("")
    assert len(p.seeds) >= 5 and "mrpc" not in p.tasks
    p.compute_matched = True
    runs = reproduce.plan(p, tmp_path)
    dense = str(tmp_path / "teacher" / "model")
    teacher = _resolved(runs, "teacher")
    up = {v: _resolved(runs, f"up_{v}_s1") for v in reproduce.UPSTREAMS}
    # Prune OFA: GMP to the target with all-token KD from the dense model (reference preset).
    assert up["kd"].distill.kd_weight == 0.5 and up["kd"].teacher.path == dense
    assert up["kd"].distill.mlm_positions_only is False and up["kd"].sparsity.regrow
    # Without KD: no teacher, nothing else changes.
    assert up["no_kd"].distill.kd_weight == 0.0 and not up["no_kd"].teacher.path
    for c in up.values():
        assert c.init.path == dense and c.sparsity.enabled and c.sparsity.target == p.target
        # The target at mid-run, then recovery: masks frozen at 80 % of the run.
        assert c.sparsity.end_step == p.upstream_steps // 2
        assert c.sparsity.freeze_step == int(0.8 * p.upstream_steps) < c.train.steps
        for key in ("train.steps", "data.seq_len", "optim.lr", "sparsity.end_step",
                    "sparsity.update_every", "sparsity.freeze_step", "seed",
                    "distill.mlm_positions_only", "sparsity.regrow", "data.text_files"):
            assert _get(c, key) == _get(up["kd"], key), key
    # Teacher and students score the same held-out text, which none of them trains on.
    for c in (teacher, *up.values()):
        assert c.data.eval_files == ("wikitext2/test.txt",)
        assert "wikitext2/test.txt" not in c.data.text_files
        for key in ("data.seq_len", "data.max_predictions", "data.eval_batches",
                    "train.eval_batch_size", "data.split_seed", "data.nsp",
                    "data.whole_word_mask"):
            assert _get(c, key) == _get(teacher, key), key
    for task, t in p.tasks.items():
        ft = {row: _resolved(runs, f"ft_{task}_{row}_s1")
              for row in reproduce_report.rows(p)}
        assert not ft["dense"].sparsity.lock_pattern and not ft["dense"].sparsity.enabled
        for row, variant in reproduce.UPSTREAM_OF.items():  # sparse transfer, pattern locked
            assert ft[row].sparsity.lock_pattern and not ft[row].sparsity.enabled
            assert ft[row].init.path == str(tmp_path / f"up_{variant}_s1" / "model")
        for row in ("task_gmp", "task_gmp_long"):  # GMP from the dense model, same target
            gmp = ft[row]
            assert gmp.init.path == dense and gmp.sparsity.enabled
            assert gmp.sparsity.target == p.target
        assert ft["task_gmp_long"].train.steps == p.upstream_steps + t.steps
        for row, c in ft.items():
            assert (c.data.seq_len, c.optim.lr, c.train.batch_size, c.seed) == (
                t.seq_len, t.lr, t.batch_size, 1), row
            assert (c.data.train_subset, c.data.eval_subset, c.data.split_seed) == (
                t.train_subset, t.eval_subset, p.split_seed), row
            assert c.distill.kd_weight == 0.0, row  # no task teacher in any row
            if row != "task_gmp_long":  # step-matched: the same steps and rows
                assert c.train.steps == t.steps, row
    assert (_resolved(runs, "ft_tweets_dense_s0").data.kind,
            _resolved(runs, "ft_sst2_dense_s0").data.kind) == ("tweets", "glue")


def _fake_reports(p, acc: dict, mlm: dict) -> dict:
    """Reports a study would read: acc[(task, row)] and mlm[variant] are per-seed values."""
    def rep(ev, sparsity=0.0):
        return {"eval": ev, "sparsity": {"global": sparsity}, "steps": 10,
                "wall_time_s": 1.0, "cpu_time_s": 2.0}
    out = {"teacher": rep({"eval_mlm_accuracy": 0.5, "eval_mlm_loss": 2.5})}
    for i, s in enumerate(p.seeds):
        for v, vals in mlm.items():
            out[f"up_{v}_s{s}"] = rep({"eval_mlm_accuracy": vals[i], "eval_mlm_loss": 3.0}, 0.8)
        for (task, row), vals in acc.items():
            out[f"ft_{task}_{row}_s{s}"] = rep({"accuracy": vals[i], "f1": vals[i] - 0.1},
                                               0.0 if row == "dense" else 0.8)
    return out


def test_report_of_known_numbers(tmp_path):
    p = reproduce.get_config("")
    p.seeds = (0, 1, 2)
    base = np.array([0.80, 0.82, 0.84])
    acc = {}
    for task, shift in (("sst2", 0.0), ("tweets", -0.05)):
        acc[task, "dense"] = base + 0.05
        acc[task, "task_gmp"] = base
        acc[task, "prune_ofa"] = base + shift + np.array([0.0, 0.002, -0.002])
        acc[task, "gmp_no_kd"] = base + shift - 0.02
    mlm = {"kd": [0.40, 0.41, 0.42], "no_kd": [0.40, 0.42, 0.41]}
    labels = {"sst2": np.array([1, 1, 1, 0]), "tweets": np.array([0, 0, 0, 1, 1])}
    summary = reproduce_report.summarise(p, _fake_reports(p, acc, mlm), labels, reproduce.RULES)
    rows = {r["row"]: r for r in summary["rows"]}
    dense = rows["dense"]["tasks"]["sst2"]["accuracy"]
    # The t interval of (0.85, 0.87, 0.89): mean 0.87, sd 0.02, t(0.975, 2) = 4.303.
    assert dense["mean"] == pytest.approx(0.87)
    assert dense["half_width"] == pytest.approx(4.302653 * 0.02 / np.sqrt(3), rel=1e-5)
    verdict = {(c["rule"], c["task"]): c for c in summary["comparisons"]}
    # Prune OFA within 1 point of task GMP on SST-2 (holds), 5 points below on tweets (fails).
    assert verdict["R1", "sst2"]["verdict"] == "holds"
    assert verdict["R1", "tweets"]["verdict"] == "fails"
    assert verdict["R1", "tweets"]["diff"]["mean"] == pytest.approx(-0.05)
    assert verdict["R3", "sst2"]["verdict"] == "holds"  # +2 points (± 0.2) on every seed
    assert verdict["R2", None]["verdict"] == "undecided"  # KD - no KD: 0, +0.01, -0.01
    assert summary["baselines"]["sst2"]["majority"]["accuracy"] == 0.75
    assert summary["baselines"]["tweets"]["majority"]["f1"] == 0.0
    assert summary["baselines"]["tweets"]["random"]["accuracy"] == 0.5
    text = reproduce_report.markdown(summary)
    assert "| *majority class* | 75.0 | 60.0 / 0.0 |" in text
    assert "| dense fine-tune | 87.0 [82.0, 92.0] |" in text
    assert text.count("| fails |") == 1 and "R1: Prune OFA >= task GMP - 1 point" in text
    reproduce_report.plot(summary, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_tiny_study_end_to_end(tmp_path):
    mcfg = model_config.by_name("bert-base-uncased", **train_helpers.TINY)
    params = bert.init_params(bert.BertFamily(mcfg, "base"), jax.random.key(0))
    hf_convert.export_hf(params, mcfg, "base", tmp_path / "base_hf")
    p = reproduce.get_config("test")
    p.base_model = str(tmp_path / "base_hf")
    # The tokenizer the tiny model's runs fall back to, named once: every run then reads the
    # same dir, so the upstreams reuse the teacher's tokenized text instead of redoing it.
    p.tokenizer = str(paths.minilm_dir())
    summary = reproduce.run(p, tmp_path / "study")
    rows = {r["row"]: r for r in summary["rows"]}
    assert set(rows) == set(reproduce.ROWS)
    for name, r in rows.items():
        t = r["tasks"]["sst2"]
        want = 0.0 if name == "dense" else p.target
        assert t["sparsity"] == pytest.approx(want, abs=0.01), name
        assert 0.0 <= t["accuracy"]["mean"] <= 1.0 and t["accuracy"]["lo"] is None  # 1 seed
    for v in reproduce.UPSTREAMS:  # every upstream scored on the held-out text
        assert 0.0 <= summary["mlm"][v]["accuracy"]["mean"] <= 1.0
    assert {c["verdict"] for c in summary["comparisons"] if c["rule"]} == {"n < 2"}
    jsonio.loads_strict((tmp_path / "study" / "summary.json").read_text())
    assert (tmp_path / "study" / "reproduce.png").stat().st_size > 1000
    path = tmp_path / "page.md"
    begin, end = harness.markers("reproduce")
    path.write_text(f"intro\n{begin}\nold\n{end}\nrest\n")
    harness.write(path, "reproduce", reproduce_report.markdown(summary),
                  tmp_path / "study" / "reproduce.png", "accuracy", "cmd")
    text = path.read_text()
    assert "\nold\n" not in text and "| Prune OFA (upstream GMP + KD) |" in text and "rest" in text
    # Rerunning skips every finished run and gives the same table.
    again = reproduce.run(p, tmp_path / "study")
    assert (reproduce_report.markdown(again).split("Whole study")[0]
            == reproduce_report.markdown(summary).split("Whole study")[0])
