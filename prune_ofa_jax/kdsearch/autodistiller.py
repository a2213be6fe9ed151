"""AutoDistiller: which KD pipeline for a dataset? A regressor (scikit-learn random forest)
from (pipeline features, dataset meta-features) to the student's score / the teacher's,
trained on the accumulated results table of our runs (the meta-table), ranks candidate
pipelines for a task. A task's own rows are always left out of the fit, so a recommendation
is what the regressor says about a dataset it has not seen (leave-one-task-out).

  python -m prune_ofa_jax.kdsearch.autodistiller recommend --task sst2 [--table CSV] [--top 5]
  python -m prune_ofa_jax.kdsearch.autodistiller evaluate [--table CSV]     (leave-one-task-out)

The default table is the meta-table our study produced (kdsearch/meta_table.csv).
Dataset meta-features: log10 training rows, number of labels, mean tokens per row, sentence
pair or not, the teacher's dev score, and a small embedding of the data by the teacher (its
mean-pooled last hidden states over 256 training rows: a fixed random projection of their
mean to 4 numbers, and their mean pairwise cosine similarity).
"""

from __future__ import annotations

import csv
import json
import pathlib
import sys

import jax
import numpy as np

from prune_ofa_jax import cli, errors
from prune_ofa_jax.convert import loader
from prune_ofa_jax.distill import mi
from prune_ofa_jax.kdsearch import candidates, random_search, runs
from prune_ofa_jax.models import bert
from prune_ofa_jax.train import inputs

TABLE = pathlib.Path(__file__).with_name("meta_table.csv")
META = ("log10_rows", "num_labels", "mean_tokens", "pair", "teacher_score", "emb0", "emb1",
        "emb2", "emb3", "emb_cosine")


def _teacher_embedding(dirs: dict, arrays: dict, n: int = 256) -> dict:
    params, mcfg, task = loader.load(str(dirs["teacher"]), "cls", 2)
    model = bert.BertFamily(mcfg, task)
    pick = np.sort(np.random.default_rng(0).permutation(len(arrays["input_ids"]))[:n])
    cols = {k: np.asarray(arrays[k])[pick].astype(np.int32)
            for k in ("input_ids", "attention_mask", "token_type_ids")}
    out = jax.jit(lambda p, b: model.apply({"params": p}, **b, output_hidden_states=True))(
        params, cols)
    pooled = np.asarray(mi.masked_mean(out["hidden_states"][-1], cols["attention_mask"]))
    unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    proj = np.random.default_rng(1234).normal(size=(pooled.shape[1], 4)) / np.sqrt(
        pooled.shape[1])
    emb = pooled.mean(0) @ proj
    cos = (unit @ unit.T)[~np.eye(len(unit), dtype=bool)].mean()
    return {**{f"emb{i}": float(emb[i]) for i in range(4)}, "emb_cosine": float(cos)}


def task_meta(p, task: str, dirs: dict, root: pathlib.Path) -> dict:
    """The task's meta-features (cached in root/meta_<task>.json)."""
    cache = root / f"meta_{task}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    cfg = runs.teacher_config(p, task)
    train = inputs.make_sources(cfg).train
    arrays = train.arrays
    mask = np.asarray(arrays["attention_mask"])
    meta = {"log10_rows": float(np.log10(train.num_rows)), "num_labels": float(cfg.num_labels),
            "mean_tokens": float(mask.sum(1).mean()),
            "pair": float(np.asarray(arrays["token_type_ids"]).max() > 0),
            "teacher_score": runs.score(task, dirs["teacher_report"]),
            **_teacher_embedding(dirs, arrays)}
    cache.write_text(json.dumps(meta, indent=2))
    return meta


# --- the regressor ------------------------------------------------------------------------

def pipe_of(row: dict) -> dict:
    return {k[5:]: _num(v) for k, v in row.items() if k.startswith("pipe.")}


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def features(pipe: dict, meta: dict) -> np.ndarray:
    f = candidates.features(pipe)
    return np.array([float(meta[k]) for k in META] + [f[k] for k in sorted(f)], np.float64)


def read_table(path=TABLE) -> list:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("score", "teacher_score", "ratio"):
            r[k] = float(r[k])
    return rows


def meta_of(rows: list, task: str) -> dict:
    for r in rows:
        if r["task"] == task:
            return {k: float(r[f"meta.{k}"]) for k in META}
    raise KeyError(task)


def fit(rows: list, exclude_task: str = "", seed: int = 0):
    """A random forest on every row of the other tasks."""
    from sklearn.ensemble import RandomForestRegressor  # pylint: disable=import-outside-toplevel
    train = [r for r in rows if r["task"] != exclude_task]
    if len(train) < 2:
        raise ValueError(f"too few rows to fit without {exclude_task!r}: {len(train)}")
    x = np.stack([features(pipe_of(r), meta_of(rows, r["task"])) for r in train])
    y = np.array([r["ratio"] for r in train])
    model = RandomForestRegressor(n_estimators=300, min_samples_leaf=2, random_state=seed)
    return model.fit(x, y)


def candidate_pool(n: int = 256, seed: int = 0) -> list:
    """The fixed pipelines plus n distinct draws from the space."""
    pool = ([dict(v) for k, v in candidates.FIXED.items() if k != "student"]
            + random_search.draw(n, seed))
    seen, out = set(), []
    for pipe in pool:
        if candidates.key(pipe) not in seen:
            seen.add(candidates.key(pipe))
            out.append(candidates.canonical(pipe))
    return out


def recommend(rows: list, task: str, meta: dict, n_candidates: int = 256, seed: int = 0):
    """[(predicted ratio, pipeline)] best first, from a fit that leaves `task` out."""
    model = fit(rows, exclude_task=task, seed=seed)
    pool = candidate_pool(n_candidates, seed)
    pred = model.predict(np.stack([features(p, meta) for p in pool]))
    order = np.argsort(-pred, kind="stable")
    return [(float(pred[i]), pool[i]) for i in order]


def leave_one_task_out(rows: list, seed: int = 0) -> dict:
    """Per task, a diagnostic of the regressor's ranking over the task's EXISTING rows:
    Spearman's rho between predicted and measured ratios, and the measured ratio of the
    existing row it ranks first (`top_ranked_row_ratio`) vs the best and the mean row. Its
    recommendation (a pipeline of the candidate pool, maybe never run) is `recommend`'s; the
    study runs that one and reports it measured."""
    from scipy.stats import spearmanr  # pylint: disable=import-outside-toplevel
    out = {}
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task]
        model = fit(rows, exclude_task=task, seed=seed)
        meta = meta_of(rows, task)
        pred = model.predict(np.stack([features(pipe_of(r), meta) for r in mine]))
        actual = np.array([r["ratio"] for r in mine])
        varied = len(mine) > 2 and np.ptp(pred) > 0 and np.ptp(actual) > 0
        rho = spearmanr(pred, actual).statistic if varied else float("nan")
        out[task] = {"rows": len(mine), "spearman": float(rho),
                     "top_ranked_row_ratio": float(actual[int(np.argmax(pred))]),
                     "best_ratio": float(actual.max()), "mean_ratio": float(actual.mean())}
    return out


MODULE = "prune_ofa_jax.kdsearch.autodistiller"


def _parser() -> cli.Parser:
    ap = cli.Parser(MODULE, description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    rec = sub.add_parser("recommend", help="rank candidate pipelines for a task",
                         description="Rank candidate pipelines for a task.")
    rec.add_argument("--task", required=True)
    rec.add_argument("--top", type=int, default=5)
    rec.add_argument("--candidates", type=int, default=256)
    rec.add_argument("--meta", default="", help="meta_<task>.json of a task not in the table "
                     "(the search writes it into its workdir)")
    ev = sub.add_parser("evaluate", help="leave-one-task-out evaluation of the table",
                        description="Leave-one-task-out evaluation of the table.")
    for p in (rec, ev):
        p.add_argument("--table", default=str(TABLE), help="the meta-table (CSV)")
    return ap


def _meta(args, rows) -> dict:
    if args.meta:
        return json.loads(pathlib.Path(args.meta).read_text())
    try:
        return meta_of(rows, args.task)
    except KeyError:
        raise errors.UsageError(
            f"--task {args.task}: {args.table} has no meta-features for it; pass --meta "
            f"meta_{args.task}.json (`python -m prune_ofa_jax.kdsearch.random_search --task "
            f"{args.task} --budget 1` prepares the teacher and writes it)") from None


def main(argv=None) -> int:
    args = _parser().parse_args(argv)

    def body():
        if not pathlib.Path(args.table).is_file():
            raise errors.UsageError(f"--table {args.table}: no such file")
        rows = read_table(args.table)
        if args.cmd == "evaluate":
            print(json.dumps(leave_one_task_out(rows), indent=2))
            return
        meta = _meta(args, rows)
        for rank, (pred, pipe) in enumerate(
                recommend(rows, args.task, meta, args.candidates)[:args.top], 1):
            print(f"{rank}. predicted {pred:.3f} of the teacher: {json.dumps(pipe)}")

    return cli.run(body, verbose=args.verbose, user_errors=(FileNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
