"""Multi-host for real: every recipe family as 2 JAX processes x 4 CPU devices
(jax.distributed with a local coordinator, gloo collectives) ends with the report metrics
and final params of the same recipe as 1 process x 8 devices, and a SIGTERM to the whole
process group (both JAX processes and their Grain workers) stops a run at one step on both
hosts, from which the same command resumes to the uninterrupted run's params.

One launch of two processes runs, in turn: the GLUE fine-tune through the real CLI
(`python -m prune_ofa_jax.main --config configs/finetune_glue.py:sst2,test
--config.mesh.data=8`, run as `python -m` runs it), SQuAD, QAT on STS-B (regression and
quantisation ranges in one run) and disaster tweets (2 steps each: the gradients'
cross-process all-reduce and the eval's gather both count), then the upstream recipe
(teacher, KD, mask updates) on a prepared corpus streamed by a Grain worker per host on a
data x FSDP mesh, SIGTERMed as a group before its 3rd pull from the input, so that batch comes
from signalled workers. A second launch reruns that command.

Float32, not bit for bit: gloo sums a cross-process all-reduce in another order than XLA's
in-process one (measured: identical zeros, the largest difference 2.5e-7, on a weight of
0.06). Costly by nature (process start-up, gloo's connection set-up, a compile per program),
so it is one test, with as few steps as still check something; the worker shares compiles
between the processes (multihost_worker.py)."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import train_helpers

from prune_ofa_jax import checkpoint as ckpt_lib
from prune_ofa_jax.convert import params_ckpt
from prune_ofa_jax.train import loop

WORKER = train_helpers.REPO / "tests" / "multihost_worker.py"
CLI = ["--config", "configs/finetune_glue.py:sst2,test", "--config.mesh.data=8",
       "--config.train.steps=2", "--config.checkpoint.every=1000"]
SHORT = {"train.steps": 2, "train.log_every": 1, "checkpoint.every": 1000}
FINETUNES = {"squad": ("finetune_squad", "test"), "qat_stsb": ("qat", "stsb,test"),
             "tweets": ("finetune_tweets", "test")}
PAUSE_AT = 3  # the upstream run is SIGTERMed before its 3rd pull from the input (of 8)


def _upstream(init_dir, prepared, worker_count: int) -> dict:
    return {"init.path": init_dir, "teacher.path": init_dir, "data.prepared": str(prepared),
            "mesh.data": 2, "mesh.fsdp": 4, "train.log_every": 1, "checkpoint.every": 1000,
            "data.worker_count": worker_count}


def _stsb_root(shared_data, root: pathlib.Path) -> str:
    """STS-B-shaped TSVs (the shared data has no STS-B): MRPC's sentence pairs, each scored
    0-5 from its label and the pair's length ratio, so the scores are continuous."""
    for split in ("train", "dev"):
        lines = (shared_data / "glue" / "MRPC" / f"{split}.tsv").read_text(
            encoding="utf-8-sig").splitlines()[1:]
        rows = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
                "sentence2\tscore"]
        for i, line in enumerate(lines):
            label, _, _, a, b = line.split("\t")
            score = 2.5 * int(label) + 2.5 * min(len(a), len(b)) / max(len(a), len(b), 1)
            rows.append(f"{i}\tmain\tmrpc\t2004\t{i}\tnone\tnone\t{a}\t{b}\t{score:.3f}")
        (root / "STS-B").mkdir(parents=True, exist_ok=True)
        (root / "STS-B" / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(root)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(plan: list, log_stem: pathlib.Path, sigterm_dir: str | None = None) -> list:
    """Runs the plan as 2 processes in a process group of their own; with `sigterm_dir`,
    SIGTERMs the group once both processes wait at its pause. [(exit code, output tail)]
    (output in files: a full pipe would block one process and, through the collectives,
    the other)."""
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"localhost:{_free_port()}",
               JAX_NUM_PROCESSES="2", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(train_helpers.REPO),
                                           str(train_helpers.REPO / "tests")]),
               XLA_FLAGS=os.environ["XLA_FLAGS"].replace("device_count=8", "device_count=4"))
    logs = [pathlib.Path(f"{log_stem}.{i}.out") for i in range(2)]
    procs = []
    for i, log in enumerate(logs):
        with open(log, "w", encoding="utf-8") as out:
            group = procs[0].pid if procs else 0  # 0: a new group, led by process 0
            procs.append(subprocess.Popen(
                [sys.executable, str(WORKER), json.dumps(plan)], cwd=train_helpers.REPO,
                env=dict(env, JAX_PROCESS_ID=str(i)), stdout=out, stderr=subprocess.STDOUT,
                process_group=group))
    ready = [pathlib.Path(f"{sigterm_dir}.ready{i}") for i in range(2)]
    deadline = time.time() + 600
    try:
        while any(p.poll() is None for p in procs) and time.time() < deadline:
            if sigterm_dir and all(r.exists() for r in ready):
                os.killpg(procs[0].pid, signal.SIGTERM)  # both hosts and their Grain workers
                pathlib.Path(f"{sigterm_dir}.sent").touch()
                sigterm_dir = None
            time.sleep(0.1)
    finally:
        for p in procs:
            p.kill()
    return [(p.wait(), log.read_text()[-3000:]) for p, log in zip(procs, logs)]


def _zero_gradient(path: str, task: str, num_layers: int) -> bool:
    """Leaves whose exact gradient is zero: each adds one constant to all the logits a softmax
    normalises (attention key biases; in QA, the start/end biases and the last LayerNorm's
    bias, which shift every position's start and end logit alike). All they get is float32
    rounding noise, which Adam scales up to steps of up to the learning rate."""
    return (path.endswith("attention/key/bias") or (task == "qa" and (
        path.endswith("qa_outputs/bias")
        or path.endswith(f"layer_{num_layers - 1}/ffn/layer_norm/bias"))))


def _assert_params_close(dir_a, dir_b, noise_bound: float):
    a, cfg, task = params_ckpt.load_params(dir_a)
    b, _, _ = params_ckpt.load_params(dir_b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        path = "/".join(str(getattr(k, "key", k)) for k in path)
        x, y = np.asarray(x), np.asarray(y)
        if _zero_gradient(path, task, cfg.num_layers):
            np.testing.assert_allclose(x, y, rtol=0, atol=noise_bound, err_msg=path)
            continue
        flipped = (x == 0) != (y == 0)  # a weight at the magnitude threshold could tie
        assert flipped.mean() <= 1e-3, (path, flipped.sum())
        np.testing.assert_allclose(x[~flipped], y[~flipped], rtol=1e-5, atol=1e-6,
                                   err_msg=path)


def _assert_same_report(single: dict, workdir: pathlib.Path, config):
    """The same metrics (a discrete one, accuracy or EM, moves in steps of 1/64 here, so any
    flipped prediction fails; STS-B's Pearson over the near-constant predictions of a 2-step
    random model carries ~1e-5 of float32 noise), sparsity and params."""
    report = json.loads((workdir / "report.json").read_text())
    assert report["steps"] == single["steps"]
    assert report["eval"] == pytest.approx(single["eval"], rel=1e-5, abs=1e-4), workdir
    assert report["sparsity"]["global"] == pytest.approx(single["sparsity"]["global"])
    _assert_params_close(single["model_dir"], workdir / "model",
                         noise_bound=config.optim.lr * single["steps"])


@pytest.mark.slow
def test_recipes_two_processes_match_one_and_resume_after_sigterm(tiny_ckpts, prepared_corpus,
                                                                  shared_data, tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    over = {k: dict(SHORT) for k in FINETUNES}
    over["qat_stsb"]["data.root"] = _stsb_root(shared_data, tmp_path / "data")
    plan = [{"workdir": str(two / "glue_cli"), "cli": CLI + ["--workdir", str(two / "glue_cli")]}]
    plan += [{"workdir": str(two / k), "recipe": r, "arg": a, "overrides": over[k]}
             for k, (r, a) in FINETUNES.items()]
    up = {"workdir": str(two / "upstream"), "recipe": "prune_ofa_bert_base", "arg": "test",
          "overrides": _upstream(tiny_ckpts["bert"], prepared_corpus, 1)}
    first = _launch(plan + [dict(up, pause_at=PAUSE_AT)], tmp_path / "first", up["workdir"])
    assert [rc for rc, _ in first] == [143, 143], first  # every fine-tune ended with 0

    # the single-process runs: the CLI's config, the fine-tunes, upstream uninterrupted
    singles = {"glue_cli": train_helpers.recipe("finetune_glue", "sst2,test", resolve=False)}
    singles["glue_cli"].update_from_flattened_dict(
        {"mesh.data": 8, "train.steps": 2, "checkpoint.every": 1000})
    for k, (r, a) in FINETUNES.items():
        singles[k] = train_helpers.recipe(r, a, resolve=False)
        singles[k].update_from_flattened_dict(over[k])
    singles["upstream"] = train_helpers.recipe("prune_ofa_bert_base", "test", resolve=False)
    singles["upstream"].update_from_flattened_dict(
        _upstream(tiny_ckpts["bert"], prepared_corpus, 0))
    reports = {k: loop.run(c, one / k) for k, c in singles.items()}
    assert jax.process_count() == 1

    for k in ("glue_cli", *FINETUNES):
        _assert_same_report(reports[k], two / k, singles[k])
    single_q, two_q = (json.loads((d / "qat_stsb" / "model" / "quant.json").read_text())
                       for d in (one, two))  # the QAT ranges, gathered from every host
    assert two_q["config"] == single_q["config"]
    assert two_q["ranges"].keys() == single_q["ranges"].keys()
    for k, r in single_q["ranges"].items():
        assert two_q["ranges"][k] == pytest.approx(r, rel=1e-5, abs=1e-6), k
    assert (two / "glue_cli" / "log.process1.txt").is_file()  # each host its log

    # preempted: both hosts saved the same step, each with its Grain state, then exited 143
    wd = two / "upstream"
    saved = ckpt_lib.make_manager(wd / "checkpoints").latest_step()
    assert PAUSE_AT <= saved < reports["upstream"]["steps"], saved
    data = sorted(p.name for p in (wd / "checkpoints" / str(saved) / "data").glob("*.json"))
    assert data == ["process_0-of-2.json", "process_1-of-2.json"]
    for log in ("log.txt", "log.process1.txt"):
        assert f"checkpoint: step {saved} ->" in (wd / log).read_text(), log
    assert not (wd / "report.json").exists()

    done = _launch([up], tmp_path / "rerun")
    assert [rc for rc, _ in done] == [0, 0], done
    log_txt = (wd / "log.txt").read_text()
    assert f"resumed from step {saved}" in log_txt and "(8 devices)" in log_txt
    _assert_same_report(reports["upstream"], wd, singles["upstream"])
