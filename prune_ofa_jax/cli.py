"""The one way every command line parses its flags and reports errors.

Every command (`python -m prune_ofa_jax <command>`, or `python -m prune_ofa_jax.<module>`) has:
- `--help` / `-h`: its usage, naming the command as it is typed; exit status 0;
- `--workdir DIR` where it writes a directory, and `--verbose` (library INFO and tracebacks on
  the console too);
- where it has a config: `--config FILE[:ARG]` and any number of `--config.KEY=VALUE`
  (ml_collections' config_flags on a private FlagValues); a FILE that does not exist but
  names a packaged recipe (configs/NAME.py) is that recipe, from any directory;
- bad input: one `error: ...` line on stderr and exit status 2; at run time the traceback
  goes to WORKDIR/log.txt (and to the console with --verbose);
- old flag spellings that still work, each with one `warning: ... is deprecated` line.

A leaf: imports only errors, logs, paths and third-party packages.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import pathlib
import re
import sys
import traceback
from typing import Callable, Sequence

from absl import flags
from ml_collections import config_dict, config_flags

from prune_ofa_jax import errors, logs, paths

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_PREEMPTED = 143  # 128 + SIGTERM: the run stopped early; the same command resumes it

log = logging.getLogger(__name__)
_OVERRIDE = re.compile(r"^--?(no)?config\.")
_PROGS: dict = {}  # module -> how the user typed it, when not `python -m <module>`


def one_line(message) -> str:
    return " ".join(str(message).split())


def say_error(message) -> None:
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)


def warn(message) -> None:
    print(f"warning: {one_line(message)}", file=sys.stderr, flush=True)


def deprecated(old: str, new: str) -> None:
    warn(f"{old} is deprecated; use {new}")


def invoked_as(module: str, prog: str) -> None:
    """Usage and messages of `module` name it `prog` (the package-level command's spelling)."""
    _PROGS[module] = prog


def usage_name(module: str) -> str:
    """How `module`'s command is typed: `python -m <module>` unless invoked_as said else."""
    return _PROGS.get(module, f"python -m {module}")


class _Deprecated(argparse.Action):
    """An old spelling of another option: stores into its dest, warns once per use."""

    def __init__(self, option_strings, dest, use: str = "", **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.use = use

    def __call__(self, parser, namespace, values, option_string=None):
        deprecated(option_string, self.use)
        setattr(namespace, self.dest, values)


class Parser(argparse.ArgumentParser):
    """argparse with the project's conventions (see the module docstring).

    `Parser("prune_ofa_jax.data.prepare", description=__doc__)`; `command` appends a word to
    the usage name (`python -m prune_ofa_jax.study masks`). Subparsers are Parsers too."""

    def __init__(self, module: str = "", *, command: str = "", prog: str | None = None,
                 **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        if prog is None:
            prog = usage_name(module) + (f" {command}" if command else "")
        super().__init__(prog=prog, **kwargs)
        self._top = bool(module)  # a subparser's defaults must not overwrite its parent's
        self._required: list = []
        self._config: tuple | None = None
        self.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                          help="library INFO and error tracebacks on the console too")

    def error(self, message):
        say_error(f"{message} (see {self.prog} --help)")
        self.exit(EXIT_USAGE)

    def add_deprecated(self, old: str, new: str) -> None:
        """`old VALUE` still works as `new VALUE`, with a one-line warning."""
        action = self._option_string_actions[new]
        self.add_argument(old, dest=action.dest, action=_Deprecated, use=new,
                          default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    def require(self, dest: str, flag: str) -> None:
        """`flag` must be given (by any spelling); checked after parsing."""
        self._required.append((dest, flag))

    def add_workdir(self, help: str, *, required: bool = True, default=None,
                    old: Sequence[str] = ("--out",)) -> None:
        self.add_argument("--workdir", default=default, metavar="DIR", help=help)
        for flag in old:
            self.add_deprecated(flag, "--workdir")
        if required:
            self.require("workdir", "--workdir")

    def add_config(self, default: str | None = None, *, help: str = "",
                   config: config_dict.ConfigDict | None = None, lock: bool = True,
                   required: bool = False) -> None:
        """`--config FILE[:ARG]` (or, with `config`, that ConfigDict) + `--config.KEY=VALUE`.
        After parsing, `args.config` is the ConfigDict, `args.config_file` the FILE[:ARG]
        given (None: `default`) and `args.config_overrides` the override flags."""
        if config is None:  # default None: a FILE the user gives is told from the default
            said = f" Default: {default}." if default else ""
            self.add_argument("--config", default=None, metavar="FILE[:ARG]",
                              required=required,
                              help=f"{help}{said} A FILE that does not exist but names a "
                              "packaged recipe (configs/NAME.py) is that recipe.")
        self._config = (config, lock, default)
        # for --help only: the overrides are taken out of argv before argparse sees it
        self.add_argument("--config.KEY", metavar="VALUE", dest="_override_help",
                          default=argparse.SUPPRESS, help="override one value of the config "
                          "(repeatable; KEY may be nested: --config.a.b=1); an unknown KEY "
                          "or a bad VALUE is an error")
        if config is not None:
            self.epilog = ((self.epilog + "\n\n") if self.epilog else "") + (
                "config keys and their defaults:\n" + "\n".join(
                    f"  --config.{k}={v!r}" for k, v in _flat(config).items()))

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        overrides: list = []
        if self._config is not None:  # absl parses these, against the loaded config
            args, overrides = split_overrides(args)
        ns, extras = super().parse_known_args(args, namespace)
        if self._top and not hasattr(ns, "verbose"):
            ns.verbose = False
        for dest, flag in self._required:
            if getattr(ns, dest, None) in (None, ""):
                self.error(f"{flag} is required")
        if self._config is not None:
            inline, lock, default = self._config
            ns.config_file, ns.config_overrides = getattr(ns, "config", None), overrides
            try:
                if inline is None:
                    ns.config = load_config(ns.config_file or default, overrides, lock=lock)
                else:
                    ns.config = override_config(inline, overrides, lock=lock)
            except errors.UserError as e:
                self.error(str(e))
        return ns, extras


def split_overrides(args: Sequence[str]) -> tuple[list, list]:
    """(the other args, the `--config.KEY=VALUE` ones); `--config.KEY VALUE` becomes one."""
    rest, overrides, i = [], [], 0
    while i < len(args):
        a = args[i]
        if _OVERRIDE.match(a):
            if "=" not in a and i + 1 < len(args) and not args[i + 1].startswith("-"):
                a, i = f"{a}={args[i + 1]}", i + 1
            overrides.append(a)
        else:
            rest.append(a)
        i += 1
    return rest, overrides


def override_keys(overrides: Sequence[str]) -> tuple:
    """The dotted keys `--config.KEY=VALUE` flags set (`train.steps`): what the user gave
    explicitly, beside what the recipe set (train/validate.py: explicit)."""
    return tuple(_OVERRIDE.sub("", flag.split("=", 1)[0]) for flag in overrides)


def resolve_recipe(spec: str) -> str:
    """FILE[:ARG] with FILE as given when it exists, else the packaged recipe of its name."""
    path, sep, arg = spec.partition(":")
    if not path:
        raise errors.UsageError("--config: empty FILE (want FILE[:ARG], e.g. configs/demo.py)")
    if pathlib.Path(path).is_file():
        return spec
    name = pathlib.Path(path).name
    name = name if name.endswith(".py") else f"{name}.py"
    try:
        packaged = paths.recipes_dir() / name
    except FileNotFoundError:
        packaged = None
    if packaged is None or not packaged.is_file():
        where = f" in {packaged.parent}" if packaged is not None else ""
        raise errors.UsageError(f"--config {path}: no such file, and no packaged recipe "
                                f"{name}{where}")
    return f"{packaged}{sep}{arg}"


def load_config(spec: str, overrides: Sequence[str] = (), lock: bool = True):
    """The ConfigDict of recipe FILE[:ARG] with `--config.KEY=VALUE` overrides applied;
    errors.UsageError / ConfigError (one line) on a bad file, key or value."""
    spec = resolve_recipe(spec)
    base = _parse(["--config=" + spec], spec, lock=False,
                  define=lambda fv, argv: config_flags.DEFINE_config_file(
                      "config", None, "", flag_values=fv, lock_config=False, sys_argv=argv))
    check_keys(base, overrides, spec)
    if not overrides:
        if lock:
            base.lock()
        return base
    return _parse(["--config=" + spec, *overrides], spec, lock=lock,
                  define=lambda fv, argv: config_flags.DEFINE_config_file(
                      "config", None, "", flag_values=fv, lock_config=lock, sys_argv=argv))


def override_config(config, overrides: Sequence[str] = (), lock: bool = True):
    """A copy of an inline ConfigDict with `--config.KEY=VALUE` overrides applied."""
    config = config_dict.ConfigDict(config.to_dict())
    check_keys(config, overrides, "the config")
    return _parse(list(overrides), "", lock=lock,
                  define=lambda fv, argv: config_flags.DEFINE_config_dict(
                      "config", config, "", flag_values=fv, lock_config=lock, sys_argv=argv))


def _parse(flag_args: list, spec: str, *, lock: bool, define: Callable):
    argv = ["prog", *flag_args]
    fv = flags.FlagValues()
    try:
        define(fv, argv)
        fv(argv)
        config = fv.config
        config.keys()  # a file that failed to load raises on first use: here
        return config
    except flags.IllegalFlagValueError as e:
        m = re.match(r"flag --((?:no)?config[\w.\[\]]*)=", str(e))
        inner = _innermost(e)
        if isinstance(inner, errors.UserError):
            raise errors.UsageError(str(inner)) from e
        if m and m.group(1) not in ("config", "noconfig"):
            raise errors.ConfigError(f"{m.group(1).removeprefix('no')}: bad value: "
                                     f"{one_line(inner)}") from e
        raise errors.UsageError(f"--config {spec}: {type(inner).__name__}: "
                                f"{one_line(inner)}") from e
    except flags.Error as e:
        raise errors.UsageError(one_line(e)) from e
    except Exception as e:  # the config file itself: a syntax error, a bad import, ...
        inner = _innermost(e)
        if isinstance(inner, errors.UserError):
            raise errors.UsageError(str(inner)) from e
        raise errors.UsageError(f"--config {spec}: {type(inner).__name__}: "
                                f"{one_line(_last_line(inner))}") from e


def _innermost(e: BaseException) -> BaseException:
    while (e.__cause__ or e.__context__) is not None:
        e = e.__cause__ or e.__context__
    return e


def _last_line(e: BaseException) -> str:
    lines = [x for x in str(e).splitlines() if x.strip()]
    return lines[-1] if lines else repr(e)


def check_keys(config, overrides: Sequence[str], where: str) -> None:
    """Every override names a key of `config` (errors.ConfigError, with the nearest key)."""
    for flag in overrides:
        path = _OVERRIDE.sub("", flag.split("=", 1)[0])
        node, done = config, []
        for part in path.split("."):
            if not isinstance(node, config_dict.ConfigDict) or "[" in part:
                break  # inside a leaf (a dict, a tuple): config_flags checks the rest
            if part not in node:
                keys = list(node.keys())
                near = difflib.get_close_matches(part, keys, n=1)
                prefix = "config." + "".join(f"{p}." for p in done)
                hint = (f"; did you mean {prefix}{near[0]}?" if near else
                        f"; {prefix.rstrip('.')} has {', '.join(sorted(keys))}")
                raise errors.ConfigError(f"config.{path}: no such key in {where}{hint}")
            done.append(part)
            node = node[part]


def _flat(config, prefix: str = "") -> dict:
    out = {}
    for k, v in config.items():
        if isinstance(v, config_dict.ConfigDict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def quiet_libraries() -> None:
    """Library chatter would drown a one-line result or error; warnings still print."""
    import warnings  # pylint: disable=import-outside-toplevel
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    import transformers  # pylint: disable=import-outside-toplevel  (heavy, optional)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def run(body: Callable[[], int | None], *, workdir=None, verbose: bool = False,
        user_errors: tuple = (), exits: dict | None = None) -> int:
    """Runs a command's body and returns its exit status: body's (None: 0); 2 and one
    `error:` line for errors.UserError and `user_errors`; the status `exits` maps an
    exception type to (e.g. loop.Preempted: 143), with its message; 1 and the traceback for
    anything else. With a local `workdir`, a failure's traceback is appended to
    WORKDIR/log.txt (unless the run logged it there already); --verbose prints it too."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # libraries that read absl's global flags get defaults
    exits = exits or {}
    try:
        code = body()
    except tuple(exits) as e:
        _to_log(workdir, e)
        print(one_line(e), file=sys.stderr, flush=True)
        return next(c for t, c in exits.items() if isinstance(e, t))
    except (errors.UserError, *user_errors) as e:
        _to_log(workdir, e)
        if verbose:
            traceback.print_exc()
        say_error(e)
        return EXIT_USAGE
    except Exception as e:  # a bug: its traceback, as Python would print it
        _to_log(workdir, e)
        traceback.print_exc()
        return EXIT_FAILED
    return EXIT_OK if code is None else int(code)


def _to_log(workdir, e: BaseException) -> None:
    if not workdir or paths.is_bucket(workdir):
        return
    path = pathlib.Path(workdir) / "log.txt"
    last = traceback.format_exception_only(type(e), e)[-1].splitlines()[0].strip()
    try:
        if path.is_file():
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - 200_000))
                if last in f.read().decode("utf-8", "replace"):
                    return  # the run logged this failure itself
        with logs.to_file(workdir):
            log.error("error: %s", one_line(e), exc_info=e, extra=logs.FILE_ONLY)
    except OSError:
        pass  # an unwritable workdir: the console line is all there is
