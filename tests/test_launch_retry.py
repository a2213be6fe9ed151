"""launch/retry.sh, the restart loop of both launch scripts, on fake commands (milliseconds):
it reruns the same command on exit 143 (preempted after saving) with a doubling, capped
backoff, stops at once on any other failure, gives up after MAX_RESTARTS, survives a SIGTERM
to its whole process group (a preemption signals every process) and logs every attempt to
RETRY_LOG_DIR/attempts.log and stderr. And both launchers pin the commit and run under it:
launch/tpu_pod.sh's command for the workers (a fake `gcloud` records it), launch/multi_gpu.sh
in a scratch repository with a fake .venv/bin/python."""

import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
RETRY = REPO / "launch" / "retry.sh"

# Exits with the next status of STATUSES (one per attempt) and records its arguments; with
# "term", SIGTERMs its own process group (retry.sh included), then exits 143 as main does.
FAKE = """#!/usr/bin/env bash
n=$(cat "$CALLS" 2>/dev/null | wc -l)
echo "$*" >> "$CALLS"
status=$(echo "$STATUSES" | cut -d' ' -f$((n + 1)))
if [[ $status == term ]]; then trap 'exit 143' TERM; kill -TERM 0; exit 1; fi
exit "$status"
"""


@pytest.fixture
def env(tmp_path):
    """A fake command, and a fake `sleep` first on PATH that records the backoff and returns."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "fake").write_text(FAKE)
    (bin_dir / "sleep").write_text(f'#!/usr/bin/env bash\necho "$1" >> {tmp_path}/sleeps\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CALLS=str(tmp_path / "calls"),
                RETRY_LOG_DIR=str(tmp_path / "logs"), RETRY_BACKOFF_S="0")


def _retry(env, tmp_path, statuses: str, **extra):
    out = subprocess.run([str(RETRY), "fake", "--config", "c.py:x y"], env=dict(
        env, STATUSES=statuses, **extra), capture_output=True, text=True, timeout=30,
        start_new_session=True)  # a group of its own: the "term" fake signals only that
    calls = (tmp_path / "calls").read_text().splitlines()
    log = (tmp_path / "logs" / "attempts.log").read_text().splitlines()
    sleeps = (tmp_path / "sleeps").read_text().split() if (tmp_path / "sleeps").exists() else []
    return out, calls, log, sleeps


def test_reruns_on_143_with_backoff_and_logs_each_attempt(env, tmp_path):
    out, calls, log, sleeps = _retry(env, tmp_path, "143 143 143 0", RETRY_BACKOFF_S="30",
                                     RETRY_BACKOFF_MAX_S="100")
    assert out.returncode == 0, out.stderr
    assert calls == ["--config c.py:x y"] * 4  # the same command each time
    assert sleeps == ["30", "60", "100"]  # doubled, capped
    assert [line.split(" retry.sh: ")[1] for line in log] == [
        "attempt 1/21 start: fake --config c.py:x y",
        "attempt 1/21 exit 143: preempted; rerun in 30 s",
        "attempt 2/21 start: fake --config c.py:x y",
        "attempt 2/21 exit 143: preempted; rerun in 60 s",
        "attempt 3/21 start: fake --config c.py:x y",
        "attempt 3/21 exit 143: preempted; rerun in 100 s",
        "attempt 4/21 start: fake --config c.py:x y",
        "attempt 4/21 exit 0: done"]
    assert log[0][:2] == "20" and log[0][19] == "Z"  # UTC time first
    assert out.stderr.splitlines() == log


def test_any_other_failure_stops_at_once(env, tmp_path):
    out, calls, log, sleeps = _retry(env, tmp_path, "143 1 0")
    assert out.returncode == 1 and len(calls) == 2 and sleeps == ["0"]
    assert log[-1].endswith("attempt 2/21 exit 1: failed, not restarting")


def test_gives_up_after_max_restarts(env, tmp_path):
    out, calls, log, _ = _retry(env, tmp_path, "143 143 143 0", MAX_RESTARTS="2")
    assert out.returncode == 143 and len(calls) == 3
    assert log[-1].endswith("attempt 3/3 exit 143: preempted; no restarts left (MAX_RESTARTS=2)")


def test_a_sigterm_to_the_process_group_reruns(env, tmp_path):
    out, calls, log, _ = _retry(env, tmp_path, "term 0")
    assert out.returncode == 0 and len(calls) == 2, out.stderr
    assert any("SIGTERM received" in line for line in log)


def test_bad_setting_is_one_error_line(env, tmp_path):
    out = subprocess.run([str(RETRY), "true"], env=dict(env, MAX_RESTARTS="lots"),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr == ("error: MAX_RESTARTS=lots: must be a whole number >= 0 "
                          "(unset it for the default)\n")


def test_tpu_pod_pins_every_host_to_one_commit(env, tmp_path):
    (tmp_path / "bin" / "gcloud").write_text(
        f'#!/usr/bin/env bash\nprintf "%s\\0" "$@" > {tmp_path}/gcloud_args\n')
    (tmp_path / "bin" / "gcloud").chmod(0o755)
    out = subprocess.run(
        [str(REPO / "launch" / "tpu_pod.sh"), "my-tpu", "us-central2-b",
         "configs/prune_ofa_bert_base.py:90", "gs://b/run", "--config.train.steps=5"],
        env=dict(env, COMMIT="0123abc", REPO_URL="https://example.com/r.git"),
        capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    args = (tmp_path / "gcloud_args").read_text().split("\0")
    assert args[:6] == ["compute", "tpus", "tpu-vm", "ssh", "my-tpu", "--zone"]
    assert "--worker=all" in args
    remote = args[args.index("--command") + 1]
    assert "git checkout -q --detach 0123abc" in remote
    assert "launch/retry.sh .venv/bin/python -m prune_ofa_jax.main" in remote
    assert "--config.train.steps=5" in remote and "gs://b/run" in remote
    subprocess.run(["bash", "-n", "-c", remote], check=True)  # it parses


def test_multi_gpu_checks_out_commit_then_runs_under_retry(env, tmp_path):
    """In a scratch clone-alike: a fake .venv/bin/python that records the training command."""
    repo = tmp_path / "repo"
    (repo / "launch").mkdir(parents=True)
    for name in ("multi_gpu.sh", "retry.sh"):
        (repo / "launch" / name).write_bytes((REPO / "launch" / name).read_bytes())
        (repo / "launch" / name).chmod(0o755)
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").write_text(
        '#!/usr/bin/env bash\n[[ $1 == -c ]] && exit 0\n'
        'echo "$(git rev-parse HEAD) $*" >> "$CALLS"\nexit "${STATUSES%% *}"\n')
    (repo / ".venv" / "bin" / "python").chmod(0o755)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "launch"], check=True)
    subprocess.run(git + ["commit", "-qm", "one"], check=True)
    pinned = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    subprocess.run(git + ["commit", "-q", "--allow-empty", "-m", "two"], check=True)
    out = subprocess.run([str(repo / "launch" / "multi_gpu.sh"), "configs/x.py:y", "runs/a b"],
                         env=dict(env, COMMIT=pinned, STATUSES="0"), capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "calls").read_text() == (
        f"{pinned} -m prune_ofa_jax.main --config configs/x.py:y --workdir runs/a b\n")
    assert "attempt 1/21 exit 0: done" in (tmp_path / "logs" / "attempts.log").read_text()
