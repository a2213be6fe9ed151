"""Console and file logging for runs: a quiet console, the full log in the workdir.

The console shows our own INFO lines (what is loaded, the run's shape, where outputs go,
evaluation results), every WARNING and ERROR from anyone, and the tqdm bar. Library INFO
(Orbax's handler registries and write throughput, JAX's backend probes, ...) goes to
`WORKDIR/log.txt` only, in full, with everything else. `--verbose` puts it on the console too.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import sys

OURS = "prune_ofa_jax"
# `extra=FILE_ONLY` on a record: WORKDIR/log.txt only, never the console (a failure's
# traceback, where the command line prints its own one-line message).
FILE_ONLY = {"file_only": True}
_FILE_FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"


class _Console(logging.Handler):
    """Writes through tqdm so a log line never breaks a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            import tqdm  # pylint: disable=import-outside-toplevel
            tqdm.tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pylint: disable=broad-except
            self.handleError(record)


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.startswith(OURS)


class _NotFileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        return msg if record.levelno < logging.WARNING else f"{record.levelname}: {msg}"


def setup_console(verbose: bool = False) -> None:
    """Replaces the root logger's handlers (absl's included) by the quiet console."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    console = _Console()
    console.setFormatter(_ConsoleFormatter("%(message)s"))
    console.addFilter(_NotFileOnly())
    if not verbose:
        console.addFilter(_Quiet())
    root.addHandler(console)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)  # Python warnings become WARNING records: console + file
    try:
        from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
        absl_logging.set_verbosity(absl_logging.INFO)  # Orbax logs through absl
    except ImportError:
        pass


@contextlib.contextmanager
def to_file(workdir, name: str = "log.txt"):
    """Everything logged at INFO and above, by any library, appended to WORKDIR/log.txt."""
    path = pathlib.Path(workdir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(_FILE_FORMAT))
    root = logging.getLogger()
    # absl (Orbax logs through it) drops records below its own threshold before any handler
    # sees them; a CLI that quiets it for its console (bench, study) must not empty the file.
    absl = logging.getLogger("absl")
    old_level, old_absl = root.level, absl.level
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)
    if absl.level > logging.INFO:
        absl.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(old_level)
        absl.setLevel(old_absl)
