"""A shallower student initialised from some of a teacher's layers (DistilBERT / PKD style):

  python -m prune_ofa_jax.distill.student --source MODEL --layers 1,3,5 --workdir DIR

MODEL is an HF dir or one of our params checkpoints; DIR a params checkpoint with the
embeddings, the listed encoder layers (0-based, in order) renumbered 0..k-1, the pooler and
every head the source has. The default for the Distiller study: MiniLM-L6's layers {1, 3, 5},
the ones the skip map pairs a 3-layer student with.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Sequence

import jax

from prune_ofa_jax import cli, paths
from prune_ofa_jax.convert import loader, params_ckpt
from prune_ofa_jax.models import config as model_config


def select_layers(params, mcfg: model_config.ModelConfig, layers: Sequence[int]):
    """(params, config) of the student: encoder layer j <- source layer layers[j]."""
    layers = [int(i) for i in layers]
    if not layers or sorted(set(layers)) != layers or not 0 <= layers[0] <= layers[-1] < \
            mcfg.num_layers:
        raise ValueError(f"layers {layers}: need distinct increasing indices in "
                         f"[0, {mcfg.num_layers})")
    params = jax.tree.map(lambda x: x, params)  # a new tree, the source stays intact
    encoder = params["backbone"]["encoder"]
    params["backbone"]["encoder"] = {f"layer_{j}": encoder[f"layer_{i}"]
                                     for j, i in enumerate(layers)}
    return params, mcfg.replace(num_layers=len(layers))


def make(source: str, layers: Sequence[int], out, task: str = "base") -> pathlib.Path:
    """Writes the student checkpoint (skipped when `out` already holds one)."""
    out = pathlib.Path(out)
    if (out / params_ckpt.MODEL_JSON).exists():
        return out
    params, mcfg, src_task = loader.load(source, task)
    params, mcfg = select_layers(jax.device_get(params), mcfg, layers)
    return params_ckpt.save_params(out, params, mcfg, src_task)


def _layers(text: str) -> list:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"want comma-separated layer indices, got {text!r}") from None


def main(argv=None) -> int:
    p = cli.Parser("prune_ofa_jax.distill.student", description=__doc__)
    p.add_argument("--source", default="", help="HF dir or params ckpt (default: MiniLM-L6)")
    p.add_argument("--layers", default="1,3,5", type=_layers,
                   help="0-based source layers, in order (default 1,3,5)")
    p.add_workdir("the student's params checkpoint dir to write")
    args = p.parse_args(argv)

    def body():
        print(make(args.source or str(paths.minilm_dir()), args.layers, args.workdir))

    return cli.run(body, verbose=args.verbose, user_errors=(ValueError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
