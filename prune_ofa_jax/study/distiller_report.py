"""The Distiller study's result (study/distiller.py): per task and row, the dev score's mean
and spread over seeds, the teacher, AutoDistiller's picks and its leave-one-task-out
evaluation, as JSON, a Markdown table, a plot, and the README section between the markers."""

from __future__ import annotations

import pathlib

import numpy as np

from prune_ofa_jax.kdsearch import runs
from prune_ofa_jax.study import cost

LABELS = {"student": "student alone", "logits_kd": "logits KD",
          "hidden_mse": "+ hidden MSE", "mi_alpha": "+ MI-alpha (instead of MSE)",
          "augment": "+ augmentation (contextual)", "autodistiller": "AutoDistiller's pick"}


def summarise(p, rows: list, picks: dict, prepared: dict, loto: dict) -> dict:
    tasks = list(p.tasks)
    table = []
    for row in tuple(p.rows) + (("autodistiller",) if picks else ()):
        out = {"row": row, "label": LABELS[row], "tasks": {}}
        for task in tasks:
            mine = sorted((r for r in rows if r["source"] == row and r["task"] == task),
                          key=lambda r: r["seed"])
            vals = np.array([100 * r["score"] for r in mine])
            acc = np.array([100 * (r["accuracy"] or 0) for r in mine])
            out["tasks"][task] = {"per_seed": vals.tolist(), "mean": float(vals.mean()),
                                  "spread": float(np.ptp(vals) / 2),
                                  "accuracy_mean": float(acc.mean()),
                                  "wall_s": float(sum(r["wall_s"] for r in mine))}
        table.append(out)
    searched = {t: sorted((r for r in rows if r["source"] == "search" and r["task"] == t),
                          key=lambda r: -r["score"]) for t in tasks}
    return {"rows": table, "seeds": list(p.seeds), "tasks": tasks,
            "metric": {t: runs.METRIC[t][1] for t in tasks},
            "teacher": {t: 100 * runs.score(t, prepared[t]["teacher_report"]) for t in tasks},
            "teacher_wall_s": {t: prepared[t]["teacher_report"]["wall_time_s"] for t in tasks},
            "picks": picks, "leave_one_task_out": loto,
            "search_best": {t: {"run": s[0]["run"], "score": 100 * s[0]["score"]}
                            for t, s in searched.items() if s},
            "settings": {"steps": p.steps, "batch_size": p.batch_size, "lr": p.lr,
                         "teacher_steps": p.teacher_steps, "search_budget": p.search_budget,
                         "tasks": {k: dict(v) for k, v in p.tasks.items()}}}


def markdown(summary: dict) -> str:
    tasks = summary["tasks"]
    head = ["row"] + [summary["metric"][t] for t in tasks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
             "| teacher (MiniLM-L6, 6 layers) | " + " | ".join(
                 f"{summary['teacher'][t]:.1f}" for t in tasks) + " |"]
    for r in summary["rows"]:
        cells = [r["label"]] + [f"{r['tasks'][t]['mean']:.1f} ± {r['tasks'][t]['spread']:.1f}"
                                for t in tasks]
        lines.append("| " + " | ".join(cells) + " |")
    n = len(summary["seeds"])
    lines += ["", f"Dev set, mean ± half the range over {n} seeds {summary['seeds']}; "
              f"students: 3 layers from MiniLM-L6's {{1, 3, 5}}, "
              f"{summary['settings']['steps']} steps of {summary['settings']['batch_size']} "
              "rows (augmentation: + as many augmented rows). "
              + cost.cost_line(summary), ""]
    if not summary["picks"]:
        return "\n".join(lines) + "\n"
    lines.append("AutoDistiller (fitted on the other tasks' rows only):")
    lines.append("")
    lines.append("| task | its pick | leave-one-task-out: Spearman | pick's ratio | best | mean |")
    lines.append("|---|---|---|---|---|---|")
    for t in tasks:
        pipe = summary["picks"][t]["pipeline"]
        e = summary["leave_one_task_out"].get(t, {})
        lines.append(f"| {t} | {describe(pipe)} | {e.get('spearman', float('nan')):.2f} | "
                     f"{e.get('top_pick_ratio', float('nan')):.3f} | "
                     f"{e.get('best_ratio', float('nan')):.3f} | "
                     f"{e.get('mean_ratio', float('nan')):.3f} |")
    return "\n".join(lines) + "\n"


def describe(pipe: dict) -> str:
    """A short human name of a pipeline."""
    parts = [f"{pipe['logit_loss']} T={pipe['temperature']:g} kd={pipe['kd_weight']:g} "
             f"hard={pipe['task_weight']:g}"]
    if pipe["intermediate"] != "none":
        alpha = f" a={pipe['mi_alpha']:g}" if pipe["intermediate"] == "mi_alpha" else ""
        parts.append(f"{pipe['intermediate']}{alpha} x{pipe['intermediate_weight']:g} "
                     f"{pipe['layer_map']}")
    if float(pipe["attention_weight"]) > 0:
        parts.append("+attn")
    if pipe["augment"] != "none":
        parts.append(f"aug={pipe['augment']}")
    return ", ".join(parts)


def plot(summary: dict, path: pathlib.Path) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    tasks, rows = summary["tasks"], summary["rows"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.4), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        means = [r["tasks"][t]["mean"] for r in rows]
        ax.bar(range(len(rows)), means, yerr=[r["tasks"][t]["spread"] for r in rows],
               capsize=3, color=[f"C{i}" for i in range(len(rows))])
        ax.axhline(summary["teacher"][t], color="k", ls="--", lw=0.8, label="teacher")
        lo = min(means + [summary["teacher"][t]])
        ax.set_ylim(max(0, lo - 8), max(means + [summary["teacher"][t]]) + 3)
        ax.set_xticks(range(len(rows)), [r["row"] for r in rows], rotation=60, fontsize=7)
        ax.set_title(summary["metric"][t], fontsize=9)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"3-layer students of MiniLM-L6, {len(summary['seeds'])} seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
