"""Extract a sub-model of the supernet as a plain dense Hugging Face BERT checkpoint.

  python -m prune_ofa_jax.nas.extract --supernet CKPT \
      --arch '{"layers":3,"hidden":256,"ffn":512,"qkv":192}' --workdir DIR [--tokenizer_dir DIR]

CKPT: the supernet's params checkpoint (WORKDIR/model of the supernet stage; model.json) or
any HF BERT dir of the supernet's shape (e.g. MiniLM itself: "MiniLM's first k layers").
DIR loads with `transformers.BertModel.from_pretrained` (config.json + model.safetensors +
tokenizer) and gives the supernet sub-model's outputs (within 1e-5, tested); it can be
trained further, fine-tuned or pruned with the existing recipes (`--config.init.path=DIR`).

A plain HF BERT ties the attention width to `hidden` (query/key/value are hidden x hidden,
attention.output is hidden x hidden). A sub-model with qkv < hidden is stored exactly by zero
padding: HF heads of `hidden / n` dims (n >= 12, the fewest that fit qkv/12), the arch's 12
heads in the first 12 (each padded with zero columns, the query scaled by
sqrt(padded / real head dim) so the scores keep their 1/sqrt(qkv/12) scaling), any further
heads all zero. The padded dims add nothing to any output; fine-tuning with the pattern
locked (`--config.sparsity.lock_pattern=True`, as our fine-tune recipes do) keeps them zero.
They do cost time in the HF runtime, so there a smaller qkv buys no speed (see README).

On bad input: one "error: ..." line on stderr, exit status 2, no output dir left behind.
"""

from __future__ import annotations

import json
import math
import pathlib
import sys

import jax
import numpy as np

from prune_ofa_jax import cli, errors, paths
from prune_ofa_jax.convert import hf
from prune_ofa_jax.nas import elastic, space, supernet

NUM_HEADS = 12


def hf_heads(hidden: int, qkv: int, num_heads: int = NUM_HEADS) -> int:
    """The fewest HF heads n >= num_heads with hidden % n == 0 whose width fits qkv/heads."""
    need = qkv // num_heads
    for n in range(num_heads, hidden + 1):
        if hidden % n == 0 and hidden // n >= need:
            return n
        if hidden // n < need:
            break
    raise ValueError(f"arch hidden={hidden}, qkv={qkv}: a plain HF BERT cannot hold {num_heads} "
                     f"heads of {need} dims (needs qkv <= hidden and a head count n >= "
                     f"{num_heads} dividing hidden with hidden / n >= {need})")


def _pad_cols(kernel, n: int, n_hf: int, dh: int, width: int, scale: float = 1.0):
    """[rows, n*dh] -> [rows, n_hf*width]: head j's dh columns at j*width (zeros after)."""
    rows = kernel.shape[0]
    out = np.zeros((rows, n_hf, width), np.float32)
    out[:, :n, :dh] = np.asarray(kernel).reshape(rows, n, dh) * scale
    return out.reshape(rows, n_hf * width)


def _pad_rows(kernel, n: int, n_hf: int, dh: int, width: int):
    cols = kernel.shape[1]
    out = np.zeros((n_hf, width, cols), np.float32)
    out[:n, :dh] = np.asarray(kernel).reshape(n, dh, cols)
    return out.reshape(n_hf * width, cols)


def pad_for_hf(sub: dict, arch, num_heads: int = NUM_HEADS) -> tuple[dict, int]:
    """A sliced (exact) sub-tree -> (a BertFamily tree with attention width = hidden, heads)."""
    n, n_hf = num_heads, hf_heads(arch.hidden, arch.qkv, num_heads)
    dh, width = arch.qkv // n, arch.hidden // n_hf
    scale = math.sqrt(width / dh)
    enc = {}
    for name, layer in sub["backbone"]["encoder"].items():
        att = dict(layer["attention"])
        for k in ("query", "key", "value"):
            s = scale if k == "query" else 1.0
            att[k] = {"kernel": _pad_cols(att[k]["kernel"], n, n_hf, dh, width, s),
                      "bias": _pad_cols(np.asarray(att[k]["bias"])[None], n, n_hf, dh, width,
                                        s)[0]}
        att["output"] = {"kernel": _pad_rows(att["output"]["kernel"], n, n_hf, dh, width),
                         "bias": att["output"]["bias"]}
        enc[name] = {"attention": att, "ffn": layer["ffn"]}
    return {"backbone": {**sub["backbone"], "encoder": enc}}, n_hf


def submodel(params, teacher_cfg, arch):
    """(params, ModelConfig) of the plain BERT holding `arch` (BertFamily "base" tree)."""
    sub = jax.device_get(elastic.slice_params(params, arch, teacher_cfg.num_heads))
    padded, _ = pad_for_hf(sub, arch, teacher_cfg.num_heads)
    return padded, hf_config_of(teacher_cfg, arch)


def extract(params, teacher_cfg, arch, out, tokenizer_dir=None, overwrite: bool = False,
            source: str = "") -> pathlib.Path:
    """Writes the HF dir of `arch` cut from the supernet `params`; returns its path."""
    arch.check_within(_top(teacher_cfg), teacher_cfg.num_heads)
    padded, mcfg = submodel(params, teacher_cfg, arch)
    path = hf.export_hf(padded, mcfg, "base", out, tokenizer_dir=tokenizer_dir,
                        overwrite=overwrite)
    (path / "autotinybert.json").write_text(json.dumps(
        {"arch": arch.to_dict(), "supernet": str(source), "hf_heads": mcfg.num_heads,
         "note": "12 real heads of qkv/12 dims, zero-padded to hidden/hf_heads dims each"},
        indent=2) + "\n")
    return path


def _top(cfg):
    return space.Arch(cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.hidden_size)


def hf_config_of(teacher_cfg, arch):
    """The ModelConfig of the plain BERT `extract` writes for `arch` (for latency too)."""
    n_hf = hf_heads(arch.hidden, arch.qkv, teacher_cfg.num_heads)
    return teacher_cfg.replace(num_layers=arch.layers, hidden_size=arch.hidden,
                               num_heads=n_hf, intermediate_size=arch.ffn)


def _parser() -> cli.Parser:
    p = cli.Parser("prune_ofa_jax.nas.extract", description=__doc__)
    p.add_argument("--supernet", required=True, help="supernet params checkpoint or HF dir")
    p.add_argument("--arch", required=True, help='JSON: {"layers":..,"hidden":..,"ffn":..,'
                   '"qkv":..}')
    p.add_workdir("the HF model dir to write")
    p.add_argument("--tokenizer_dir", default=None,
                   help="copy tokenizer files from here (default: MiniLM's)")
    p.add_argument("--overwrite", action="store_true")
    return p


def _precheck(args):
    """The arch and the paths, checked before anything loads; returns the arch."""
    try:
        arch = space.Arch.parse(args.arch)
    except (ValueError, TypeError) as e:
        raise errors.UsageError(f"--arch: {e}") from e
    src = pathlib.Path(args.supernet)
    if not ((src / "model.json").is_file() or (src / "config.json").is_file()):
        raise errors.UsageError(f"--supernet {src}: neither a params checkpoint (model.json) "
                                "nor a Hugging Face dir (config.json)")
    if pathlib.Path(args.workdir).exists() and not args.overwrite:
        raise errors.UsageError(f"output dir already exists: {args.workdir} (pass --overwrite)")
    return arch


def main(argv=None) -> int:
    args = _parser().parse_args(argv)

    def body():
        arch = _precheck(args)
        cli.quiet_libraries()
        params, cfg = supernet.load_teacher(args.supernet)
        out = extract(params, cfg, arch, args.workdir,
                      tokenizer_dir=args.tokenizer_dir or paths.minilm_dir(),
                      overwrite=args.overwrite, source=args.supernet)
        print(f"wrote {arch.key()} ({cfg.num_layers}-layer supernet -> plain HF BERT) to {out}")

    return cli.run(body, verbose=args.verbose,
                   user_errors=(hf.ConversionError, FileNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
