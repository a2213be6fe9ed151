"""What the studies share: their command line, their workdir, their runs and their page in
the docs.

  python -m prune_ofa_jax.study <name> --workdir DIR [--config configs/<file>.py[:test]]
      [--config.key=value ...] [--doc [PAGE]] [--verbose]

Each runs its runs into DIR (rerunning continues it), writes its summary, table and plot
there, and with --doc rewrites PAGE (default docs/studies/<name>.md) between
`<!-- MARKER:begin -->` and `<!-- MARKER:end -->`: the plot (copied next to the page) and the
table, with the command that wrote them. A study without a config file (the compression
study) brings its own flags instead. AutoTinyBERT (`python -m prune_ofa_jax.nas`) writes its
page with `write` too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shlex
import shutil
import sys
from typing import Callable

import jax

from prune_ofa_jax import cli, errors, jsonio, logs
from prune_ofa_jax.train import loop

MODULE = "prune_ofa_jax.study"


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
        raise errors.UsageError(f"--workdir {root} holds a study with other settings ({plan}); "
                                "use another --workdir or the same settings")
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


def save(root: pathlib.Path, summary: dict, report, plot_name: str) -> dict:
    """A study's result in its workdir: summary.json, table.md (`report.markdown`) and the
    plot (`report.plot`, as `plot_name`); the table printed. Returns the summary."""
    table = report.markdown(summary)
    (root / "summary.json").write_text(jsonio.dumps(summary, indent=2))
    (root / "table.md").write_text(table)
    report.plot(summary, root / plot_name)
    print(table, flush=True)
    return summary


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def check_page(page, name: str) -> str:
    """The text of `page`, which must hold section `name`'s markers (errors.UsageError)."""
    page = pathlib.Path(page)
    begin, end = markers(name)
    if not page.is_file():
        raise errors.UsageError(f"--doc {page}: no such page (run from the repository root, or "
                                "pass --doc PAGE)")
    text = page.read_text()
    if begin not in text or end not in text:
        raise errors.UsageError(f"--doc {page}: no {begin} ... {end} markers to write into")
    return text


def write(page, name: str, table: str, plot, alt: str, command: str) -> None:
    """Rewrites section `name` of `page`: the plot (copied next to the page, linked
    relatively), the table and the command that wrote them."""
    page, plot = pathlib.Path(page), pathlib.Path(plot)
    text = check_page(page, name)
    begin, end = markers(name)
    target = page.parent / plot.name
    if target.resolve() != plot.resolve():
        shutil.copyfile(plot, target)
    body = (f"![{alt}]({plot.name})\n\n{table}\n"
            f"(Written by `{command}`; the plot is {plot.name}.)\n")
    page.write_text(re.sub(re.escape(begin) + r".*?" + re.escape(end),
                           lambda _: f"{begin}\n{body}{end}", text, flags=re.S))


def add_doc(parser: cli.Parser, default_page: str) -> None:
    """`--doc [PAGE]` (and its old spelling `--readme PAGE`)."""
    parser.add_argument("--doc", nargs="?", const=default_page, default="", metavar="PAGE",
                        help="write the table and plot into PAGE, between its markers "
                        f"(--doc alone: {default_page}, from the repository root)")
    parser.add_deprecated("--readme", "--doc")


@dataclasses.dataclass(frozen=True)
class Study:
    """One study: what `python -m prune_ofa_jax.study <name>` runs and writes."""
    name: str                 # its word on the command line, its console prefix, its page
    marker: str               # its section on the page: <!-- marker:begin --> ... :end -->
    plot: str                 # the plot the run writes into WORKDIR, shown on the page
    run: Callable             # run(settings, workdir) -> summary
    markdown: Callable        # markdown(summary) -> the section's table
    alt: str                  # the plot's alt text
    doc: str = ""             # its --help text
    config: str = ""          # the default --config recipe ("": no config file, see below)
    add_flags: Callable | None = None  # add_flags(parser): the flags of a study without config
    settings: Callable | None = None   # settings(args) -> run's settings (errors.UsageError)
    describe: Callable | None = None   # describe(args) -> those flags, for the page's line
    on_doc: Callable | None = None     # on_doc(workdir): more to ship with the page

    @property
    def page(self) -> str:
        return f"docs/studies/{self.name}.md"


def parser(study: Study) -> cli.Parser:
    p = cli.Parser(MODULE, command=study.name, description=study.doc)
    # --out: a deprecated spelling of --workdir, kept for the compression study only
    p.add_workdir(f"output dir: one sub-dir per run, the summary, table and {study.plot}; "
                  "rerunning the command continues the study.",
                  old=() if study.config else ("--out",))
    if study.config:
        p.add_config(study.config, help="the study's settings (:test: the suite's size, a "
                     "few steps per run).")
    if study.add_flags:
        study.add_flags(p)
    add_doc(p, study.page)
    return p


def command(study: Study, args) -> str:
    """The command line the page names as its writer (the workdir as DIR)."""
    parts = [f"python -m {MODULE}", study.name]
    if study.config:
        given = ["--config", args.config_file] if args.config_file else []
        parts += [shlex.quote(a) for a in given + list(args.config_overrides)]
    if study.describe:
        parts.append(study.describe(args))
    return " ".join(parts + ["--workdir DIR --doc", shlex.quote(args.doc)])


def main(study: Study, argv=None, *, warning: str = "") -> int:
    """Parses argv (sys.argv[1:] by default), runs the study, writes its page; the exit
    status (`warning`: a line to print once the flags parse, for an old spelling)."""
    p = parser(study)
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    if warning:
        cli.warn(warning)
    try:
        settings = args.config if study.config else study.settings(args)
        if args.doc:
            check_page(args.doc, study.marker)
    except errors.UserError as e:
        p.error(str(e))

    def body():
        logs.setup_console(verbose=args.verbose)
        summary = study.run(settings, args.workdir)
        if args.doc:
            if study.on_doc:
                study.on_doc(args.workdir)
            write(args.doc, study.marker, study.markdown(summary),
                  pathlib.Path(args.workdir) / study.plot, study.alt, command(study, args))
            print(f"[{study.name}] wrote the table and plot into {args.doc}", flush=True)

    return cli.run(body, workdir=args.workdir, verbose=args.verbose,
                   exits={loop.Preempted: cli.EXIT_PREEMPTED})
