"""The Distiller study's result (study/distiller.py): per task and row, the dev score's mean
and 95 % t interval over seeds, its paired difference against the student alone, the
majority-class and random baselines, the teacher, the stated rules' verdicts, and
AutoDistiller's one pick (its recommendation, run with every seed and measured); as JSON, a
Markdown table, a plot, and the page section between the markers."""

from __future__ import annotations

import pathlib

import numpy as np

from prune_ofa_jax.kdsearch import runs
from prune_ofa_jax.study import cost, stats
from prune_ofa_jax.train import inputs

LABELS = {"student": "student alone", "logits_kd": "logits KD",
          "hidden_mse": "+ hidden MSE", "mi_alpha": "+ MI-alpha (instead of MSE)",
          "augment": "+ augmentation (contextual, equal rows seen)",
          "autodistiller": "AutoDistiller's pick"}
REFERENCE = "student"  # every row's paired difference is against this one


def baselines(teacher_cfg) -> dict:
    """Majority class and uniform random on the dev rows the task's runs score, in the
    task's score (runs.METRIC: F1 for the tweets, accuracy for SST-2), in points."""
    task = teacher_cfg.data.glue_task if teacher_cfg.data.kind == "glue" else "tweets"
    labels = inputs.classification_examples(teacher_cfg)[1].labels
    keys = runs.METRIC[task][0]
    mj, rnd = stats.majority(labels), stats.uniform_random(labels)
    pos = float(np.mean(np.asarray(labels) == 1))
    # predicting class 1 everywhere: the best constant F1 (the majority class may score 0)
    ones = {"accuracy": pos, "f1": 2 * pos / (1 + pos) if pos else 0.0}
    return {"majority": 100 * float(np.mean([mj[k] for k in keys])),
            "random": 100 * float(np.mean([rnd[k] for k in keys])),
            "all_positive": 100 * float(np.mean([ones[k] for k in keys])),
            "rows": len(labels)}


def _per_seed(rows: list, source: str, task: str) -> list:
    return sorted((r for r in rows if r["source"] == source and r["task"] == task),
                  key=lambda r: r["seed"])


def _cell(mine: list) -> dict:
    vals = [100 * r["score"] for r in mine]
    return {"per_seed": vals, "seeds": [r["seed"] for r in mine],
            **stats.t_interval(vals).to_dict(),
            "accuracy_mean": float(np.mean([100 * (r["accuracy"] or 0) for r in mine])),
            "wall_s": float(sum(r["wall_s"] for r in mine))}


def _paired(a: dict, b: dict) -> dict:
    """a - b paired by seed (points), over the seeds both have."""
    common = [s for s in a["seeds"] if s in b["seeds"]]
    pick = lambda c: [c["per_seed"][c["seeds"].index(s)] for s in common]  # noqa: E731
    return stats.paired(pick(a), pick(b)).to_dict() if common else None


def summarise(p, rows: list, picks: dict, prepared: dict, loto: dict,
              base: dict | None = None) -> dict:
    tasks = list(p.tasks)
    names = tuple(p.rows) + (("autodistiller",) if picks else ())
    cells = {row: {t: _cell(_per_seed(rows, row, t)) for t in tasks} for row in names}
    table = []
    for row in names:
        out = {"row": row, "label": LABELS[row], "tasks": cells[row]}
        if REFERENCE in cells and row != REFERENCE:
            out["vs_student"] = {t: _paired(cells[row][t], cells[REFERENCE][t]) for t in tasks}
        table.append(out)
    fixed = [r for r in p.rows if r in cells]
    best_fixed = {t: max(fixed, key=lambda r: cells[r][t]["mean"]) for t in tasks}
    verdicts = []
    for name, a, b, margin, text in getattr(p, "rules", ()):
        for t in tasks:
            bb = best_fixed[t] if b == "best_fixed" else b
            if a not in cells or bb not in cells:
                continue
            d = _paired(cells[a][t], cells[bb][t])
            rule = stats.Rule(a, bb, margin, text)
            iv = stats.Interval(d["mean"], d["lo"], d["hi"], d["n"]) if d else None
            verdicts.append({"rule": name, "task": t, "a": a, "b": bb, "margin": margin,
                             "text": text, "diff": d,
                             "verdict": rule.verdict(iv) if iv else "no shared seeds"})
    teacher = {t: 100 * runs.score(t, prepared[t]["teacher_report"]) for t in tasks}
    pick_out = {}
    for t, pk in picks.items():
        c = cells["autodistiller"][t]
        pick_out[t] = {**pk, "measured": {k: c[k] for k in ("mean", "lo", "hi", "n",
                                                             "per_seed")},
                       "measured_ratio": c["mean"] / teacher[t],
                       "vs_student": _paired(c, cells[REFERENCE][t]) if REFERENCE in cells
                       else None,
                       "best_fixed": best_fixed[t],
                       "vs_best_fixed": _paired(c, cells[best_fixed[t]][t])}
    return {"rows": table, "seeds": list(p.seeds), "tasks": tasks,
            "metric": {t: runs.METRIC[t][1] for t in tasks}, "teacher": teacher,
            "baselines": base or {},
            "teacher_wall_s": {t: prepared[t]["teacher_report"]["wall_time_s"] for t in tasks},
            "picks": pick_out, "leave_one_task_out": loto, "rules": verdicts,
            "settings": {"steps": p.steps, "batch_size": p.batch_size, "lr": p.lr,
                         "teacher_steps": p.teacher_steps, "search_budget": p.search_budget,
                         "candidates": p.candidates,
                         "split_seed": p.split_seed,
                         "tasks": {k: dict(v) for k, v in p.tasks.items()}}}


def _fmt(c: dict) -> str:
    return stats.Interval(c["mean"], c["lo"], c["hi"], c["n"]).fmt(scale=1.0)


def _fmt_diff(d) -> str:
    return "-" if d is None else _fmt(d)


def markdown(summary: dict) -> str:
    tasks = summary["tasks"]
    head = ["row"] + [f"{summary['metric'][t]} [95 % CI]" for t in tasks] + [
        f"{summary['metric'][t]}: - student alone" for t in tasks]
    base = summary.get("baselines") or {}
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if base:
        lines.append("| majority class / random / all class 1 | " + " | ".join(
            f"{base[t]['majority']:.1f} / {base[t]['random']:.1f} / "
            f"{base[t].get('all_positive', float('nan')):.1f}" for t in tasks) + " | "
            + " | ".join("-" for _ in tasks) + " |")
    lines.append("| teacher (MiniLM-L6, 6 layers, seed 0) | " + " | ".join(
        f"{summary['teacher'][t]:.1f}" for t in tasks) + " | " + " | ".join(
        "-" for _ in tasks) + " |")
    for r in summary["rows"]:
        vs = r.get("vs_student") or {}
        cells = ([r["label"]] + [_fmt(r["tasks"][t]) for t in tasks]
                 + [_fmt_diff(vs.get(t)) for t in tasks])
        lines.append("| " + " | ".join(cells) + " |")
    n, st = len(summary["seeds"]), summary["settings"]
    lines += ["", f"Dev set, mean [95 % t interval] over {n} seeds {summary['seeds']}; the "
              "difference to the student alone is paired by seed. Students: 3 layers from "
              f"MiniLM-L6's {{1, 3, 5}}, {st['steps']} steps of {st['batch_size']} rows "
              "(augmentation: half of them augmented rows). " + cost.cost_line(summary), ""]
    if summary.get("rules"):
        lines += ["Rules stated before the runs (a - b, paired by seed, 95 % interval; margin "
                  "0: a > b, else a >= b - margin):", "",
                  "| rule | task | a - b (points) | verdict |", "|---|---|---|---|"]
        for v in summary["rules"]:
            rule = (f"{v['rule']}: {v['a']} vs {v['b']}"
                    + (f" (margin {v['margin']:g})" if v["margin"] else ""))
            lines.append(f"| {rule} | {v['task']} | {_fmt_diff(v['diff'])} | {v['verdict']} |")
        lines.append("")
    if not summary["picks"]:
        return "\n".join(lines) + "\n"
    lines += ["AutoDistiller: one pick per task (its recommendation among "
              f"{st.get('candidates', 256)} candidate pipelines, fitted on the other task's "
              "rows only), run with every seed:", "",
              "| task | its pick | predicted ratio | measured [95 % CI] | measured ratio "
              "| - student alone | - best fixed row | Spearman over the task's rows |",
              "|---|---|---|---|---|---|---|---|"]
    for t in tasks:
        pk = summary["picks"][t]
        rho = summary["leave_one_task_out"].get(t, {}).get("spearman", float("nan"))
        lines.append(f"| {t} | {describe(pk['pipeline'])} | {pk['predicted_ratio']:.3f} | "
                     f"{_fmt(pk['measured'])} | {pk['measured_ratio']:.3f} | "
                     f"{_fmt_diff(pk['vs_student'])} | {_fmt_diff(pk['vs_best_fixed'])} "
                     f"({pk['best_fixed']}) | {rho:.2f} |")
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
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.6), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        cells = [r["tasks"][t] for r in rows]
        means = [c["mean"] for c in cells]
        err = [[0 if c["lo"] is None else c["mean"] - c["lo"] for c in cells],
               [0 if c["hi"] is None else c["hi"] - c["mean"] for c in cells]]
        ax.bar(range(len(rows)), means, yerr=err, capsize=3,
               color=[f"C{i}" for i in range(len(rows))])
        ax.axhline(summary["teacher"][t], color="k", ls="--", lw=0.8, label="teacher")
        refs = [summary["teacher"][t]]
        base = (summary.get("baselines") or {}).get(t)
        if base:
            best = max(("majority", "all_positive"), key=lambda k: base.get(k, -1))
            ax.axhline(base[best], color="tab:red", ls=":", lw=1.0,
                       label="best constant (majority or all class 1)")
            refs.append(base[best])
        lo = min(means + refs)
        ax.set_ylim(max(0, lo - 8), max(means + refs) + 3)
        ax.set_xticks(range(len(rows)), [r["row"] for r in rows], rotation=60, fontsize=7)
        ax.set_title(summary["metric"][t], fontsize=9)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"3-layer students of MiniLM-L6, {len(summary['seeds'])} seeds, "
                 "95 % t intervals", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
