"""The Prune OFA study's result: per row and task the dev metrics' mean and 95 % t interval
over seeds, the chance baselines, the held-out masked-LM accuracy of the teacher and of every
upstream student, the paired differences the decision rules are about and their verdicts, as
JSON, Markdown tables and a plot."""

from __future__ import annotations

import pathlib

import numpy as np

from prune_ofa_jax.study import cost, stats

# The table's rows; the upstream variant each sparse transfer row starts from.
ROWS = ("dense", "prune_ofa", "gmp_no_kd", "task_gmp")
UPSTREAM_OF = {"prune_ofa": "kd", "gmp_no_kd": "no_kd"}

# task -> (metric keys in the run's eval, label); the first key is the one the rules use.
METRICS = {"sst2": (("accuracy",), "SST-2 acc"),
           "tweets": (("accuracy", "f1"), "tweets acc / F1")}
LABELS = {"dense": "dense fine-tune", "prune_ofa": "Prune OFA (upstream GMP + KD)",
          "gmp_no_kd": "upstream GMP, no KD", "task_gmp": "task GMP (same steps)",
          "task_gmp_long": "task GMP + upstream's steps (compute-matched)",
          "kd": "upstream GMP + KD (Prune OFA)", "no_kd": "upstream GMP, no KD",
          "teacher": "dense teacher"}


def headline(ev: dict) -> str:
    keys = ("accuracy", "f1", "exact_match", "eval_mlm_accuracy", "loss")
    return ", ".join(f"{k}={ev[k]:.4f}" for k in keys if k in ev) or "no metrics"


def _interval(values) -> dict:
    return {"per_seed": [float(v) for v in values],
            **stats.t_interval(values).to_dict()}


def _as_interval(d: dict) -> stats.Interval:
    return stats.Interval(d["mean"], d["lo"], d["hi"], d["n"])


def rows(p) -> tuple:
    """The study's rows: ROWS, + the compute-matched task GMP with p.compute_matched."""
    return ROWS + (("task_gmp_long",) if p.compute_matched else ())


def summarise(p, reports: dict, dev_labels: dict, rules: dict) -> dict:
    """The summary: rows, baselines, held-out MLM, comparisons (each with its rule's verdict),
    settings. reports: run name -> report.json; dev_labels: task -> the dev labels."""
    seeds, tasks = list(p.seeds), list(p.tasks)
    per = {}  # (task, row) -> {metric: [value per seed]}
    table = []
    for row in rows(p):
        out = {"row": row, "label": LABELS[row], "tasks": {}}
        for task in tasks:
            runs = [reports[f"ft_{task}_{row}_s{s}"] for s in seeds]
            t = {}
            for k in METRICS[task][0]:
                per[task, row, k] = [r["eval"][k] for r in runs]
                t[k] = _interval(per[task, row, k])
            t["sparsity"] = float(np.mean([r["sparsity"].get("global") or 0.0 for r in runs]))
            t["steps"] = int(runs[0]["steps"])
            out["tasks"][task] = t
        up = UPSTREAM_OF.get(row)
        out["upstream_wall_s"] = (sum(reports[f"up_{up}_s{s}"]["wall_time_s"] for s in seeds)
                                  if up else 0.0)
        out["finetune_wall_s"] = sum(reports[f"ft_{t}_{row}_s{s}"]["wall_time_s"]
                                     for t in tasks for s in seeds)
        table.append(out)
    mlm_acc = {v: [reports[f"up_{v}_s{s}"]["eval"]["eval_mlm_accuracy"] for s in seeds]
               for v in UPSTREAM_OF.values()}
    mlm = {"teacher": {"accuracy": reports["teacher"]["eval"]["eval_mlm_accuracy"],
                       "loss": reports["teacher"]["eval"]["eval_mlm_loss"]}}
    for v, acc in mlm_acc.items():
        ups = [reports[f"up_{v}_s{s}"] for s in seeds]
        mlm[v] = {"accuracy": _interval(acc),
                  "loss": _interval([r["eval"]["eval_mlm_loss"] for r in ups]),
                  "sparsity": float(np.mean([r["sparsity"].get("global") or 0.0 for r in ups])),
                  "steps": int(ups[0]["steps"])}
    comparisons = []

    def compare(rule_id, a, b, task=None):
        rule = rules[rule_id] if rule_id else None
        if task is None:
            va, vb = mlm_acc[a], mlm_acc[b]
        else:
            key = METRICS[task][0][0]
            va, vb = per[task, a, key], per[task, b, key]
        diff = stats.paired(va, vb)
        comparisons.append({"rule": rule_id, "text": rule.text if rule else "", "a": a, "b": b,
                            "task": task, "diff": diff.to_dict(),
                            "margin": rule.margin if rule else None,
                            "verdict": rule.verdict(diff) if rule else "(no rule)"})
    for task in tasks:
        compare("R1", "prune_ofa", "task_gmp", task)
    compare("R2", "kd", "no_kd")
    for task in tasks:
        compare("R3", "prune_ofa", "gmp_no_kd", task)
    for task in tasks:  # what the sparsity costs, and the compute-matched row: no rule
        compare(None, "prune_ofa", "dense", task)
        compare(None, "task_gmp", "dense", task)
        if p.compute_matched:
            compare(None, "prune_ofa", "task_gmp_long", task)
    baselines = {task: {"majority": stats.majority(y), "random": stats.uniform_random(y, 2),
                        "dev_rows": int(len(y))} for task, y in dev_labels.items()}
    return {"rows": table, "seeds": seeds, "target": p.target, "baselines": baselines,
            "mlm": mlm, "comparisons": comparisons,
            "rules": {k: {"a": r.a, "b": r.b, "margin": r.margin, "text": r.text}
                      for k, r in rules.items()},
            "teacher_wall_s": reports["teacher"]["wall_time_s"],
            "settings": {"upstream_steps": p.upstream_steps, "prune_end": p.prune_end,
                         "prune_freeze": p.prune_freeze, "update_every": p.update_every,
                         "upstream_seq_len": p.upstream_seq_len, "batch_size": p.batch_size,
                         "teacher_steps": p.teacher_steps, "split_seed": p.split_seed,
                         "eval_files": list(p.eval_files), "text_files": list(p.text_files),
                         "mlm_eval_rows": p.mlm_eval_batches * p.eval_batch_size,
                         "tasks": {k: dict(v) for k, v in p.tasks.items()}}}


def _fmt(d: dict) -> str:
    return _as_interval(d).fmt(100.0, 1)


def _baseline_cells(summary: dict, which: str) -> list:
    cells = []
    for task, b in summary["baselines"].items():
        vals = [b[which].get(k) for k in METRICS[task][0]]
        cells.append(" / ".join("—" if v is None else f"{100 * v:.1f}" for v in vals))
    return cells


def markdown(summary: dict) -> str:
    tasks = list(summary["rows"][0]["tasks"])
    head = ["row"] + [METRICS[t][1] for t in tasks] + ["sparsity", "wall (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["rows"]:
        cells = [r["label"]]
        for t in tasks:
            cells.append(" / ".join(_fmt(r["tasks"][t][k]) for k in METRICS[t][0]))
        cells.append(f"{np.mean([r['tasks'][t]['sparsity'] for t in tasks]):.3f}")
        cells.append(f"{r['upstream_wall_s'] + r['finetune_wall_s']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    for which, label in (("majority", "majority class"), ("random", "uniform random")):
        lines.append("| " + " | ".join([f"*{label}*"] + _baseline_cells(summary, which)
                                       + ["—", "—"]) + " |")
    n, s = len(summary["seeds"]), summary["settings"]
    dev = ", ".join(f"{t} {b['dev_rows']}" for t, b in summary["baselines"].items())
    lines += ["", f"Dev scores in points: mean [95 % t interval] over {n} seeds "
              f"{summary['seeds']}; dev rows: {dev} (one split for every seed). Wall = the "
              "row's upstream and fine-tune runs, all seeds; teacher preparation "
              f"({summary['teacher_wall_s']:.0f} s) is shared.", ""]
    m = summary["mlm"]
    lines += ["| model (held-out masked LM: " + ", ".join(s["eval_files"]) + ") | MLM accuracy "
              "| MLM loss | sparsity | steps |", "|---|---|---|---|---|",
              f"| {LABELS['teacher']} | {100 * m['teacher']['accuracy']:.1f} | "
              f"{m['teacher']['loss']:.3f} | 0.000 | {s['teacher_steps']} |"]
    for v in UPSTREAM_OF.values():
        lines.append(f"| {LABELS[v]} | {_fmt(m[v]['accuracy'])} | "
                     f"{_as_interval(m[v]['loss']).fmt(1.0, 3)} | {m[v]['sparsity']:.3f} | "
                     f"{m[v]['steps']} |")
    lines += ["", f"{s['mlm_eval_rows']} rows of {s['upstream_seq_len']} tokens, the same "
              "masked positions for every model.", "",
              "| rule | difference (paired by seed) | task | mean [95 % interval], points "
              "| verdict |", "|---|---|---|---|---|"]
    for c in summary["comparisons"]:
        what = f"{LABELS.get(c['a'], c['a'])} − {LABELS.get(c['b'], c['b'])}"
        task = c["task"] or "held-out MLM"
        lines.append(f"| {c['rule'] or '—'} | {what} | {task} | "
                     f"{_as_interval(c['diff']).fmt(100.0, 2)} | {c['verdict']} |")
    lines += ["", " ".join(f"{k}: {r['text']}." for k, r in summary["rules"].items())
              + " A rule holds when the whole interval is on its side of the bound, fails "
              "when the whole interval is on the other, and is undecided otherwise. "
              + cost.cost_line(summary)]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: pathlib.Path) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    tasks = list(summary["rows"][0]["tasks"])
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(4.2 * (len(tasks) + 1), 3.8))
    for ax, task in zip(axes, tasks):
        key = METRICS[task][0][0]
        ms = [_as_interval(r["tasks"][task][key]) for r in summary["rows"]]
        x = np.arange(len(ms))
        err = [[0 if m.lo is None else 100 * (m.mean - m.lo) for m in ms],
               [0 if m.hi is None else 100 * (m.hi - m.mean) for m in ms]]
        ax.bar(x, [100 * m.mean for m in ms], yerr=err, capsize=3, color="C0")
        b = summary["baselines"][task]
        ax.axhline(100 * b["majority"][key], color="k", ls="--", lw=0.9, label="majority")
        ax.axhline(100 * b["random"][key], color="0.5", ls=":", lw=0.9, label="random")
        ax.set_xticks(x, [r["row"] for r in summary["rows"]], rotation=25, fontsize=7)
        lo = min(100 * b["random"][key], min(100 * (m.lo or m.mean) for m in ms))
        ax.set_ylim(lo - 5, 100)
        ax.set_title(f"{METRICS[task][1].split()[0]} dev {key} (%)", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    ax, m = axes[-1], summary["mlm"]
    ivs = [_as_interval(m[v]["accuracy"]) for v in UPSTREAM_OF.values()]
    x = np.arange(len(ivs) + 1)
    ax.bar(x, [100 * m["teacher"]["accuracy"]] + [100 * i.mean for i in ivs],
           yerr=[[0] + [0 if i.lo is None else 100 * (i.mean - i.lo) for i in ivs],
                 [0] + [0 if i.hi is None else 100 * (i.hi - i.mean) for i in ivs]],
           capsize=3, color=["C2", "C0", "C1"])
    ax.set_xticks(x, ["teacher", "upstream KD", "upstream no KD"], fontsize=7)
    ax.set_title("held-out masked-LM accuracy (%)", fontsize=9)
    fig.suptitle(f"MiniLM-L6 at {summary['target']:.0%} sparsity, {len(summary['seeds'])} seeds, "
                 "95 % t intervals", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
