"""Command lines run as `python -m <module>` runs them (runpy, `__name__ == "__main__"`),
several in one driver process: each process start imports jax (seconds of CPU), so a test
of ten command lines pays it once. Each command's stdout and stderr are captured at the file
descriptors, so what C++ libraries write there (XLA, absl) appears as it would from a
process of its own; the commands run in turn, sharing the imports (the root logger is reset
between them: one command's logging set-up is not the next one's)."""

import json
import os
import subprocess
import sys

DRIVER = r"""
import json, logging, os, runpy, sys, tempfile, warnings
warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")
saved = {fd: os.dup(fd) for fd in (1, 2)}
root = (list(logging.root.handlers), logging.root.level)
out = {}
for name, (module, argv) in json.loads(sys.argv[1]).items():
    sys.argv = [module, *argv]
    logging.root.handlers[:] = root[0]
    logging.root.setLevel(root[1])
    code, files = "returned", {fd: tempfile.TemporaryFile() for fd in (1, 2)}
    for fd, f in files.items():
        os.dup2(f.fileno(), fd)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as x:
        code = x.code
    finally:
        sys.stdout.flush(); sys.stderr.flush()
        for fd in files:
            os.dup2(saved[fd], fd)
    text = {}
    for fd, f in files.items():
        f.seek(0)
        text[fd] = f.read().decode("utf-8", "replace")
    out[name] = {"code": code, "stdout": text[1], "stderr": text[2]}
print("RESULTS" + json.dumps(out), flush=True)
"""


def env() -> dict:
    return dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1")


def run_modules(checks: dict, cwd, environ: dict | None = None) -> dict:
    """checks: name -> (module, argv), run in this order in one process. Returns name ->
    {"code": exit status (or "returned"), "stdout": ..., "stderr": ...}."""
    checks = {k: (m, [str(a) for a in argv]) for k, (m, argv) in checks.items()}
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(checks)], cwd=cwd,
                          env=environ or env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "RESULTS" in proc.stdout, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULTS", 1)[1])
