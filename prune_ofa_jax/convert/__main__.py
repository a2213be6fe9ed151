"""Model conversion (also `python -m prune_ofa_jax convert`): HF model dir <-> params
checkpoint <-> compressed .pofa file.

  python -m prune_ofa_jax.convert import-hf --hf_dir DIR --workdir CKPT_DIR \
      [--task mlm|pretraining|cls|qa|base] [--num_labels N] [--init_missing_heads] \
      [--tokenizer_dir DIR]
  python -m prune_ofa_jax.convert export-hf --ckpt CKPT_DIR|model.pofa --workdir HF_DIR \
      [--tokenizer_dir DIR]
  python -m prune_ofa_jax.convert pack --ckpt CKPT_DIR --out model.pofa \
      [--format bitmask|csr|auto|dense] [--int8] [--int8_embeddings] [--fp16] [--codec zlib|none]
  python -m prune_ofa_jax.convert unpack --packed model.pofa --workdir CKPT_DIR

--workdir is the directory written (`--out` still works there); `pack` writes one file,
--out FILE. Every path may be a bucket (gs://). The tokenizer travels with the model:
import-hf copies the HF dir's tokenizer files (or --tokenizer_dir's) into the checkpoint;
export-hf writes --tokenizer_dir's, else the checkpoint's own, else MiniLM's when the model
has MiniLM's vocabulary, else it stops (data/tokenization.py). On bad input: one
"error: ..." line on stderr, exit status 2, no output left behind.
`python -m prune_ofa_jax.convert <command> --help` for a command's flags.
"""

import json
import sys

from etils import epath

from prune_ofa_jax import cli, errors
from prune_ofa_jax.convert import hf, loader, pack_ckpt, params_ckpt
from prune_ofa_jax.data import tokenization

MODULE = "prune_ofa_jax.convert"


def _parser() -> cli.Parser:
    p = cli.Parser(MODULE, description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    imp = sub.add_parser("import-hf", help="HF PyTorch model dir -> params checkpoint",
                         description="HF PyTorch model dir -> params checkpoint.")
    imp.add_argument("--hf_dir", required=True, help="the HF model dir (config.json + weights)")
    imp.add_workdir("the params checkpoint dir to write")
    imp.add_argument("--task", choices=("mlm", "pretraining", "cls", "qa", "base"), default=None,
                     help="default: inferred from config.json's architectures")
    imp.add_argument("--num_labels", type=int, default=None)
    imp.add_argument("--init_missing_heads", action="store_true",
                     help="initialise task heads absent from the source instead of failing")
    imp.add_argument("--seed", type=int, default=0, help="rng seed for --init_missing_heads")
    imp.add_argument("--tokenizer_dir", default=None,
                     help="copy the tokenizer files from here (default: the HF dir's own)")
    imp.add_argument("--overwrite", action="store_true")
    exp = sub.add_parser("export-hf", help="params checkpoint (or .pofa) -> HF PyTorch model dir",
                         description="params checkpoint (or .pofa) -> HF PyTorch model dir.")
    exp.add_argument("--ckpt", required=True, help="a params checkpoint dir or a .pofa file")
    exp.add_workdir("the HF model dir to write")
    exp.add_argument("--tokenizer_dir", default=None,
                     help="copy the tokenizer files from here (default: the checkpoint's own)")
    exp.add_argument("--overwrite", action="store_true")
    pk = sub.add_parser("pack", help="params checkpoint -> compressed .pofa file",
                        description="params checkpoint -> compressed .pofa file.")
    pk.add_argument("--ckpt", required=True, help="a params checkpoint dir")
    pk.add_argument("--out", required=True, metavar="FILE", help="the .pofa file to write")
    pk.add_argument("--format", choices=("bitmask", "csr", "auto", "dense"), default="auto",
                    help="storage of the prunable tensors; auto: the smallest per tensor")
    pk.add_argument("--int8", action="store_true", help="Dense kernels as int8 (QAT scale)")
    pk.add_argument("--int8_embeddings", action="store_true", help="embedding tables as int8")
    pk.add_argument("--fp16", action="store_true", help="other float values as fp16 (lossy)")
    pk.add_argument("--codec", choices=("zlib", "none"), default="zlib",
                    help="lossless stage per section (default zlib)")
    pk.add_argument("--overwrite", action="store_true")
    up = sub.add_parser("unpack", help=".pofa file -> params checkpoint",
                        description=".pofa file -> params checkpoint.")
    up.add_argument("--packed", required=True, help="the .pofa file")
    up.add_workdir("the params checkpoint dir to write")
    up.add_argument("--overwrite", action="store_true")
    return p


SUPPORTED_MODEL_TYPES = ("bert", "distilbert", "roberta")  # = models.config.MODEL_TYPES


def _precheck(args) -> None:
    """Cheap checks (no jax/torch import) so common mistakes fail in a blink."""
    out = epath.Path(args.out if args.command == "pack" else args.workdir)
    if out.exists() and not args.overwrite:
        kind = "file" if args.command == "pack" else "dir"
        raise errors.UsageError(f"output {kind} already exists: {out} (pass --overwrite)")
    tok = getattr(args, "tokenizer_dir", None)
    if tok and not tokenization.has_tokenizer(tok):
        raise errors.UsageError(f"--tokenizer_dir {tok}: no tokenizer files (tokenizer.json, "
                                "vocab.txt or vocab.json)")
    if args.command in ("export-hf", "pack"):
        ckpt = epath.Path(args.ckpt)
        if args.command == "export-hf" and ckpt.is_file():
            return  # a .pofa file: checked (magic, CRC, every declared size) when read
        if not (ckpt / "model.json").is_file():
            raise errors.UsageError(f"not a params checkpoint (no model.json): {args.ckpt}")
        return
    if args.command == "unpack":
        if not epath.Path(args.packed).is_file():
            raise errors.UsageError(f"packed file not found: {args.packed}")
        return
    hf_dir = epath.Path(args.hf_dir)
    if not hf_dir.is_dir():
        raise errors.UsageError(f"HF model dir not found: {hf_dir}")
    if not (hf_dir / "config.json").is_file():
        raise errors.UsageError(f"no config.json in {hf_dir}")
    raw = json.loads((hf_dir / "config.json").read_text())
    if raw.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise errors.UsageError(
            f"unsupported architecture: model_type {raw.get('model_type')!r} (architectures "
            f"{raw.get('architectures')}) in {hf_dir}; supported model types: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}")


def _import_hf(args) -> str:
    task = hf.resolve_task(args.hf_dir, args.task)
    params, model_config = hf.import_hf(args.hf_dir, task, num_labels=args.num_labels,
                                        init_missing_heads=args.init_missing_heads,
                                        rng_seed=args.seed)
    tok = args.tokenizer_dir or (args.hf_dir if tokenization.has_tokenizer(args.hf_dir) else None)
    if tok is not None:
        tokenization.check_fits(tokenization.load_tokenizer(tok), tok, model_config,
                                own=tok == args.hf_dir, key="--tokenizer_dir",
                                model=f"the model of {args.hf_dir}")
    out = params_ckpt.save_params(args.workdir, params, model_config, task,
                                  overwrite=args.overwrite, tokenizer_dir=tok)
    note = (f" with the tokenizer of {tok}" if tok else f"; {args.hf_dir} has no tokenizer "
            "files: pass --tokenizer_dir (runs of this model need one unless it has "
            "MiniLM's vocabulary)")
    return f"wrote {task} params ({model_config.model_type}) to {out}{note}"


def _export_hf(args) -> str:
    params, model_config, task = loader.load(args.ckpt)
    own = epath.Path(args.ckpt).is_dir()
    tok = tokenization.resolve(model_config, explicit=args.tokenizer_dir,
                               model_dir=args.ckpt if own else None, key="--tokenizer_dir",
                               model=f"the model of {args.ckpt}")
    tokenization.check_fits(tokenization.load_tokenizer(tok), tok, model_config,
                            own=tok == args.ckpt, key="--tokenizer_dir",
                            model=f"the model of {args.ckpt}")
    path = hf.export_hf(params, model_config, task, args.workdir, tokenizer_dir=tok,
                        overwrite=args.overwrite)
    return f"wrote HF {model_config.model_type} {task} model to {path} (tokenizer: {tok})"


def _pack(args) -> str:
    opts = pack_ckpt.default_options(fmt=args.format, int8=args.int8, fp16=args.fp16,
                                     int8_embeddings=args.int8_embeddings, codec=args.codec)
    r = pack_ckpt.pack_checkpoint(args.ckpt, args.out, opts)
    mb = lambda b: f"{b / 2**20:.2f} MB"  # noqa: E731
    return (f"wrote {r['file']}: {mb(r['file_bytes'])} on disk, {r['x_vs_fp32']:.1f}x smaller "
            f"than fp32 ({mb(r['fp32_bytes'])}); layout before the {args.codec} codec "
            f"{mb(r['layout_bytes'])} ({r['x_vs_fp32_before_codec']:.1f}x, = the estimate of "
            f"eval/compression.py for this storage; its best whole-model format "
            f"{mb(r['estimate_best_bytes'])}); encoder sparsity {r['prunable_sparsity']:.3f}")


def _unpack(args) -> str:
    out = pack_ckpt.unpack_to_dir(args.packed, args.workdir, overwrite=args.overwrite)
    return f"wrote params checkpoint {out}"


COMMANDS = {"import-hf": _import_hf, "export-hf": _export_hf, "pack": _pack, "unpack": _unpack}


def main(argv=None) -> int:
    args = _parser().parse_args(argv)

    def body():
        _precheck(args)
        cli.quiet_libraries()
        print(COMMANDS[args.command](args))

    # the library's own errors here are bad input (a path, a model that does not fit)
    return cli.run(body, verbose=args.verbose, user_errors=(
        hf.ConversionError, FileNotFoundError, FileExistsError, ValueError, KeyError))


if __name__ == "__main__":
    sys.exit(main())
