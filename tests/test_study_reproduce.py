"""The reproduction study (prune_ofa_jax/study/reproduce.py): its rows differ exactly where the
paper's comparison says, and the `:test` size runs end to end into a table, a plot and the
README section."""

import jax
import numpy as np
import pytest
import train_helpers

from prune_ofa_jax import jsonio, presets
from prune_ofa_jax.convert import hf as hf_convert
from prune_ofa_jax.models import bert
from prune_ofa_jax.models import config as model_config
from prune_ofa_jax.study import harness, reproduce, reproduce_report


def _resolved(runs, name):
    return presets.resolve(runs[name][0])


def test_rows_differ_only_where_the_comparison_says(tmp_path):
    p = reproduce.get_config("")
    runs = reproduce.plan(p, tmp_path)
    dense = str(tmp_path / "teacher" / "model")
    up = {v: _resolved(runs, f"up_{v}_s1") for v in ("kd_all", "no_kd", "kd_masked")}
    # Prune OFA: GMP to the target with all-token KD from the dense model (reference preset).
    assert up["kd_all"].distill.kd_weight == 0.5 and up["kd_all"].teacher.path == dense
    assert up["kd_all"].distill.mlm_positions_only is False and up["kd_all"].sparsity.regrow
    # Without KD: no teacher, nothing else changes.
    assert up["no_kd"].distill.kd_weight == 0.0 and not up["no_kd"].teacher.path
    # Masked-only KD: the fast preset.
    assert up["kd_masked"].distill.mlm_positions_only is True
    for c in up.values():
        assert c.init.path == dense and c.sparsity.enabled and c.sparsity.target == p.target
        for key in ("train.steps", "data.seq_len", "optim.lr", "sparsity.end_step",
                    "sparsity.update_every", "sparsity.freeze_step", "seed"):
            a, b = (c, up["kd_all"])
            for part in key.split("."):
                a, b = a[part], b[part]
            assert a == b, key
    for task, t in p.tasks.items():
        ft = {row: _resolved(runs, f"ft_{task}_{row}_s1") for row in reproduce.ROWS}
        assert not ft["dense"].sparsity.lock_pattern and not ft["dense"].sparsity.enabled
        for row, variant in reproduce.UPSTREAM_OF.items():  # sparse transfer, pattern locked
            assert ft[row].sparsity.lock_pattern and not ft[row].sparsity.enabled
            assert ft[row].init.path == str(tmp_path / f"up_{variant}_s1" / "model")
        gmp = ft["task_gmp"]  # from the dense model, as many steps as upstream + fine-tune
        assert gmp.init.path == dense and gmp.sparsity.enabled
        assert gmp.sparsity.target == p.target
        assert gmp.train.steps == p.upstream_steps + t.steps
        for row, c in ft.items():
            assert (c.data.seq_len, c.optim.lr, c.train.batch_size, c.seed) == (
                t.seq_len, t.lr, p.batch_size, 1), row
            assert c.distill.kd_weight == 0.0, row  # no task teacher in any row
            if row != "task_gmp":
                assert c.train.steps == t.steps, row


def test_tiny_study_end_to_end(tmp_path):
    mcfg = model_config.by_name("bert-base-uncased", **train_helpers.TINY)
    params = bert.init_params(bert.BertFamily(mcfg, "base"), jax.random.key(0))
    hf_convert.export_hf(params, mcfg, "base", tmp_path / "base_hf")
    p = reproduce.get_config("test")
    p.base_model = str(tmp_path / "base_hf")
    p.seeds = (0,)
    summary = reproduce.run(p, tmp_path / "study")
    rows = {r["row"]: r for r in summary["rows"]}
    assert set(rows) == set(reproduce.ROWS)
    for name, r in rows.items():
        t = r["tasks"]["sst2"]
        want = 0.0 if name == "dense" else p.target
        assert t["sparsity"] == pytest.approx(want, abs=0.01), name
        assert 0.0 <= t["accuracy"]["mean"] <= 100.0
    dense, ofa = rows["dense"]["tasks"]["sst2"], rows["prune_ofa"]["tasks"]["sst2"]
    assert dense["accuracy"]["retention_mean"] == pytest.approx(1.0)
    np.testing.assert_allclose(ofa["accuracy"]["retention_mean"],
                               ofa["accuracy"]["mean"] / dense["accuracy"]["mean"])
    jsonio.loads_strict((tmp_path / "study" / "summary.json").read_text())
    assert (tmp_path / "study" / "reproduce.png").stat().st_size > 1000
    path = tmp_path / "README.md"
    begin, end = harness.markers("reproduce")
    path.write_text(f"intro\n{begin}\nold\n{end}\nrest\n")
    harness.write(path, "reproduce", reproduce_report.markdown(summary),
                 tmp_path / "study" / "reproduce.png", "retention", "cmd")
    text = path.read_text()
    assert "old" not in text and "| Prune OFA (all-token KD) |" in text and "rest" in text
    # Rerunning skips every finished run and gives the same table.
    again = reproduce.run(p, tmp_path / "study")
    assert reproduce_report.markdown(again).split("Whole study")[0] == reproduce_report.markdown(summary).split(
        "Whole study")[0]
