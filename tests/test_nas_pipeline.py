"""AutoTinyBERT's supernet as a run: the same loss on 8-way data parallel and 8-way FSDP,
one compiled step per bucket (counted), exact resume; and configs/autotinybert.py:test end to
end (report.json with "found" and "extracted", HF dirs that load in transformers)."""

import json

import jax
import numpy as np
import pytest
import train_helpers

from prune_ofa_jax import presets
from prune_ofa_jax.convert import params_ckpt
from prune_ofa_jax.nas import fitness, stages, supernet
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.train import inputs, loop


@pytest.fixture(scope="module")
def nas_config(tmp_path_factory):
    """configs/autotinybert.py:test with its random tiny teacher written once."""
    c = train_helpers.recipe("autotinybert", "test", resolve=False)
    c.lock()  # as the CLI's config flag hands it over
    root = tmp_path_factory.mktemp("nas")
    return stages._teacher(c, root), root  # pylint: disable=protected-access


def test_supernet_same_loss_dp_and_fsdp_one_compile_per_bucket(nas_config, monkeypatch):
    c, _ = nas_config
    c = presets.resolve(c)
    c.nas.buckets.hidden = (24, 48)   # two compiled shapes
    traces = []
    real = supernet.supernet_step
    monkeypatch.setattr(supernet, "supernet_step",
                        lambda *a, **k: (traces.append(k["shape"]), real(*a, **k))[1])
    data = inputs.make_sources(c)
    losses = {}
    for key, mesh in (("dp8", mesh_lib.make_mesh(8, 1, 1)), ("fsdp8", mesh_lib.make_mesh(1, 8, 1))):
        traces.clear()
        run = supernet.build(c, mesh=mesh)
        if key == "fsdp8":
            assert any("fsdp" in str(s.spec) for s in jax.tree.leaves(run.state_shardings.params))
        state, losses[key] = run.state, []
        for step in range(6):
            batch = mesh_lib.global_batch(data.train.batch(step), mesh)
            state, metrics = run.step_fn(state, run.teacher_params, batch)
            losses[key].append(float(metrics["loss"]))
            assert int(metrics["hidden"]) == run.step_fn.arch_at(step).hidden
        shapes = {run.buckets.of(run.step_fn.arch_at(s)) for s in range(6)}
        assert len(shapes) == 2  # both buckets drawn (seeded), each compiled once
        assert run.step_fn.compiles == len(traces) == len(shapes) == len(set(traces))
    assert np.all(np.isfinite(losses["dp8"]))
    np.testing.assert_allclose(losses["fsdp8"], losses["dp8"], rtol=0, atol=1e-5)


def _interrupting(real, step_at: int):
    def make(cfg):
        src = real(cfg)
        batch = src.train.batch

        def interrupted(step):
            if step == step_at and cfg.task == "mlm":
                raise KeyboardInterrupt("simulated kill")
            return batch(step)
        src.train.batch = interrupted
        return src
    return make


def test_autotinybert_test_config_end_to_end_with_resume(nas_config, monkeypatch):
    import transformers
    c, root = nas_config
    straight = loop.run(c, root / "straight", build_fn=supernet.build)
    wd = root / "pipeline"
    real = inputs.make_sources
    monkeypatch.setattr(inputs, "make_sources", _interrupting(real, 3))
    with pytest.raises(KeyboardInterrupt):   # killed in the supernet stage after step 2
        stages.run(c, wd)
    monkeypatch.setattr(inputs, "make_sources", real)
    report = stages.run(c, wd)             # the same command: resumes, then the rest
    assert "resumed from step 2" in (wd / "1_supernet" / "log.txt").read_text()
    a, _, _ = params_ckpt.load_params(root / "straight" / "model")
    b, _, _ = params_ckpt.load_params(wd / "1_supernet" / "model")
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert straight["steps"] == 4
    on_disk = json.loads((wd / "report.json").read_text())
    assert set(on_disk["found"]) == {"1x", "1.25x"} and on_disk["found"] == report["found"]
    for key, f in on_disk["found"].items():
        assert set(f["arch"]) == {"layers", "hidden", "ffn", "qkv"}
        assert set(f["predicted_ms"]) == set(f["measured_ms"]) == {"1", "2"}
        lo, hi = f["window_ms"]
        assert lo <= f["predicted_ms"]["1"] <= hi
        acc = f["finetuned"]["sst2"]["accuracy"]
        assert 0.0 <= acc["mean"] <= 1.0 and acc["per_seed"] == [acc["mean"]]  # one seed
        assert on_disk["extracted"][f"searched_{key}"] == f["hf_dir"]
    for path in on_disk["extracted"].values():
        model = transformers.BertModel.from_pretrained(path)
        assert model.config.hidden_size in (24, 48)
    # the uniform baseline is cut from the supernet, as the searched models are
    src = json.loads((wd / "4_extract" / "uniform_L1" / "autotinybert.json").read_text())
    assert src["supernet"] == str(wd / "1_supernet" / "model")
    # the search's fitness scored held-out training rows, never the dev set
    assert on_disk["fitness"]["scored_on"] == "32 train rows held out"
    base = on_disk["baselines"]["sst2"]
    assert base["rows"] == 64 and 0.5 <= base["majority"]["accuracy"] < 1
    # latency: the teacher timed beside every arch, in worker processes of their own
    assert len(on_disk["latency"]["teacher_ms_groups"]) >= 4
    assert set(on_disk["prune_ofa"]["time_ratio"]) == {"1", "2"}
    assert (wd / "autotinybert.png").stat().st_size > 1000
    assert on_disk["latency"]["n_archs"] >= 4 and on_disk["prune_ofa"]["sparsity"] == 0.8
    # every stage done: a rerun only re-reads, and its report keeps the cost of all invocations
    walls = on_disk["stage_wall_s"]
    again = stages.run(c, wd)
    assert again["found"] == report["found"]
    assert all(again["stage_wall_s"][k] >= v for k, v in walls.items())
    assert again["wall_time_s"] >= on_disk["wall_time_s"] > again["wall_time_s"] / 2


def test_fitness_holds_out_training_rows_fixed_by_the_split_seed():
    held, rest = fitness.heldout_split(100, 20, 0)
    assert len(held) == 20 and len(rest) == 80 and not set(held) & set(rest)
    np.testing.assert_array_equal(fitness.heldout_split(100, 20, 0)[0], held)  # stable
    assert not np.array_equal(fitness.heldout_split(100, 20, 1)[0], held)  # the split seed's
    _, sub = fitness.heldout_split(100, 20, 0, train_subset=10)
    assert len(sub) == 10 and set(sub) <= set(rest)


def test_a_stage_finished_with_other_settings_is_not_reused(nas_config, tmp_path):
    c, _ = nas_config
    wd = tmp_path / "3_search"
    wd.mkdir()
    with pytest.raises(ValueError, match="delete 3_search, 4_extract and 5_finetune"):
        stages._check_done(c, "3_search", wd)  # no record: run by another method
    stages._mark_done(c, "3_search", wd)
    stages._check_done(c, "3_search", wd)  # the same settings: reused
    key = json.loads((wd / "settings.json").read_text())
    key["fitness"]["heldout_rows"] += 1
    (wd / "settings.json").write_text(json.dumps(key))
    with pytest.raises(ValueError, match="other settings"):
        stages._check_done(c, "3_search", wd)
