"""The run loop on real data: scheduled sparsity, frozen masks, checkpoints only on the
interval and at the end, exact resume after a kill and after SIGTERM (and from an older
step when the newest is damaged), the NaN guard, strict JSON outputs and config errors
before compiling. A changed config on resume: tests/test_resume_drift.py."""

import os
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import train_helpers

from prune_ofa_jax import checkpoint as ckpt_lib
from prune_ofa_jax import errors, jsonio, paths
from prune_ofa_jax.convert import params_ckpt
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.sparsity import schedules
from prune_ofa_jax.train import build, inputs, loop, synthetic, validate


@pytest.fixture(scope="module")
def init_dir(tiny_ckpts):
    return tiny_ckpts["bert"]


def _pruning_config(init_dir, **over):
    c = train_helpers.recipe("prune_ofa_bert_base", "test", init=init_dir, teacher=init_dir)
    c.train.steps, c.train.log_every, c.checkpoint.every = 8, 1, 4
    c.sparsity.end_step, c.sparsity.update_every, c.sparsity.freeze_step = 4, 2, 6
    c.update_from_flattened_dict(over)  # {"sparsity.regrow": True, ...}
    return c


def test_masks_follow_schedule_then_freeze(init_dir, tmp_path):
    c = _pruning_config(init_dir, **{"sparsity.regrow": True,  # regrow: masks *could* move
                                     "checkpoint.every": 3, "checkpoint.keep": 5})
    report = loop.run(c, tmp_path)
    # on the interval and at the end; never the first step (Orbax's own policy saves it)
    assert ckpt_lib.make_manager(tmp_path / "checkpoints").all_steps() == [3, 6, 8]
    assert jsonio.loads_strict((tmp_path / "report.json").read_text()) == report
    sched = schedules.CubicSchedule(target=c.sparsity.target, end_step=4, update_every=2,
                                    freeze_step=6)
    logged = [jsonio.loads_strict(line) for line in (tmp_path / "metrics.jsonl").open()]
    by_step = {m["step"]: m["sparsity"] for m in logged if "sparsity" in m}
    for done, s in by_step.items():
        last_update = max(u for u in (0, 2, 4) if u <= done - 1)
        assert s == pytest.approx(float(sched(last_update)), abs=2e-3), (done, s)
    assert report["sparsity"]["global"] == pytest.approx(c.sparsity.target, abs=2e-3)
    assert report["steps"] == 8 and (tmp_path / "model" / "model.json").exists()


def test_masks_change_only_on_update_steps(init_dir):
    c = _pruning_config(init_dir, **{"sparsity.regrow": True})
    run = build.build(c, mesh=mesh_lib.make_mesh(8, 1, 1))
    state, history = run.state, []
    for i in range(8):
        batch = synthetic.batch("pretraining", 16, 32, 30522, max_predictions=5, seed=i)
        state, _ = run.step_fn(state, run.teacher_params, mesh_lib.global_batch(batch, run.mesh))
        history.append([np.array(m) for m in jax.tree.leaves(state.masks)])
    changed = [i for i in range(1, 8)
               if any((a != b).any() for a, b in zip(history[i - 1], history[i]))]
    assert set(changed) <= {2, 4}, changed  # updates at 0, 2, 4; none at/after freeze (6)
    assert 2 in changed


def _interrupting(real, step_at: int, action):
    """make_sources whose train source calls `action` when asked for batch `step_at`."""
    def make(cfg):
        src = real(cfg)
        batch = src.train.batch

        def interrupted(step):
            if step == step_at:
                action()
            return batch(step)
        src.train.batch = interrupted
        return src
    return make


def _kill():
    raise KeyboardInterrupt("simulated kill")


@pytest.mark.slow
def test_kill_and_sigterm_resume_equal_uninterrupted(init_dir, tmp_path, monkeypatch):
    """SIGTERM during step 6: the step finishes, is saved, and the run stops cleanly; a hard
    kill during step 8 then loses step 7 only. Then step 6's checkpoint is damaged (a
    truncated array file): the same command falls back to step 4 (state and data position)
    with one warning and still reaches the uninterrupted params bit for bit."""
    c = _pruning_config(init_dir)
    loop.run(c, tmp_path / "straight")
    real, wd = inputs.make_sources, tmp_path / "interrupted"
    handler_before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(inputs, "make_sources", _interrupting(
        real, 5, lambda: os.kill(os.getpid(), signal.SIGTERM)))
    with pytest.raises(loop.Preempted, match="after step 6"):
        loop.run(c, wd)
    assert signal.getsignal(signal.SIGTERM) is handler_before  # our handler removed again
    assert ckpt_lib.make_manager(wd / "checkpoints").all_steps() == [4, 6]
    monkeypatch.setattr(inputs, "make_sources", _interrupting(real, 7, _kill))
    with pytest.raises(KeyboardInterrupt):
        loop.run(c, wd)  # resumes from 6, killed before step 8 is saved
    assert not (wd / "report.json").exists()
    assert ckpt_lib.make_manager(wd / "checkpoints").latest_step() == 6
    monkeypatch.setattr(inputs, "make_sources", real)
    array_file = max((wd / "checkpoints" / "6" / "state").rglob("d/*"),
                     key=lambda p: p.stat().st_size)
    array_file.write_bytes(array_file.read_bytes()[:100])
    report = loop.run(c, wd)  # same command: step 6 is damaged, resumes from step 4
    assert report["steps"] == 8
    a, _, _ = params_ckpt.load_params(tmp_path / "straight" / "model")
    b, _, _ = params_ckpt.load_params(wd / "model")
    jax.tree.map(np.testing.assert_array_equal, a, b)
    log_txt = (wd / "log.txt").read_text()
    assert "resumed from step 6" in log_txt and "absl" in log_txt  # library INFO kept
    assert log_txt.count("is damaged") == 1 and "checkpoint step 6 in" in log_txt
    assert "resumed from step 4" in log_txt.split("is damaged")[1]
    assert len(list((wd / "configs").glob("*.json"))) == 3  # every start's config kept


def test_nan_loss_stops_and_keeps_last_good_checkpoint(init_dir, tmp_path, monkeypatch):
    c = _pruning_config(init_dir, **{"checkpoint.every": 1})
    real = inputs.make_sources

    def poisoned(cfg):
        src = real(cfg)
        batch = src.train.batch

        def nan_at_3(step):
            out = dict(batch(step))
            if step == 3:
                out["masked_lm_weights"] = np.full_like(out["masked_lm_weights"], np.nan)
            return out
        src.train.batch = nan_at_3
        return src
    monkeypatch.setattr(inputs, "make_sources", poisoned)
    with pytest.raises(loop.NonFiniteLossError, match="step 3"):
        loop.run(c, tmp_path)
    manager = ckpt_lib.make_manager(tmp_path / "checkpoints")
    assert manager.latest_step() == 3
    restored = manager.restore(3, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    restored = restored["state"]
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored["params"]))


@pytest.mark.parametrize("key,value,match", [
    ("sparsity.target", 1.5, "config.sparsity.target"),
    ("train.grad_accum", 3, "config.train.grad_accum"),
    ("sparsity.pattern", "3:2", "config.sparsity.pattern"),
    ("task", "ner", "config.task"),
])
def test_bad_config_fails_before_compiling(init_dir, key, value, match):
    c = _pruning_config(init_dir, **{key: value})
    with pytest.raises(errors.ConfigError, match=match):
        validate.validate(c)


def test_logs_go_to_the_workdir_when_local_and_to_a_local_dir_for_a_bucket(tmp_path):
    assert loop.log_dir(tmp_path / "run") == tmp_path / "run"
    assert loop.log_dir("gs://bucket/runs/a") == loop.LOCAL_LOGS / "gs_bucket_runs_a"
    assert str(paths.absolute("gs://bucket/runs/a")) == "gs://bucket/runs/a"
    assert paths.absolute("rel").is_absolute()
