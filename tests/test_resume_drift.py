"""No silent drift on resume (train/resume.py): the whole resolved config is compared with the
checkpoint's; a change outside the allow-list is one error naming each changed key, both
values and the way out; `resume.allow_changes` accepts a change; every start's config is
kept. Also the explicit-keys rule (an explicit train.steps beside a recipe's train.epochs)
and the config checks that need the devices or the model, before anything compiles."""

import json
import logging

import jax
import pytest
import train_helpers

from prune_ofa_jax import checkpoint as ckpt_lib
from prune_ofa_jax import cli, errors, main, presets
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.train import loop, resume, validate


def _meta(config, signature=None):
    return {"signature": signature or {}, resume.CONFIG: resume.flatten(config)}


def test_a_change_outside_the_allow_list_names_every_key_and_the_way_out(caplog):
    c = train_helpers.recipe("teacher_prep", "test")
    saved = _meta(c)
    c.train.steps, c.data.seq_len, c.sparsity.target = 16, 24, 0.5
    c.train.log_every, c.mesh.data = 1, 8  # allowed: logging cadence, device layout
    with pytest.raises(ckpt_lib.CheckpointMismatchError) as e:
        resume.check(c, {}, saved, 8, "DIR")
    msg = str(e.value)
    assert msg.startswith("this run differs from checkpoint step 8 in DIR (checkpoint -> now): ")
    for part in ("data.seq_len: 32 -> 24", "sparsity.target: 0.85 -> 0.5",
                 "train.steps: 8 -> 16", "a fresh --workdir", "--config.resume.allow_changes="
                 "data.seq_len,sparsity.target,train.steps"):
        assert part in msg, msg
    assert "log_every" not in msg and "mesh" not in msg and "\n" not in msg
    c.resume.allow_changes = ("data.seq_len,train.steps", "sparsity")  # keys, a prefix
    with caplog.at_level(logging.INFO, logger="prune_ofa_jax"):
        resume.check(c, {}, saved, 8, "DIR")
    assert "train.log_every: 2 -> 1" in caplog.text and "train.steps: 8 -> 16" in caplog.text


def test_model_shape_changes_cannot_be_allowed_and_new_keys_at_default_are_no_change():
    c = train_helpers.recipe("teacher_prep", "test")
    saved = _meta(c, {"model": {"hidden_size": 32, "hidden_dropout": 0.1}})
    del saved[resume.CONFIG]["train.skip_nonfinite"]  # a checkpoint from before the key
    resume.check(c, {"model": {"hidden_size": 32, "hidden_dropout": 0.0}}, saved, 4, "DIR")
    c.resume.allow_changes = ("model",)
    with pytest.raises(ckpt_lib.CheckpointMismatchError, match=r"model \(hidden_size\): 32 -> "
                       r"64.*cannot resume"):
        resume.check(c, {"model": {"hidden_size": 64}}, saved, 4, "DIR")


def test_an_old_checkpoint_without_a_config_uses_the_signature_with_a_warning(caplog):
    c = train_helpers.recipe("teacher_prep", "test")
    sig = {"task": "pretraining", "batch_size": 16}
    with caplog.at_level(logging.WARNING, logger="prune_ofa_jax"):
        resume.check(c, sig, {"signature": sig}, 4, "DIR")
    assert "has no stored config" in caplog.text
    with pytest.raises(ckpt_lib.CheckpointMismatchError, match="batch_size: checkpoint has 16"):
        resume.check(c, dict(sig, batch_size=32), {"signature": sig}, 4, "DIR")


def test_resume_refuses_a_changed_config_before_building_and_accepts_an_allowed_one(
        tiny_ckpts, tmp_path, monkeypatch):
    c = train_helpers.recipe("teacher_prep", "test", init=tiny_ckpts["bert"])
    c.train.steps, c.checkpoint.every = 2, 1
    loop.run(c, tmp_path)
    c.train.steps, c.task, c.data.nsp = 3, "mlm", False  # another task, and more steps
    built = []
    monkeypatch.setattr(loop.build_lib, "build", lambda *a, **k: built.append(1))
    with pytest.raises(ckpt_lib.CheckpointMismatchError, match=r"data.nsp: true -> false; "
                       r"task: \"pretraining\" -> \"mlm\"; train.steps: 2 -> 3.*"
                       r"--config.resume.allow_changes=data.nsp,task,train.steps$"):
        loop.run(c, tmp_path)
    assert not built  # refused before the model was built
    monkeypatch.undo()
    c.task, c.data.nsp = "pretraining", True
    c.resume.allow_changes = ("train.steps",)
    assert loop.run(c, tmp_path)["steps"] == 3
    starts = sorted((tmp_path / "configs").glob("*.json"))
    assert [p.name[:4] for p in starts] == ["001-", "002-"]  # the refused start left none
    assert json.loads(starts[0].read_text())["train"]["steps"] == 2
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 3
    assert "resuming checkpoint step 2" in (tmp_path / "log.txt").read_text()


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # config_flags' loader
def test_an_explicit_train_steps_beside_the_recipes_epochs_wins(tmp_path, monkeypatch):
    c = train_helpers.recipe("finetune_glue", "rte", resolve=False)
    assert c.train.epochs == 3  # the recipe's: 3 epochs
    c.train.steps = 150
    c = validate.explicit(presets.resolve(c), ("train.steps",))
    assert c.train.epochs == 0 and presets.resolve_steps(c).train.steps == 150
    both = train_helpers.recipe("finetune_glue", "rte")
    both.train.epochs = 2
    with pytest.raises(errors.ConfigError, match=r"config.train.steps: 1000 and "
                       r"config.train.epochs=2 are both given"):
        validate.explicit(both, ("train.steps", "train.epochs"))
    up = train_helpers.recipe("prune_ofa_bert_base", "90")  # warmup_steps 1000
    up.optim.warmup_fraction = 0.05
    up = validate.explicit(up, ("optim.warmup_fraction",))
    assert up.optim.warmup_steps == 0 and presets.resolve_steps(up).optim.warmup_steps == 5000
    # main.py passes the command line's keys to the loop
    seen = {}
    monkeypatch.setattr(main.loop, "run", lambda config, wd, **kw: seen.update(kw))
    monkeypatch.setattr(main.logs, "setup_console", lambda verbose: None)
    assert main.main(["--config", "configs/finetune_glue.py:rte", "--workdir", str(tmp_path),
                      "--config.train.steps=150", "--config.optim.lr", "1e-4"]) == 0
    assert seen["explicit"] == ("train.steps", "optim.lr")
    assert cli.override_keys(["--noconfig.train.progress"]) == ("train.progress",)


@pytest.mark.parametrize("over,devices,match", [
    ({"train.eval_batch_size": 12}, 8, "config.train.eval_batch_size: 12 rows do not split "
     "over the mesh's data x fsdp = 8 devices; use a multiple of 8"),
    ({"train.batch_size": 16, "train.grad_accum": 4}, 8, r"config.train.batch_size: 16 / "
     r"train.grad_accum=4 = 4 rows per microbatch .* use a multiple of 32"),
    ({"mesh.fsdp": 3}, 8, "config.mesh: data=-1, fsdp=3, tensor=1 do not fit the 8 devices"),
    ({"data.seq_len": 128}, 1, "config.data.seq_len: 128 is longer than the 64 positions the "
     "model of config.init.path embeds"),
    ({"model.overrides": {"num_layers": 4}}, 1, r"config.model.overrides.num_layers: 4 "
     r"conflicts with the checkpoint at config.init.path \(num_layers=2\)"),
    ({"checkpoint.keep": 0}, 1, "config.checkpoint.keep: must be >= 1"),
    ({"mesh.devices": 9}, 8, r"config.mesh.devices: 9: want 0 \(every device\) or 1..8 in a "
     "single-process run"),
    ({"init.path": "/nonexistent/model"}, 1, "config.init.path: /nonexistent/model does not "
     "exist"),
])
def test_config_errors_found_before_compiling(tiny_ckpts, over, devices, match):
    c = train_helpers.recipe("teacher_prep", "test", init=tiny_ckpts["bert"])
    c.update_from_flattened_dict(over)
    with pytest.raises(errors.ConfigError, match=match):
        validate.validate(c, device_count=devices)
        validate.check_models(c)


def test_mesh_devices_runs_on_the_first_n_devices_of_one_process(tiny_ckpts):
    """mesh.devices=N: the batch checks count N devices (12 rows do not split over 8), the
    mesh spans the first N, and a multi-process run must use every device."""
    c = train_helpers.recipe("teacher_prep", "test", init=tiny_ckpts["bert"])
    c.update_from_flattened_dict({"train.eval_batch_size": 12, "mesh.devices": 2})
    validate.validate(c, device_count=8)
    mesh = mesh_lib.from_config(c.mesh)
    assert mesh.devices.size == 2 and list(mesh.devices.flat) == jax.devices()[:2]
    with pytest.raises(errors.ConfigError, match=r"config.mesh.devices: 2: .*\(2 processes: "
                       "every device\)"):
        validate.validate(c, device_count=8, process_count=2)
