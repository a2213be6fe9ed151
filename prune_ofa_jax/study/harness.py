"""What the studies (reproduce, masks, distiller) share: their workdir, their runs, their
command line and their place in the README.

  python -m prune_ofa_jax.study.<name> [--config configs/<file>.py[:test]] --workdir DIR
      [--readme README.md] [--verbose]

Each runs its runs into DIR (rerunning continues it), writes summary.json, table.md and a
plot there, and with --readme rewrites the README's text between `<!-- NAME:begin -->` and
`<!-- NAME:end -->`: the plot (copied to docs/) and the table. The compression study and
AutoTinyBERT have their own command lines and write their sections with `write` too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import sys
from typing import Callable

import jax
from absl import flags
from ml_collections import config_flags

from prune_ofa_jax import logs
from prune_ofa_jax.train import loop


def use_compile_cache(root: pathlib.Path) -> None:
    """JAX's persistent compilation cache in root/jax_cache, unless the user set one."""
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", str(root / "jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def open_workdir(p, workdir) -> pathlib.Path:
    """Creates the study's workdir, points the compilation cache into it (rows and seeds
    share programs) and refuses one that holds a study with other settings: rerunning
    continues a study, other settings would mix two."""
    root = pathlib.Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    use_compile_cache(root)
    plan, now = root / "plan.json", p.to_json(sort_keys=True)
    if plan.exists() and plan.read_text() != now:
        raise ValueError(f"{root} holds a study with other settings ({plan}); use "
                         "another --workdir or the same settings")
    plan.write_text(now)
    return root


def run_all(runs: dict, say: Callable, headline: Callable, drop_checkpoints: bool = False):
    """runs: name -> (config, workdir), each an ordinary loop run; a finished one (its
    report.json) is read, not rerun. Returns name -> report."""
    reports = {}
    for i, (name, (cfg, wd)) in enumerate(runs.items(), 1):
        done = pathlib.Path(wd) / "report.json"
        if done.exists():
            reports[name] = json.loads(done.read_text())
            say(f"{i}/{len(runs)} {name}: done before, skipping")
            continue
        say(f"{i}/{len(runs)} {name}: {cfg.train.steps} steps -> {wd}")
        reports[name] = loop.run(cfg, wd)
        if drop_checkpoints:  # finished: its report and model/ stay
            shutil.rmtree(pathlib.Path(wd) / "checkpoints", ignore_errors=True)
        say(f"{i}/{len(runs)} {name} done in {reports[name]['wall_time_s']:.0f} s: "
            f"{headline(reports[name])}")
    return reports


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write(readme, name: str, table: str, plot, alt: str, command: str) -> None:
    """Rewrites section `name` of `readme`; `command` is the one that wrote it."""
    readme, plot = pathlib.Path(readme), pathlib.Path(plot)
    begin, end = markers(name)
    text = readme.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{readme}: no {begin} ... {end} markers to write the study into")
    docs = readme.parent / "docs"
    docs.mkdir(exist_ok=True)
    shutil.copyfile(plot, docs / plot.name)
    body = (f"![{alt}](docs/{plot.name})\n\n{table}\n"
            f"(Written by `{command}`; the plot is docs/{plot.name}.)\n")
    readme.write_text(re.sub(re.escape(begin) + r".*?" + re.escape(end),
                             lambda _: f"{begin}\n{body}{end}", text, flags=re.S))


@dataclasses.dataclass(frozen=True)
class Study:
    name: str                         # README markers, plot file <name>.png, console prefix
    module: str                       # python -m <module>
    config: str                       # the default --config file
    run: Callable                     # run(settings, workdir) -> summary
    markdown: Callable                # markdown(summary) -> the table
    alt: str                          # the plot's alt text
    on_readme: Callable | None = None  # on_readme(workdir): more to ship with the README


def main(study: Study, argv=None) -> int:
    """Parses argv (sys.argv[1:] by default), runs the study, writes the README section."""
    args = [study.module] + list(sys.argv[1:] if argv is None else argv)
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "Output dir: one sub-dir per run, summary.json, "
                        f"table.md, {study.name}.png.", flag_values=fv)
    flags.DEFINE_string("readme", "", "Rewrite this README's section (between its markers).",
                        flag_values=fv)
    flags.DEFINE_bool("verbose", False, "Library INFO on the console too.", flag_values=fv)
    try:  # (the config flag reads its overrides from args as it is defined)
        config_flags.DEFINE_config_file("config", study.config, f"Study settings "
                                        f"({study.config}[:test]).", flag_values=fv,
                                        sys_argv=args)
        fv(args)
        settings = fv.config
        settings.keys()  # a file that failed to load raises on first use: here, not mid-study
        if not fv.workdir:
            raise flags.Error("--workdir is required")
    except (flags.Error, AttributeError, KeyError, OSError) as e:
        unknown = isinstance(e, (AttributeError, KeyError))
        print(f"error: {'no such --config key: ' if unknown else ''}{e}", file=sys.stderr)
        return 2
    logs.setup_console(verbose=fv.verbose)
    summary = study.run(settings, fv.workdir)
    if fv.readme:
        if study.on_readme:
            study.on_readme(fv.workdir)
        write(fv.readme, study.name, study.markdown(summary),
              pathlib.Path(fv.workdir) / f"{study.name}.png", study.alt,
              f"python -m {study.module} --readme README.md")
        print(f"[{study.name}] wrote the table and plot into {fv.readme}", flush=True)
    return 0
