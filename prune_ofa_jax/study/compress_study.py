"""Runs the compression study (python -m prune_ofa_jax.study): the training runs, then the
evaluations, sizes and latencies, each cached in OUT/ as JSON so a rerun skips them, then the
report (study/compress_report.py)."""

from __future__ import annotations

import json
import pathlib
import time

from prune_ofa_jax import jsonio
from prune_ofa_jax.data import tokenization
from prune_ofa_jax.study import compress_eval, compress_plan, compress_report, cost, tweets
from prune_ofa_jax.train import loop

HEADLINE_KEY = {"sst2": "accuracy", "mrpc": "f1", "tweets": "f1"}


def _say(msg: str) -> None:
    print(f"[study] {msg}", flush=True)


def ensure_run(cfg, wd: pathlib.Path, label: str) -> dict:
    """report.json of the run in `wd`, training it first unless it is done."""
    done = wd / "report.json"
    if done.is_file():
        return json.loads(done.read_text())
    if cfg is None:
        raise FileNotFoundError(f"{wd}: expected a finished run (report.json)")
    t = time.time()
    _say(f"run {label}: {cfg.train.steps} steps -> {wd}")
    rep = loop.run(cfg, wd)
    _say(f"run {label} done in {time.time() - t:.0f} s: "
         + ", ".join(f"{k}={v:.4f}" for k, v in rep["eval"].items()))
    return rep


def _cached(path: pathlib.Path, fn):
    if path.is_file():
        return json.loads(path.read_text())
    value = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(jsonio.dumps(value, indent=1))
    return value


def run(p, demo: pathlib.Path, out: pathlib.Path, models, tasks, sweep_task: str, levels,
        batches, lat_seq: int, lat_budget: float, test: bool = False) -> dict:
    t0 = time.time()
    root = out / "runs"
    runs = compress_plan.model_runs(p, demo, root, models, tasks, test)
    sweep = compress_plan.sweep_runs(p, demo, root, sweep_task, levels, test)
    reports = {k: ensure_run(c, wd, f"{k[1]}/{k[0]}") for k, (c, wd) in runs.items()}
    sweep_rows = []
    for (when, s), chain in sweep.items():
        for c, wd in chain:
            rep = ensure_run(c, wd, f"sweep {when} {s:g}")
        sweep_rows.append({"when": when, "sparsity": s, "metric": HEADLINE_KEY[sweep_task],
                           "value": rep["eval"][HEADLINE_KEY[sweep_task]],
                           "measured_sparsity": (rep.get("sparsity") or {}).get("global")})
    train_s = time.time() - t0
    tok = tokenization.load_tokenizer(p.tokenizer or None)
    results = {}
    for (model, task), (_, wd) in runs.items():
        seq = p.seq_len if test else compress_plan.SEQ_LEN[task]
        key = f"{task}_{model}"
        mdir = wd / "model"

        def evaluate(mdir=mdir, task=task, seq=seq, key=key):
            ex = compress_eval.dev_examples(task, p.data_root, p.seed)
            sess, int8 = compress_eval.session_for(mdir, out / "onnx" / f"{key}.onnx")
            r = compress_eval.evaluate(sess, task, ex, tok, seq, p.seed)
            r["int8_runtime"] = int8
            r["train_eval"] = reports[(model, task)]["eval"]  # Flax (fake-quant for QAT)
            r["size"] = compress_eval.size_on_disk(mdir, out / "packed" / f"{key}.pofa", int8)
            if task == "tweets":
                r["kaggle"] = tweets.write_predictions(
                    mdir, out / "kaggle" / f"{key}.csv", seq, p.data_root, tok)
            return r
        _say(f"evaluate {key}")
        results[key] = _cached(out / "eval" / f"{key}.json", evaluate)
    lat = {}
    for model in models:  # one task's models suffice: latency depends on shape, not weights
        key = f"{tasks[0]}_{model}"
        wd = runs[(model, tasks[0])][1]
        _say(f"latency {model}")
        lat[model] = _cached(out / "eval" / f"latency_{model}.json", lambda wd=wd, key=key: (
            compress_eval.latency(wd / "model", out / "onnx" / f"lat_{key}.onnx", batches,
                                  lat_seq, lat_budget, torch_too=not model.endswith("_int8"))))
    summary = {"results": results, "latency": lat, "sweep": sweep_rows, "sweep_task": sweep_task,
               "models": models, "tasks": tasks, "train_wall_s": round(train_s, 1),
               "wall_s": round(time.time() - t0, 1), "test": test}
    summary.update(cost.cost_of_runs_under(root))  # every run the study trained
    (out / "results.json").write_text(jsonio.dumps(summary, indent=1))
    report = compress_report.write(summary, out)
    return {"report": str(report), "table": compress_report.table_rows(summary),
            "summary": summary}
