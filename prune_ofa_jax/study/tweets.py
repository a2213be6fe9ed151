"""Kaggle "NLP with Disaster Tweets" predictions for the unlabelled test.csv:

  python -m prune_ofa_jax.study.tweets --model RUN/model --out submission.csv [--seq_len 64]

Writes `id,target` rows (the competition's submission format), one per test tweet, in the
file's order: --out is that one file. The model runs as deployed (ONNX, int8 when it holds
QAT ranges)."""

from __future__ import annotations

import csv
import io
import pathlib
import sys
import tempfile

import numpy as np

from prune_ofa_jax import cli, paths
from prune_ofa_jax.data import common, disaster_tweets, tokenization
from prune_ofa_jax.runtime import ort
from prune_ofa_jax.study import compress_eval

TEST_CSV = "disaster_tweets/test.csv"


def test_ids(path) -> list[str]:
    reader = csv.reader(io.StringIO(common.read_text(path), newline=""))
    header = next(reader)
    col = header.index("id")
    return [row[col] for row in reader if row]


def write_predictions(model_dir, out, seq_len: int = 64, data_root: str = "",
                      tokenizer=None) -> dict:
    """Predicts test.csv and writes the submission; returns {"rows", "positive_rate"}."""
    root = pathlib.Path(data_root) if data_root else paths.data_root()
    examples = disaster_tweets.load(root / TEST_CSV, require_labels=False)
    ids = test_ids(root / TEST_CSV)
    if len(ids) != len(examples):
        raise common.DataError(f"{root / TEST_CSV}: {len(ids)} ids for {len(examples)} rows")
    tok = tokenizer or tokenization.load_tokenizer(None)
    with tempfile.TemporaryDirectory() as tmp:
        sess, _ = compress_eval.session_for(model_dir, pathlib.Path(tmp) / "m.onnx")
        pred = ort.predict(sess, compress_eval.encode(tok, examples, max_len=seq_len)).argmax(-1)
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "target"])
        w.writerows(zip(ids, (int(p) for p in pred)))
    return {"rows": len(ids), "positive_rate": float(np.mean(pred)), "file": str(out)}


def main(argv=None) -> int:
    ap = cli.Parser("prune_ofa_jax.study.tweets", description=__doc__)
    ap.add_argument("--model", required=True, help="a trained cls model dir (RUN/model)")
    ap.add_argument("--out", required=True, metavar="FILE", help="the submission CSV to write")
    ap.add_argument("--seq_len", type=int, default=64)
    ap.add_argument("--tokenizer", default=None, help="default: MiniLM's WordPiece")
    args = ap.parse_args(argv)

    def body():
        tok = tokenization.load_tokenizer(args.tokenizer)
        r = write_predictions(args.model, args.out, args.seq_len, tokenizer=tok)
        print(f"wrote {r['file']}: {r['rows']} predictions, {100 * r['positive_rate']:.1f} % "
              "positive")

    return cli.run(body, verbose=args.verbose, user_errors=(common.DataError,
                                                             FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
