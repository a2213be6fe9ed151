"""The Distiller study's :test size end to end (teachers, student init, masked LM, fixed rows,
the search, AutoDistiller's leave-one-task-out picks, table, plot, meta-table), its rerun
(every finished run skipped), and the AutoDistiller CLI on the meta-table it wrote."""

import importlib.util
import json

import pytest
import train_helpers

from prune_ofa_jax.kdsearch import autodistiller, candidates, runs
from prune_ofa_jax.study import distiller, harness


def _config():
    spec = importlib.util.spec_from_file_location(
        "distiller_study", train_helpers.REPO / "configs" / "distiller_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config("test")


def test_study_test_size_end_to_end_and_autodistiller_cli(tiny_ckpts, shared_data, tmp_path,
                                                          capsys, monkeypatch):
    del shared_data
    p = _config()
    p.base_model = tiny_ckpts["bert"]  # the tiny 2-layer BERT; the student takes layer 1
    p.lock()  # as the CLI's config flag hands it over
    summary = distiller.run(p, tmp_path)
    tasks = list(p.tasks)
    assert tasks == ["sst2", "tweets"]  # no MRPC
    assert [r["row"] for r in summary["rows"]] == list(p.rows) + ["autodistiller"]
    for r in summary["rows"]:
        for t in tasks:
            cell = r["tasks"][t]
            assert len(cell["per_seed"]) == len(p.seeds) and 0 <= cell["mean"] <= 100
            if r["row"] != "student":  # paired by seed against the student alone
                d = r["vs_student"][t]
                assert d["mean"] == pytest.approx(cell["mean"] - summary["rows"][0]["tasks"][t]
                                                  ["mean"])
    meta = autodistiller.read_table(tmp_path / "meta_table.csv")
    for t in tasks:
        pick = summary["picks"][t]
        assert candidates.canonical(pick["pipeline"]) == pick["pipeline"]
        # ONE pick: its recommendation, run with every seed, the row the table measures
        mine = [r for r in meta if r["task"] == t and r["source"] == "autodistiller"]
        assert len(mine) == len(p.seeds)
        assert all(candidates.key(autodistiller.pipe_of(r)) == candidates.key(pick["pipeline"])
                   for r in mine)
        assert pick["measured"]["mean"] == pytest.approx(
            100 * sum(r["score"] for r in mine) / len(mine))
        loto = summary["leave_one_task_out"][t]
        assert loto["rows"] == len(p.rows) * len(p.seeds) + p.search_budget
        assert loto["best_ratio"] >= loto["top_ranked_row_ratio"] - 1e-9
        best = json.loads((tmp_path / f"search_{t}" / "best_config.json").read_text())
        assert best["task"] == t and any("distill." in f for f in best["flags"])
        base = summary["baselines"][t]  # on the dev rows the runs score
        assert base["rows"] == p.tasks[t].eval_subset
        assert 0 <= base["random"] <= 100 and 0 <= base["majority"] <= 100
    # the augmented row costs a row: as many rows per step as the student's, half augmented
    dirs = {"student": tmp_path / "student_init", "teacher": tmp_path / "teacher_sst2" / "model",
            "mlm": tmp_path / "mlm" / "model"}
    aug = runs.student_config(p, "sst2", candidates.FIXED["augment"], 0, dirs)
    alone = runs.student_config(p, "sst2", candidates.FIXED["student"], 0, dirs)
    assert aug.train.batch_size == alone.train.batch_size == p.batch_size
    assert aug.augment.fraction == 0.5 and aug.data.split_seed == alone.data.split_seed == 0
    # only the rules whose rows ran (mi_alpha did not at this size), against the best fixed row
    assert [(v["rule"], v["task"]) for v in summary["rules"]] == [
        ("autodistiller", t) for t in tasks]
    for v in summary["rules"]:
        best = max(p.rows, key=lambda r, t=v["task"]: next(
            x for x in summary["rows"] if x["row"] == r)["tasks"][t]["mean"])
        assert v["b"] == best and v["verdict"] == "n < 2"  # one seed at :test size
    assert len(meta) == len(tasks) * (len(p.rows) * len(p.seeds) + p.search_budget
                                      + len(p.seeds))
    assert (tmp_path / "distiller.png").stat().st_size > 1000
    md = (tmp_path / "table.md").read_text()
    assert "AutoDistiller: one pick per task" in md and "SST-2 acc" in md
    assert "majority class / random / all class 1" in md and "MRPC" not in md
    # The command line on the same settings: a rerun (everything done before, nothing
    # trains) that writes the README section and ships the meta-table.
    begin, end = harness.markers("distiller")
    (tmp_path / "repo").mkdir()
    readme = tmp_path / "repo" / "README.md"
    readme.write_text(f"# x\n{begin}\nold\n{end}\n## Layout\n")
    monkeypatch.setattr(autodistiller, "TABLE", tmp_path / "shipped.csv")
    first = json.loads((tmp_path / "summary.json").read_text())
    config = f"{train_helpers.REPO / 'configs' / 'distiller_study.py'}:test"
    assert harness.main(distiller.STUDY, ["--config", config, f"--config.base_model={p.base_model}",
                                          f"--workdir={tmp_path}", f"--doc={readme}"]) == 0
    text = readme.read_text()
    assert "old" not in text and "](distiller.png)" in text and md in text
    assert "python -m prune_ofa_jax.study distiller --config" in text  # the writer's command
    assert text.endswith(f"{end}\n## Layout\n") and (tmp_path / "repo/distiller.png").exists()
    assert (tmp_path / "shipped.csv").read_text() == (tmp_path / "meta_table.csv").read_text()
    again = json.loads((tmp_path / "summary.json").read_text())
    assert again["rows"] == first["rows"] and again["wall_time_s"] < first["wall_time_s"]
    # the cost reported is every run's, not the last invocation's
    assert again["run_wall_time_s"] == first["run_wall_time_s"] > again["wall_time_s"]
    with pytest.raises(SystemExit) as bad_key:
        harness.main(distiller.STUDY, ["--config", config, "--config.stepz=3",
                                       f"--workdir={tmp_path}"])
    assert bad_key.value.code == 2
    assert "error: config.stepz: no such key" in capsys.readouterr().err
    with pytest.raises(ValueError, match="other settings"):
        p.steps += 1
        distiller.run(p, tmp_path)

    capsys.readouterr()
    assert autodistiller.main(["recommend", "--task", "sst2", "--top", "3", "--candidates", "8",
                               "--table", str(tmp_path / "meta_table.csv")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("1. predicted")
    assert autodistiller.main(["evaluate", "--table", str(tmp_path / "meta_table.csv")]) == 0
    assert set(json.loads(capsys.readouterr().out)) == set(tasks)
