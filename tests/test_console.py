"""The command line as a user runs it: a short fine-tune's console shows our own lines, the
progress bar and warnings, and at most ~15 other lines; the full log, library INFO included,
is WORKDIR/log.txt; --verbose brings library INFO back to the console."""

import re
import subprocess
import sys

import pytest

import train_helpers

from prune_ofa_jax import jsonio

MAX_CONSOLE_LINES = 15
_FILE_LINE = re.compile(r"^\S+ \S+ ([IWEC]) (\S+): (.*)$")  # logs._FILE_FORMAT


def _main(workdir, init, *extra):
    cmd = [sys.executable, "-m", "prune_ofa_jax.main",
           f"--config={train_helpers.REPO / 'configs' / 'finetune_glue.py'}:sst2,test",
           f"--workdir={workdir}", f"--config.init.path={init}",
           "--config.train.progress=True", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          cwd=train_helpers.REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [x for x in re.split(r"[\r\n]", proc.stdout + proc.stderr) if x.strip()]
    progress = [x for x in lines if x.startswith("train:")]  # the tqdm bar's redraws
    return [x for x in lines if x not in progress], progress


def _library_info(log_txt: str) -> list[str]:
    """Messages logged at INFO by libraries (not by prune_ofa_jax) in log.txt."""
    out = []
    for line in log_txt.splitlines():
        m = _FILE_LINE.match(line)
        if m and m.group(1) == "I" and not m.group(2).startswith("prune_ofa_jax"):
            out.append(m.group(3))
    return out


@pytest.mark.slow
def test_short_finetune_console_is_quiet_and_log_is_complete(tmp_path, tiny_ckpts):
    init = tiny_ckpts["bert"]  # MLM+NSP heads: the new classifier is reported (a warning)
    workdir = tmp_path / "run"
    console, progress = _main(workdir, init)
    assert progress, "no progress bar"
    assert len(console) <= MAX_CONSOLE_LINES, "\n".join(console)
    assert any(x.startswith("outputs:") for x in console), console
    assert any(x.startswith("eval at step 8:") for x in console), console
    library = _library_info((workdir / "log.txt").read_text())
    assert len(library) >= 5  # Orbax and JAX INFO is kept in the file ...
    assert not [m for m in library if any(m in x for x in console)]  # ... not on the console
    assert jsonio.loads_strict((workdir / "report.json").read_text())["steps"] == 8

    verbose, _ = _main(workdir, init, "--verbose")  # finished run: final eval, report again
    assert len(verbose) > len(console)
    rerun = _library_info((workdir / "log.txt").read_text())[len(library):]
    assert rerun and any(rerun[-1] in x for x in verbose)
