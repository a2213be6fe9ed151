"""The package installs as a wheel and runs outside the checkout; its dependencies are
requirements.txt's.

How the wheel test keeps the network and the checkout out of it:
- The wheel is built with `python -m pip wheel --no-deps --no-build-isolation -w DIR .` (the
  build backend comes from .venv, nothing is downloaded) in a copy of the files a build reads
  (pyproject.toml, setup.py, README.md, prune_ofa_jax/, configs/), so no `build/` folder or
  stale module from an earlier build of the checkout can reach the wheel.
- The fresh environment is `python -m venv --without-pip`; .venv's pip installs the wheel into
  it (`pip --python NEW/bin/python install --no-deps --no-index`).
- The dependencies are .venv's, made importable by a `.pth` file in the new environment's
  site-packages holding one line: .venv's site-packages directory. Such a line only appends
  the directory to sys.path, after the new environment's own site-packages, and the `.pth`
  files inside it (among them the editable install's finder, which maps `prune_ofa_jax` to
  the checkout) are not run; the command runs from a temporary directory. So `prune_ofa_jax`
  is imported from the installed wheel, which the test asserts (its `__file__` and
  `paths.recipes_dir()` lie in the new environment).
- The command names the recipe as a checkout would (`--config configs/finetune_glue.py:...`)
  from a directory without a `configs/`: it resolves to the recipe inside the installed
  package (`paths.recipes_dir()`), which the test also asserts. `PRUNE_OFA_DATA` names the
  shared data (an installed package has no `../shared/data` beside it).
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile

from packaging import requirements, utils

REPO = pathlib.Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "prune_ofa_jax", "configs")
TEST_SECTION = "# [test]"  # requirements.txt: the lines after it are the `test` extra


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _build_wheel(tmp: pathlib.Path) -> pathlib.Path:
    src, dist = tmp / "src", tmp / "dist"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in BUILD_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--disable-pip-version-check", "-q", "-w", dist, "."], cwd=src)
    (wheel,) = dist.glob("prune_ofa_jax-*.whl")
    return wheel


def _fresh_venv(tmp: pathlib.Path, wheel: pathlib.Path) -> pathlib.Path:
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    deps = sysconfig.get_paths()["purelib"]  # this interpreter's: .venv's site-packages
    (pathlib.Path(site.stdout.strip()) / "_prune_ofa_deps.pth").write_text(deps + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          "--disable-pip-version-check", "-q", wheel])
    return venv


def test_wheel_installs_and_runs_a_recipe_outside_the_checkout(tmp_path, shared_data):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "prune_ofa_jax/kdsearch/meta_table.csv" in names
    recipes = sorted(p.name for p in (REPO / "configs").glob("*.py"))
    assert recipes and {f"prune_ofa_jax/configs/{r}" for r in recipes} <= names
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "prune_ofa_jax").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert not modules - names, f"modules missing from the wheel: {sorted(modules - names)}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert re.search(r"^prune-ofa = prune_ofa_jax\.__main__:main$",
                     zipfile.ZipFile(wheel).read(entry_points).decode(), re.M)

    venv = _fresh_venv(tmp_path, wheel)
    python, elsewhere = venv / "bin" / "python", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PRUNE_OFA_DATA"] = str(shared_data)
    where = _run([python, "-c", "import prune_ofa_jax; from prune_ofa_jax import paths; "
                  "print(prune_ofa_jax.__file__); print(paths.recipe('finetune_glue'))"],
                 cwd=elsewhere, env=env).stdout.split()
    package_file, recipe = pathlib.Path(where[0]), pathlib.Path(where[1])
    assert venv in package_file.parents, f"imported from {package_file}, not the wheel"
    assert venv in recipe.parents and recipe.is_file()

    workdir = tmp_path / "run"
    _run([python, "-m", "prune_ofa_jax.main", "--config", "configs/finetune_glue.py:sst2,test",
          "--workdir", workdir], cwd=elsewhere, env=env, timeout=300)
    assert (workdir / "report.json").is_file()
    if (REPO / "prune_ofa_jax" / "__main__.py").is_file():  # the console script's target
        _run([venv / "bin" / "prune-ofa", "--help"], cwd=elsewhere, env=env, timeout=120)


def _requirement(line: str) -> tuple:
    req = requirements.Requirement(line)
    return utils.canonicalize_name(req.name), str(req.specifier), str(req.marker or "")


def test_pyproject_dependencies_are_requirements_txt():
    """`dependencies` = requirements.txt above its `# [test]` line, the `test` extra = below."""
    runtime, test = [], []
    current = runtime
    for raw in (REPO / "requirements.txt").read_text().splitlines():
        if raw.startswith(TEST_SECTION):
            current = test
        line = raw.split("#", 1)[0].strip()
        if line:
            current.append(_requirement(line))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert runtime and test
    assert sorted(map(_requirement, project["dependencies"])) == sorted(runtime)
    assert sorted(map(_requirement, project["optional-dependencies"]["test"])) == sorted(test)
