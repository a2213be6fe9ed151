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


ARM_LABEL = {"before": "before fine-tuning (Prune OFA upstream)",
             "after": "after, step-matched (task GMP)",
             "after_2x": "after, 2x task steps (compute-matched)"}


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
            iv = r.get("interval") or {}
            rows.append({
                "task": task, "model": model, "metric": m["headline"],
                "value": m[m["headline"]], "lo": iv.get("lo"), "hi": iv.get("hi"),
                "accuracy": m["accuracy"],
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
        _majority_line(ax, summary, task, key)
        ax.set(title=f"{task}: {key} under typos", xlabel="% of words with a typo",
               ylabel=key)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "robustness.png", dpi=80)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for when, style in (("before", "o-"), ("after", "s--"), ("after_2x", "^:")):
        pts = sorted((r["sparsity"], r["value"]) for r in summary["sweep"] if r["when"] == when)
        if pts:
            ax.plot([100 * s for s, _ in pts], [v for _, v in pts], style,
                    label=ARM_LABEL[when])
    metric = summary["sweep"][0]["metric"] if summary["sweep"] else ""
    _majority_line(ax, summary, summary["sweep_task"], metric)
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


def _majority_line(ax, summary: dict, task: str, key: str) -> None:
    """The best constant prediction (the majority class, or class 1 everywhere for F1)."""
    base = (summary.get("baselines") or {}).get(task)
    if base and base["majority"].get(key) is not None:
        best = max((base[n][key], n) for n in ("majority", "all_positive") if n in base)
        ax.axhline(best[0], color="k", ls="--", lw=0.8,
                   label="majority class" if best[1] == "majority" else "all class 1")


def _fmt(v, spec=".4f") -> str:
    return "n/a" if v is None else format(v, spec)


def _ci(r) -> str:
    return "" if r["lo"] is None else f" [{r['lo']:.4f}, {r['hi']:.4f}]"


def _latency_lines(summary: dict) -> list:
    lines = []
    st = summary.get("latency_settings") or {}
    for b, per in (summary.get("latency_speedups") or {}).items():
        for label, r in per.items():
            lines.append(f"- batch {b}: {label}: {r['ratio']:.2f}x (per-round ratios "
                         f"p10-p90 {r['paired_p10']:.2f}-{r['paired_p90']:.2f}, "
                         f"{r['rounds']} rounds)")
    if st:
        lines.insert(0, f"Latency: every model side by side, each in its own worker process "
                     f"(runtime/latency.py, the bench's function): {st.get('threads') or 'all'}"
                     f" threads, {st.get('warmup')} warm-up calls, up to {st.get('repeats')} "
                     f"rounds alternating between workers, seq {st.get('seq_len')}; p50 with "
                     "[p10, p90] below.")
        lines.insert(1, "")
    return lines


def headline(summary: dict) -> str:
    """The main table with the baselines, real int8 against fake-quant, the latency ratios
    and the sparsity sweep: the docs page's part of the report."""
    lines = [f"Models {', '.join(summary['models'])}; tasks {', '.join(summary['tasks'])}. "
             f"Every model evaluated as deployed (ONNX in onnxruntime; int8 for QAT models); "
             "one trained model per row, so the interval is a 95 % bootstrap over dev rows "
             "(the dev sample's spread, not training seeds'). " + cost.cost_line(summary),
             "", "| task | model | metric | value [95 % CI] (runtime) | Flax eval | acc | ECE "
             "| @20 % typos | sparsity | .pofa MB | x vs fp32 safetensors | p50 ms b1 "
             "[p10, p90] | p50 ms b32 [p10, p90] |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = summary.get("baselines") or {}

    def lat(model, b):
        v = _lat(summary, model, b)
        if v is None:
            return "n/a"
        return (f"{v:.1f} [{_lat(summary, model, b, 'p10_ms'):.1f}, "
                f"{_lat(summary, model, b, 'p90_ms'):.1f}]")
    for task in summary["tasks"]:
        key = "accuracy" if task == "sst2" else "f1"
        for name, label in (("majority", "majority class"), ("all_positive", "all class 1")):
            b = base.get(task, {}).get(name)
            if b and (name == "majority" or key == "f1"):
                lines.append(f"| {task} | {label} | {key} | {b[key]:.4f} | - | "
                             f"{b['accuracy']:.4f} | - | - | - | - | - | - | - |")
        for r in (r for r in table_rows(summary) if r["task"] == task):
            lines.append(
                f"| {r['task']} | {r['model']} | {r['metric']} | {r['value']:.4f}{_ci(r)} "
                f"({r['runtime']}) | {_fmt(r['train_eval'])} | {r['accuracy']:.4f} "
                f"| {r['ece']:.4f} | {r['typos_20']:.4f} | {r['sparsity']:.3f} "
                f"| {r['pofa_mb']:.2f} | {r['x_vs_safetensors']:.1f} | {lat(r['model'], '1')} "
                f"| {lat(r['model'], '32')} |")
    lines += ["", "Flax eval: the training run's own eval (fake-quant for QAT models); value: "
              "the exported model in onnxruntime on the same rows.", ""]
    for key, d in (summary.get("paired_vs_dense") or {}).items():
        task, _, model = key.partition("_")
        lines.append(f"- {task}: {model} - dense, paired on the same dev rows: "
                     f"{100 * d['mean']:+.2f} points [{100 * d['lo']:+.2f}, "
                     f"{100 * d['hi']:+.2f}]")
    for r in table_rows(summary):
        if r["runtime"] == "ORT int8" and r["train_eval"] is not None:
            d = 100 * (r["value"] - r["train_eval"])
            lines.append(f"- {r['task']} {r['model']}: real int8 (onnxruntime) vs fake-quant "
                         f"{r['metric']}: {d:+.2f} points (target: within 0.5; "
                         f"{'met' if abs(d) <= 0.5 else 'missed'})")
    lines += [""] + _latency_lines(summary)
    arms = summary.get("sweep_arms") or ["before", "after"]
    steps = summary.get("sweep_steps") or {}
    f, up = steps.get("finetune", "F"), steps.get("upstream", "U")
    task_steps = {"before": f"{up} upstream + {f} task steps", "after": f"{f} task steps",
                  "after_2x": f"{f} + {f} task steps" if isinstance(f, int) else "2F"}
    mj = base.get(summary["sweep_task"], {}).get("majority", {})
    metric = summary["sweep"][0]["metric"] if summary["sweep"] else ""
    lines += ["", f"Sparsity sweep on {summary['sweep_task']} ({metric}; one seed; majority "
              f"class {_fmt(mj.get(metric))}):", "",
              "| sparsity | " + " | ".join(f"{ARM_LABEL[a]}: {task_steps[a]}" for a in arms)
              + " |", "|---|" + "---|" * len(arms)]
    by = {(r["when"], r["sparsity"]): r["value"] for r in summary["sweep"]}
    for s in sorted({r["sparsity"] for r in summary["sweep"]}):
        lines.append(f"| {100 * s:g} % | " + " | ".join(_fmt(by.get((a, s))) for a in arms)
                     + " |")
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
              "| model | batch | variant | p50 ms | p10 ms | p90 ms | median 95 % CI | seq/s "
              "| calls |", "|---|---|---|---|---|---|---|---|---|"]
    for model, per in summary["latency"].items():
        for b, variants in per.items():
            for k, v in variants.items():
                ci = v.get("median_ci95_ms")
                ci = f"[{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "n/a"
                lines.append(f"| {model} | {b} | {k} | {v['p50_ms']:.1f} | {v['p10_ms']:.1f} | "
                             f"{v['p90_ms']:.1f} | {ci} | {v['seq_per_s']:.1f} | "
                             f"{v['calls']} |")
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
