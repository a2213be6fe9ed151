"""The compression study's report: DIR/report.md with its tables and the PNG plots
(reliability.png, robustness.png, sweep.png, size_latency.png) beside it."""

from __future__ import annotations

import pathlib

from prune_ofa_jax.study import cost

PLOTS = ("reliability.png", "robustness.png", "sweep.png", "size_latency.png")
# Ojo et al. 2023 (arXiv 2303.07292), disaster tweets; the paper's headline figures.
PAPER_TWEETS = {"RoBERTa": 82.6, "BERT": "see paper", "DistilBERT": "see paper",
                "XLNet": "see paper"}


def _mb(b) -> str:
    return f"{b / 2**20:.2f}"


def _lat(summary: dict, model: str, batch: str, field: str = "p50_ms"):
    per = summary["latency"].get(model, {}).get(batch, {})
    v = per.get("ort_int8") or per.get("ort_fp32")
    return None if v is None else v[field]


def table_rows(summary: dict) -> list[dict]:
    rows = []
    for task in summary["tasks"]:
        for model in summary["models"]:
            r = summary["results"][f"{task}_{model}"]
            m, size = r["metrics"], r["size"]
            rows.append({
                "task": task, "model": model, "metric": m["headline"],
                "value": m[m["headline"]], "accuracy": m["accuracy"],
                "train_eval": r["train_eval"].get(m["headline"]),
                "ece": r["calibration"]["ece"],
                "typos_20": r["robustness"]["0.2"][m["headline"]],
                "sparsity": size["sparsity"], "pofa_mb": size["pofa_bytes"] / 2**20,
                "x_vs_safetensors": size["x_vs_safetensors"],
                "p50_b1_ms": _lat(summary, model, "1"), "p50_b32_ms": _lat(summary, model, "32"),
                "runtime": "ORT int8" if r["int8_runtime"] else "ORT fp32"})
    return rows


def _plots(summary: dict, out: pathlib.Path) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    tasks, models, res = summary["tasks"], summary["models"], summary["results"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        for model in models:
            c = res[f"{task}_{model}"]["calibration"]
            pts = [(x, y) for x, y in zip(c["confidence"], c["accuracy"]) if x is not None]
            ax.plot(*zip(*pts), "o-", ms=3, label=f"{model} (ECE {c['ece']:.3f})")
        ax.set(title=f"{task}: reliability", xlabel="confidence", ylabel="accuracy",
               xlim=(0.45, 1.0), ylim=(0.0, 1.02))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=80)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for model in models:
            rob = res[f"{task}_{model}"]["robustness"]
            key = res[f"{task}_{model}"]["metrics"]["headline"]
            rates = sorted(rob, key=float)
            ax.plot([100 * float(r) for r in rates], [rob[r][key] for r in rates], "o-",
                    label=model)
        ax.set(title=f"{task}: {key} under typos", xlabel="% of words with a typo",
               ylabel=key)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "robustness.png", dpi=80)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for when, style in (("before", "o-"), ("after", "s--")):
        pts = sorted((r["sparsity"], r["value"]) for r in summary["sweep"] if r["when"] == when)
        if pts:
            ax.plot([100 * s for s, _ in pts], [v for _, v in pts], style,
                    label=f"pruned {when} fine-tuning")
    metric = summary["sweep"][0]["metric"] if summary["sweep"] else ""
    ax.set(title=f"{summary['sweep_task']}: sparsity sweep", xlabel="encoder sparsity (%)",
           ylabel=metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=80)
    plt.close(fig)
    rows = [r for r in table_rows(summary) if r["task"] == tasks[0]]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.2))
    a1.bar([r["model"] for r in rows], [r["pofa_mb"] for r in rows])
    a1.set(title="size on disk (.pofa, MB)")
    a2.bar([r["model"] for r in rows], [r["p50_b32_ms"] or 0 for r in rows])
    a2.set(title="p50 latency, batch 32 x 128 (ms)")
    fig.tight_layout()
    fig.savefig(out / "size_latency.png", dpi=80)
    plt.close(fig)


def _fmt(v, spec=".4f") -> str:
    return "n/a" if v is None else format(v, spec)


def headline(summary: dict) -> str:
    """The main table, real int8 against fake-quant, and the sparsity sweep: the README's
    part of the report."""
    lines = [f"Models {', '.join(summary['models'])}; tasks {', '.join(summary['tasks'])}. "
             f"Every model evaluated as deployed (ONNX in onnxruntime; int8 for QAT models). "
             + cost.cost_line(summary),
             "", "| task | model | metric | value (runtime) | Flax eval | acc | ECE | @20 % typos "
             "| sparsity | .pofa MB | x vs fp32 safetensors | p50 ms b1 | p50 ms b32 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table_rows(summary):
        lines.append(
            f"| {r['task']} | {r['model']} | {r['metric']} | {r['value']:.4f} ({r['runtime']}) "
            f"| {_fmt(r['train_eval'])} | {r['accuracy']:.4f} | {r['ece']:.4f} "
            f"| {r['typos_20']:.4f} | {r['sparsity']:.3f} | {r['pofa_mb']:.2f} "
            f"| {r['x_vs_safetensors']:.1f} | {_fmt(r['p50_b1_ms'], '.1f')} "
            f"| {_fmt(r['p50_b32_ms'], '.1f')} |")
    lines += ["", "Flax eval: the training run's own eval (fake-quant for QAT models); value: "
              "the exported model in onnxruntime on the same rows.", ""]
    for r in table_rows(summary):
        if r["runtime"] == "ORT int8" and r["train_eval"] is not None:
            d = 100 * (r["value"] - r["train_eval"])
            lines.append(f"- {r['task']} {r['model']}: real int8 (onnxruntime) vs fake-quant "
                         f"{r['metric']}: {d:+.2f} points (target: within 0.5; "
                         f"{'met' if abs(d) <= 0.5 else 'missed'})")
    lines += ["", f"Sparsity sweep on {summary['sweep_task']}:", "",
              "| sparsity | pruned before fine-tuning (Prune OFA upstream) | after (task GMP) |",
              "|---|---|---|"]
    by = {(r["when"], r["sparsity"]): r["value"] for r in summary["sweep"]}
    for s in sorted({r["sparsity"] for r in summary["sweep"]}):
        lines.append(f"| {100 * s:g} % | {_fmt(by.get(('before', s)))} | "
                     f"{_fmt(by.get(('after', s)))} |")
    return "\n".join(lines) + "\n"


def markdown(summary: dict) -> str:
    lines = ["# What compression costs beyond accuracy", "", headline(summary)]
    lines += ["## Per-class precision / recall / F1 and confusion matrices", "",
              "| task | model | P (0 / 1) | R (0 / 1) | F1 (0 / 1) | confusion [[TN FP] [FN TP]] |",
              "|---|---|---|---|---|---|"]
    for key, r in summary["results"].items():
        pc = r["per_class"]
        task, _, model = key.partition("_")
        f = lambda xs: " / ".join(f"{x:.3f}" for x in xs)  # noqa: E731
        lines.append(f"| {task} | {model} | {f(pc['precision'])} | {f(pc['recall'])} | "
                     f"{f(pc['f1'])} | {pc['confusion']} |")
    lines += ["", "## Robustness (headline metric vs % of words with one typo)", "",
              "| task | model | " + " | ".join(f"{100 * float(k):g} %" for k in
                                                 sorted(next(iter(summary['results'].values()))
                                                        ["robustness"], key=float)) + " |",
              "|---|---|" + "---|" * 4]
    for key, r in summary["results"].items():
        h = r["metrics"]["headline"]
        rob = r["robustness"]
        task, _, model = key.partition("_")
        lines.append(f"| {task} | {model} | " + " | ".join(
            f"{rob[k][h]:.4f}" for k in sorted(rob, key=float)) + " |")
    lines += ["", "## Latency (onnxruntime; PyTorch fp32 beside the fp32 models)", "",
              "| model | batch | variant | p50 ms | p95 ms | seq/s |", "|---|---|---|---|---|---|"]
    for model, per in summary["latency"].items():
        for b, variants in per.items():
            for k, v in variants.items():
                lines.append(f"| {model} | {b} | {k} | {v['p50_ms']:.1f} | {v['p95_ms']:.1f} | "
                             f"{v['seq_per_s']:.1f} |")
    kaggle = {k: r["kaggle"] for k, r in summary["results"].items() if "kaggle" in r}
    if kaggle:
        lines += ["", "## Disaster tweets: Kaggle predictions", ""]
        lines += [f"- {k}: {v['file']} ({v['rows']} rows, {100 * v['positive_rate']:.1f} % "
                  "positive)" for k, v in kaggle.items()]
        lines += ["", "Ojo et al. 2023 report RoBERTa best at 82.6 (most likely the Kaggle "
                  "F1); only MiniLM weights exist offline here, the other families are one "
                  "`--config.init.path` away (configs/finetune_tweets.py)."]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in PLOTS]
    return "\n".join(lines) + "\n"


def write(summary: dict, out: pathlib.Path) -> pathlib.Path:
    _plots(summary, out)
    path = out / "report.md"
    path.write_text(markdown(summary))
    return path
