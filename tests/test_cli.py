"""Every command line has one style (prune_ofa_jax/cli.py): `--help` exits 0 and names the
command as it is typed; a bad flag, a bad config key or a missing config file is one `error:`
line and exit status 2; old spellings still work, with one `warning:` line; a config error
at run time is one line too, and lands in WORKDIR/log.txt with its traceback.

The checks run as `python -m <module>` does, batched in one driver process
(tests/cli_helpers.py), next to one real `python -m` subprocess, from a directory outside
the repository (so recipes resolve as packaged)."""

import ast
import concurrent.futures
import pathlib
import subprocess
import sys

import cli_helpers
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "prune_ofa_jax"
FINETUNE = "configs/finetune_glue.py:sst2,test"

# Every entry point: module -> how its usage names it. The last three are old spellings.
COMMANDS = {
    "prune_ofa_jax": "python -m prune_ofa_jax",
    "prune_ofa_jax.main": "python -m prune_ofa_jax.main",
    "prune_ofa_jax.bench": "python -m prune_ofa_jax.bench",
    "prune_ofa_jax.convert": "python -m prune_ofa_jax.convert",
    "prune_ofa_jax.data.prepare": "python -m prune_ofa_jax.data.prepare",
    "prune_ofa_jax.distill.student": "python -m prune_ofa_jax.distill.student",
    "prune_ofa_jax.kdsearch.random_search": "python -m prune_ofa_jax.kdsearch.random_search",
    "prune_ofa_jax.kdsearch.autodistiller": "python -m prune_ofa_jax.kdsearch.autodistiller",
    "prune_ofa_jax.nas": "python -m prune_ofa_jax.nas",
    "prune_ofa_jax.nas.extract": "python -m prune_ofa_jax.nas.extract",
    "prune_ofa_jax.study": "python -m prune_ofa_jax.study",
    "prune_ofa_jax.study.mask_methods": "python -m prune_ofa_jax.study masks",
    "prune_ofa_jax.study.reproduce": "python -m prune_ofa_jax.study reproduce",
    "prune_ofa_jax.study.distiller": "python -m prune_ofa_jax.study distiller",
    "prune_ofa_jax.study.tweets": "python -m prune_ofa_jax.study.tweets",
    "prune_ofa_jax.prune_once": "python -m prune_ofa_jax.prune_once",
    "prune_ofa_jax.study.masks": "python -m prune_ofa_jax.study masks",
    "prune_ofa_jax.distill.search": "python -m prune_ofa_jax.kdsearch.random_search",
    "prune_ofa_jax.distill.autodistiller": "python -m prune_ofa_jax.kdsearch.autodistiller",
}
ALIASES = ("prune_ofa_jax.study.masks", "prune_ofa_jax.distill.search",
           "prune_ofa_jax.distill.autodistiller")


def bogus_args(w: str) -> dict:
    """Per command: its required flags (so the error is about the bogus one) + a bogus flag."""
    bad = "--bogus-flag"
    return {
        "prune_ofa_jax": [bad],
        "prune_ofa_jax.main": ["--config", FINETUNE, "--workdir", w, bad],
        "prune_ofa_jax.bench": [bad],
        "prune_ofa_jax.convert": ["pack", "--ckpt", w, "--out", w, bad],
        "prune_ofa_jax.data.prepare": ["--source", "text:x.txt", "--workdir", w, bad],
        "prune_ofa_jax.distill.student": ["--workdir", w, bad],
        "prune_ofa_jax.kdsearch.random_search": ["--task", "mrpc", "--budget", "1", bad],
        "prune_ofa_jax.kdsearch.autodistiller": ["evaluate", bad],
        "prune_ofa_jax.nas": ["--workdir", w, bad],
        "prune_ofa_jax.nas.extract": ["--supernet", w, "--arch", "{}", "--workdir", w, bad],
        "prune_ofa_jax.study": ["masks", "--workdir", w, bad],
        "prune_ofa_jax.study.mask_methods": ["--workdir", w, bad],
        "prune_ofa_jax.study.reproduce": ["--workdir", w, bad],
        "prune_ofa_jax.study.distiller": ["--workdir", w, bad],
        "prune_ofa_jax.study.tweets": ["--model", w, "--out", w, bad],
        "prune_ofa_jax.prune_once": ["--model", w, "--task", "sst2", "--workdir", w, bad],
        "prune_ofa_jax.study.masks": ["--workdir", w, bad],
        "prune_ofa_jax.distill.search": ["--task", "mrpc", "--budget", "1", bad],
        "prune_ofa_jax.distill.autodistiller": ["evaluate", bad],
    }


def other_checks(w: str, tmp: str) -> dict:
    """name -> (module, argv): config errors, old spellings and the task list by size."""
    return {
        "unknown_key": ("prune_ofa_jax.main", ["--config", FINETUNE, "--workdir", w,
                                               "--config.train.stepz=3"]),
        "missing_file": ("prune_ofa_jax.main", ["--config", "configs/nope.py", "--workdir", w]),
        "bad_value": ("prune_ofa_jax.main", ["--config", FINETUNE, "--workdir", w,
                                             "--config.train.steps=many"]),
        "study_key": ("prune_ofa_jax.study", ["masks", "--config", "configs/masks.py:test",
                                              "--workdir", w, "--config.stepz=3"]),
        "inline_key": ("prune_ofa_jax.bench", ["--config.stepz=3"]),
        "old_out": ("prune_ofa_jax.convert", ["unpack", "--packed", f"{tmp}/no.pofa",
                                              "--out", w]),
        "old_readme": ("prune_ofa_jax.study", ["masks", "--workdir", w, "--readme",
                                               f"{tmp}/no.md"]),
        "old_study": ("prune_ofa_jax.study", ["--demo", f"{tmp}/no_demo", "--out", w]),
        "test_size_tasks": ("prune_ofa_jax.kdsearch.random_search",
                            ["--task", "sst2", "--budget", "1", "--size", "test"]),
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every check, in one driver process, and `python -m prune_ofa_jax train` with a bad
    config value in a second one, side by side (cwd: outside the repository)."""
    tmp = tmp_path_factory.mktemp("cli")
    w = str(tmp / "never_made")
    checks = {f"help {m}": (m, ["--help"]) for m in COMMANDS}
    checks.update({f"bogus {m}": (m, argv) for m, argv in bogus_args(w).items()})
    checks.update(other_checks(w, str(tmp)))
    run_dir = tmp / "run"
    train = [sys.executable, "-m", "prune_ofa_jax", "train", "--config", FINETUNE,
             "--workdir", str(run_dir), "--config.train.steps=0"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        driven = pool.submit(cli_helpers.run_modules, checks, tmp)
        proc = pool.submit(subprocess.run, train, cwd=tmp, env=cli_helpers.env(),
                           capture_output=True, text=True, timeout=300).result()
        out = driven.result()
    out["train"] = {"code": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
                    "log": (run_dir / "log.txt").read_text() if run_dir.is_dir() else ""}
    out["never_made"] = pathlib.Path(w).exists()
    return out


def _lines(text: str) -> list:
    return [x for x in text.splitlines() if x.strip()]


def _one_error(r: dict, warned: int = 0) -> str:
    """The single `error:` line of a result, after `warned` deprecation warnings."""
    lines = _lines(r["stderr"])
    assert r["code"] == 2 and len(lines) == warned + 1, r
    assert all(x.startswith("warning: ") and "deprecated" in x for x in lines[:-1]), lines
    assert lines[-1].startswith("error: "), lines
    return lines[-1]


@pytest.mark.parametrize("module", list(COMMANDS))
def test_help_exits_0_and_names_the_command(results, module):
    r = results[f"help {module}"]
    assert r["code"] == 0, r
    assert f"usage: {COMMANDS[module]}" in r["stdout"], r["stdout"][:500]
    assert ".py [" not in r["stdout"] and "usage: prepare" not in r["stdout"]
    extra = _lines(r["stderr"])
    assert extra == ([] if module not in ALIASES else extra[:1]), extra
    assert all(x.startswith("warning:") for x in extra)


@pytest.mark.parametrize("module", list(COMMANDS))
def test_a_bogus_flag_is_one_error_line_and_exit_2(results, module):
    line = _one_error(results[f"bogus {module}"], warned=int(module in ALIASES))
    assert "--bogus-flag" in line, line
    assert not results["never_made"]  # a refused command writes nothing


def test_config_errors_are_one_line_naming_the_key_or_file(results):
    assert "config.train.stepz: no such key" in _one_error(results["unknown_key"])
    assert "did you mean config.train.steps?" in _one_error(results["unknown_key"])
    assert "--config configs/nope.py: no such file" in _one_error(results["missing_file"])
    assert "config.train.steps: bad value" in _one_error(results["bad_value"])
    assert "config.stepz: no such key" in _one_error(results["study_key"])
    assert "config.stepz: no such key" in _one_error(results["inline_key"])
    # --size test has no sst2: said before anything runs, naming the tasks it has
    assert "--task sst2: --size test has mrpc, tweets only" in _one_error(
        results["test_size_tasks"])


def test_old_spellings_work_and_warn(results):
    r = results["old_out"]  # --out is --workdir: the error is the next check's
    assert _lines(r["stderr"])[0] == "warning: --out is deprecated; use --workdir"
    assert "packed file not found" in _one_error(r, warned=1)
    line = _one_error(results["old_readme"], warned=1)  # --readme is --doc
    assert line.startswith("error: --doc ") and "no such page" in line
    r = results["old_study"]  # no study name: the compression study, --out its workdir
    line = _one_error(r, warned=2)
    assert "without a study name is deprecated" in r["stderr"]
    assert "--demo" in line and "run the demo first" in line


def test_a_bad_config_value_at_run_time_is_one_line_and_in_log_txt(results):
    r = results["train"]
    assert r["code"] == 2 and _lines(r["stderr"]) == [
        "error: config.train.steps: must be > 0, got 0"], r["stderr"]
    assert "config.train.steps: must be > 0" in r["log"] and "Traceback" in r["log"]


def test_every_command_module_ends_with_sys_exit_main():
    for module in COMMANDS:
        path = PACKAGE.parent / (module.replace(".", "/") + ".py")
        if not path.is_file():
            path = path.with_suffix("") / "__main__.py"
        last = ast.parse(path.read_text()).body[-1]
        assert ast.unparse(last) == "if __name__ == '__main__':\n    sys.exit(main())", module
