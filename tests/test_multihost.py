"""Multi-host for real: the :test upstream recipe (masks updated, teacher, KD) on a prepared
corpus as 2 JAX processes x 4 CPU devices (jax.distributed with a local coordinator, gloo
collectives), on a data x FSDP mesh, killed hard after its first checkpoint and resumed by
the same command, ends with the params of the single-process 8-device run: the same
masks, the same weights to float32 rounding: gloo sums a cross-process all-reduce in another
order than XLA's in-process one, so the runs are not bit-identical (measured here: identical
zeros, the largest difference 6e-8, on a LayerNorm scale of 1.0).

Costly by nature (two launches of two processes; most of it is start-up and gloo's
connection set-up), so it is one test with few steps."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
import train_helpers

from prune_ofa_jax import checkpoint as ckpt_lib
from prune_ofa_jax.convert import params_ckpt
from prune_ofa_jax.train import loop

WORKER = train_helpers.REPO / "tests" / "multihost_worker.py"


def _overrides(init_dir, prepared):
    return {"init.path": init_dir, "teacher.path": init_dir, "data.prepared": str(prepared),
            "mesh.data": 2, "mesh.fsdp": 4, "train.steps": 4, "train.log_every": 1,
            "checkpoint.every": 2, "sparsity.end_step": 2, "sparsity.update_every": 1,
            "sparsity.freeze_step": 3, "data.worker_count": 0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(workdir, overrides, kill_at: int) -> list:
    """Runs both processes to the end; [(exit code, output tail)] (output in files: a full
    pipe would block one process and, through the collectives, the other)."""
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"localhost:{_free_port()}",
               JAX_NUM_PROCESSES="2", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(train_helpers.REPO),
                                           str(train_helpers.REPO / "tests")]),
               XLA_FLAGS=os.environ["XLA_FLAGS"].replace("device_count=8", "device_count=4"))
    logs = [pathlib.Path(f"{workdir}.launch{kill_at}.{i}.out") for i in range(2)]
    procs = []
    for i, log in enumerate(logs):
        with open(log, "w", encoding="utf-8") as out:
            procs.append(subprocess.Popen(
                [sys.executable, str(WORKER), str(workdir), json.dumps(overrides),
                 str(kill_at)], env=dict(env, JAX_PROCESS_ID=str(i)), stdout=out,
                stderr=subprocess.STDOUT))
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [(rc, log.read_text()[-3000:]) for rc, log in zip(codes, logs)]


def test_two_processes_resume_to_the_single_process_params(tiny_ckpts, prepared_corpus,
                                                           tmp_path):
    over = _overrides(tiny_ckpts["bert"], prepared_corpus)
    c = train_helpers.recipe("prune_ofa_bert_base", "test", resolve=False)
    c.update_from_flattened_dict(dict(over, **{"data.worker_count": 2}))  # Grain workers
    single = loop.run(c, tmp_path / "single")
    wd = tmp_path / "two"
    died = _launch(wd, over, 4)  # dies fetching the batch of step 3: checkpoint 2 is the last
    assert jax.process_count() == 1 and single["steps"] == 4
    assert [rc for rc, _ in died] != [0, 0], died
    assert ckpt_lib.make_manager(wd / "checkpoints").latest_step() == 2
    data = sorted(p.name for p in (wd / "checkpoints" / "2" / "data").glob("*.json"))
    assert data == ["process_0-of-2.json", "process_1-of-2.json"]  # Grain state per host
    done = _launch(wd, over, kill_at=0)
    assert [rc for rc, _ in done] == [0, 0], done
    log_txt = (wd / "log.txt").read_text()
    assert "resumed from step 2" in log_txt and "(8 devices)" in log_txt
    report = json.loads((wd / "report.json").read_text())
    assert report["steps"] == 4
    assert report["eval"] == pytest.approx(single["eval"], rel=1e-6)
    assert report["sparsity"]["global"] == single["sparsity"]["global"]
    a, _, _ = params_ckpt.load_params(tmp_path / "single" / "model")
    b, _, _ = params_ckpt.load_params(wd / "model")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        flipped = (x == 0) != (y == 0)  # a weight at the magnitude threshold could tie
        assert flipped.mean() <= 1e-3, flipped.sum()
        # Adam turns reordering noise in a ~0 gradient (a key bias) into ~1e-8 steps
        np.testing.assert_allclose(x[~flipped], y[~flipped], rtol=1e-5, atol=1e-6)
