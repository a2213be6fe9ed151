"""The reproduction study's result: per row and task, the dev metrics' mean and spread over
seeds and the retention (sparse / dense, paired by seed), as JSON, a Markdown table and a
plot; and what a study cost (`cost`, `cost_line`: every study's table ends with it)."""

from __future__ import annotations

import pathlib

import numpy as np

from prune_ofa_jax.study import cost

# The table's rows; the upstream variant each sparse row transfers from.
ROWS = ("dense", "prune_ofa", "gmp_no_kd", "prune_ofa_fast", "task_gmp")
UPSTREAM_OF = {"prune_ofa": "kd_all", "gmp_no_kd": "no_kd", "prune_ofa_fast": "kd_masked"}

# task -> (metric keys in the run's eval, label); the first key is the task's score.
METRICS = {"sst2": (("accuracy",), "SST-2 acc"),
           "mrpc": (("f1", "accuracy"), "MRPC F1/acc"),
           "squad": (("f1", "exact_match"), "SQuAD F1/EM")}
LABELS = {"dense": "dense fine-tune", "prune_ofa": "Prune OFA (all-token KD)",
          "gmp_no_kd": "upstream GMP, no KD", "prune_ofa_fast": "Prune OFA, masked KD (fast)",
          "task_gmp": "task-specific GMP"}


def headline(ev: dict) -> str:
    keys = ("accuracy", "f1", "exact_match", "mlm_accuracy", "loss")
    return ", ".join(f"{k}={ev[k]:.4f}" for k in keys if k in ev) or "no metrics"


def _scale(task: str) -> float:
    return 1.0 if task == "squad" else 100.0  # everything in points (SQuAD's already are)


def summarise(p, reports: dict) -> dict:
    seeds = list(p.seeds)
    rows = []
    for row in ROWS:
        out = {"row": row, "label": LABELS[row], "tasks": {}}
        for task in p.tasks:
            keys, _ = METRICS[task]
            runs = [reports[f"ft_{task}_{row}_s{s}"] for s in seeds]
            dense = [reports[f"ft_{task}_dense_s{s}"] for s in seeds]
            t = {}
            for k in keys:
                vals = np.array([r["eval"][k] * _scale(task) for r in runs])
                ref = np.array([r["eval"][k] * _scale(task) for r in dense])
                ret = vals / np.where(ref == 0, np.nan, ref)
                t[k] = {"per_seed": vals.tolist(), "mean": float(vals.mean()),
                        "spread": float(np.ptp(vals) / 2),
                        "retention_mean": float(np.nanmean(ret)) if np.isfinite(ret).any()
                        else None,
                        "retention_spread": float(np.ptp(ret) / 2) if np.isfinite(ret).all()
                        else None}
            t["sparsity"] = float(np.mean([r["sparsity"].get("global") or 0.0
                                           for r in runs]))
            t["steps"] = int(runs[0]["steps"])
            out["tasks"][task] = t
        upstream = UPSTREAM_OF.get(row)
        out["upstream_wall_s"] = (sum(reports[f"up_{upstream}_s{s}"]["wall_time_s"]
                                      for s in seeds) if upstream else 0.0)
        out["finetune_wall_s"] = sum(reports[f"ft_{t}_{row}_s{s}"]["wall_time_s"]
                                     for t in p.tasks for s in seeds)
        rows.append(out)
    return {"rows": rows, "seeds": seeds, "target": p.target,
            "teacher_wall_s": reports["teacher"]["wall_time_s"],
            "settings": {"upstream_steps": p.upstream_steps,
                         "upstream_seq_len": p.upstream_seq_len, "batch_size": p.batch_size,
                         "teacher_steps": p.teacher_steps,
                         "tasks": {k: dict(v) for k, v in p.tasks.items()}}}


def _cell(m: dict) -> str:
    return f"{m['mean']:.1f} ± {m['spread']:.1f}"


def _ret(m: dict) -> str:
    if m["retention_mean"] is None:
        return "n/a"  # the dense score was 0
    spread = "" if m["retention_spread"] is None else f" ± {100 * m['retention_spread']:.1f}"
    return f"{100 * m['retention_mean']:.1f}{spread} %"


def markdown(summary: dict) -> str:
    tasks = list(summary["rows"][0]["tasks"])
    head = ["row"] + [f"{METRICS[t][1]}" for t in tasks] + [
        f"{METRICS[t][1].split()[0]} retention" for t in tasks] + ["sparsity", "wall (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["rows"]:
        cells = [r["label"]]
        for t in tasks:
            keys = METRICS[t][0]
            cells.append(" / ".join(_cell(r["tasks"][t][k]) for k in keys))
        for t in tasks:
            cells.append(_ret(r["tasks"][t][METRICS[t][0][0]]))
        cells.append(f"{np.mean([r['tasks'][t]['sparsity'] for t in tasks]):.3f}")
        cells.append(f"{r['upstream_wall_s'] + r['finetune_wall_s']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    n = len(summary["seeds"])
    lines.append("")
    lines.append(f"Mean ± half the range over {n} seeds (seeds {summary['seeds']}); retention = "
                 "sparse / dense of the same seed, on the first metric. Wall = this row's "
                 f"upstream and fine-tune runs, all seeds; teacher preparation "
                 f"({summary['teacher_wall_s']:.0f} s) is shared. {cost.cost_line(summary)}")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: pathlib.Path) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    tasks = list(summary["rows"][0]["tasks"])
    rows = [r for r in summary["rows"] if r["row"] != "dense"]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        ms = [r["tasks"][t][METRICS[t][0][0]] for t in tasks]
        x = np.arange(len(tasks)) + (i - (len(rows) - 1) / 2) * width
        ax.bar(x, [100 * (m["retention_mean"] or 0) for m in ms], width,
               yerr=[100 * (m["retention_spread"] or 0) for m in ms], capsize=3,
               label=r["label"])
    ax.axhline(100, color="k", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(tasks)), [METRICS[t][1].split()[0] for t in tasks])
    ax.set_ylabel("retention vs dense (%)")
    ax.set_title(f"MiniLM-L6 at {summary['target']:.0%} sparsity, "
                 f"{len(summary['seeds'])} seeds")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
