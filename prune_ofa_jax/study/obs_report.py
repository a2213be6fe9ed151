"""The OBS study's result (study/obs_study.py): the one-shot sweeps, the gradual runs' mean
dev accuracy with its 95 % t interval over seeds, the paired OBS - GMP difference per task
and target with the stated rule's verdict, the majority-class baseline, the paper's figures
beside ours, and the cost. JSON, a Markdown section and one plot."""

from __future__ import annotations

import numpy as np

from prune_ofa_jax.study import cost, stats

METRIC = "accuracy"
LABELS = {"sst2": "SST-2", "tweets": "disaster tweets"}
# Kurtic et al. 2022 (oBERT), BERT-base, SQuAD v1.1 dev F1, as the reference repository
# (neuralmagic/sparseml, research/optimal_BERT_surgeon_oBERT/README.md) lists them.
PAPER_DENSE = 88.54
PAPER_ONESHOT = {  # OBS, one shot from the fine-tuned model: recomputations -> {sparsity: F1}
    1: {0.7: 83.38, 0.8: 57.48, 0.9: 14.57}, 4: {0.7: 85.17, 0.8: 72.76, 0.9: 29.23},
    8: {0.7: 85.34, 0.8: 77.85, 0.9: 39.58}, 16: {0.7: 85.49, 0.8: 78.27, 0.9: 45.03},
    32: {0.7: 85.49, 0.8: 78.65, 0.9: 47.67}}
PAPER_GRADUAL = {0.8: 89.04, 0.9: 88.31}  # oBERT pruned during 30 epochs of fine-tuning
PAPER_OTHERS = ("oBERT 90 % pruned upstream, then fine-tuned with the pattern locked: 88.49; "
                "Prune OFA (GMP upstream + KD) 85 %: 88.42")


def headline(report: dict) -> str:
    ev, sp = report["eval"], (report.get("sparsity") or {}).get("global")
    return f"{METRIC}={ev[METRIC]:.4f}" + (f", sparsity={sp:.3f}" if sp is not None else "")


def _run(task, row, target=None, seed=0):
    return f"{task}_{row}" if target is None else f"{task}_{row}_{round(100 * target)}_s{seed}"


def gradual_runs(p) -> bool:
    """Whether the study trains gradual runs (no seeds or no targets: the one-shot part
    only, the teachers and their sweeps)."""
    return bool(p.seeds) and bool(p.targets)


def summarise(p, reports: dict, oneshot: dict, labels: dict) -> dict:
    tasks, seeds = list(p.tasks), list(p.seeds)
    gradual, paired = {}, {}
    for task in tasks if gradual_runs(p) else ():
        for target in p.targets:
            key = f"{task}@{target}"
            per = {m: [reports[_run(task, m, target, s)]["eval"][METRIC] for s in seeds]
                   for m in ("gmp", "obs")}
            reached = {m: [reports[_run(task, m, target, s)]["sparsity"]["global"]
                           for s in seeds] for m in per}
            gradual[key] = {m: {"per_seed": v, **stats.t_interval(v).to_dict(),
                                "sparsity": float(np.mean(reached[m]))} for m, v in per.items()}
            diff = stats.paired(per["obs"], per["gmp"])
            rule = stats.Rule("obs", "gmp", 0.0, p.rule)
            paired[key] = {**diff.to_dict(), "verdict": rule.verdict(diff)}
    return {
        "tasks": tasks, "seeds": seeds, "targets": list(p.targets) if gradual else [],
        "rule": p.rule,
        "rule_target": p.rule_target,
        "teacher": {t: reports[_run(t, "teacher")]["eval"][METRIC] for t in tasks},
        "majority": {t: stats.majority(labels[t])["accuracy"] for t in tasks},
        "dev_rows": {t: int(len(labels[t])) for t in tasks},
        "oneshot": oneshot, "gradual": gradual, "paired": paired,
        "settings": {"teacher": dict(p.teacher), "oneshot": dict(p.oneshot),
                     "obs": dict(p.obs), "gradual": dict(p.gradual),
                     "tasks": {k: dict(v) for k, v in p.tasks.items()}},
        "oneshot_wall_s": round(sum(t["wall_time_s"] for t in oneshot.values()), 1),
        **cost.cost(reports.values())}


def _pts(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _interval(d: dict) -> str:
    if d["lo"] is None:
        return f"{100 * d['mean']:.1f} (n={d['n']})"
    return f"{100 * d['mean']:.1f} [{100 * d['lo']:.1f}, {100 * d['hi']:.1f}]"


def _signed(d: dict) -> str:
    if d["lo"] is None:
        return f"{100 * d['mean']:+.1f} (n={d['n']})"
    return f"{100 * d['mean']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"


def oneshot_table(summary: dict) -> list:
    """Rows: task x series; columns: the levels (dev accuracy, points)."""
    first = next(iter(summary["oneshot"].values()))
    levels = [str(x) for x in first["settings"]["levels"]]
    head = ["task", "series"] + [f"{round(100 * float(x))} %" for x in levels] + ["wall (s)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task in summary["tasks"]:
        table = summary["oneshot"][task]
        for name, row in table["rows"].items():
            if name == "dense":
                continue
            cells = [_pts(row[x][METRIC]) if x in row else "—" for x in levels]
            out.append(f"| {LABELS.get(task, task)} | {name} | " + " | ".join(cells)
                       + f" | {table['series_wall_s'][name]:.0f} |")
    return out


def gradual_table(summary: dict) -> list:
    head = ["task", "target", "GMP", "OBS", "OBS - GMP (paired)", "rule", "sparsity reached"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task in summary["tasks"]:
        for target in summary["targets"]:
            key = f"{task}@{target}"
            g, d = summary["gradual"][key], summary["paired"][key]
            rule = d["verdict"] if target == summary["rule_target"] else f"({d['verdict']})"
            out.append(f"| {LABELS.get(task, task)} | {round(100 * target)} % | "
                       f"{_interval(g['gmp'])} | {_interval(g['obs'])} | {_signed(d)} | {rule} "
                       f"| {g['gmp']['sparsity']:.3f} / {g['obs']['sparsity']:.3f} |")
    return out


def paper_table(summary: dict) -> list:
    out = ["| oBERT, BERT-base, SQuAD F1 | 70 % | 80 % | 90 % |", "|---|---|---|---|"]
    for k, row in PAPER_ONESHOT.items():
        out.append(f"| one shot, {k} Fisher estimate(s) | " + " | ".join(
            f"{row[s]:.2f}" for s in (0.7, 0.8, 0.9)) + " |")
    out.append(f"| gradual, 30 epochs, with KD | — | {PAPER_GRADUAL[0.8]:.2f} | "
               f"{PAPER_GRADUAL[0.9]:.2f} |")
    return out


def markdown(summary: dict) -> str:
    tasks = summary["tasks"]
    base = "; ".join(f"{LABELS.get(t, t)}: teacher {_pts(summary['teacher'][t])}, majority "
                     f"class {_pts(summary['majority'][t])} ({summary['dev_rows'][t]} dev rows)"
                     for t in tasks)
    g, o, b = (summary["settings"][k] for k in ("gradual", "oneshot", "obs"))
    lines = ["**One shot** (no retraining): dev accuracy (points) of each task's dense teacher "
             "pruned to each level.", ""] + oneshot_table(summary) + [
        "", f"magnitude: |w| per tensor, no update; obs: one Fisher of {o['num_grads']} "
        f"gradients (batch {o['batch_size']}) at the dense weights for every level; obs_rK: a "
        f"Fisher re-estimated every {max(o['levels'])}/K of sparsity on one path from dense "
        f"(level s after s*K/{max(o['levels'])} estimates). Blocks of {b['block_size']}, damp "
        f"{b['damp']:g} (relative). {base}.", ""] + (_gradual_section(summary) if
                                                    summary["gradual"] else []) + [
        "**The paper's figures** (BERT-base, 85M pruned encoder weights, SQuAD v1.1 F1, dense "
        f"{PAPER_DENSE}; Fisher of 1024 gradients of batch 8, blocks of 50, 30 epochs): ", ""
    ] + paper_table(summary) + [
        "", f"Also: {PAPER_OTHERS}. Ours: MiniLM-L6 (10.6M pruned weights), two binary "
        "classification tasks" + (f", {g['steps']} gradual steps" if summary["gradual"] else
                                  "") + ": the scale differs by orders of "
        "magnitude in model, data, Fisher samples and training; compare the shapes (OBS vs "
        "magnitude, the effect of recomputation), not the numbers.", "",
        f"{cost.cost_line(summary)} One-shot sweeps: {summary['oneshot_wall_s'] / 60:.1f} min "
        "(included in neither figure above: they are not training runs)."]
    return "\n".join(lines) + "\n"


def _gradual_section(summary: dict) -> list:
    g, b = summary["settings"]["gradual"], summary["settings"]["obs"]
    return [
        f"**Gradual, downstream**: dev accuracy (points), mean and 95 % t interval over seeds "
        f"{summary['seeds']}, after {g['steps']} steps of batch {g['batch_size']} from the "
        f"teacher with KD ({g['kd_weight']} / {1 - g['kd_weight']:g}, T = "
        f"{g['temperature']:g}); cubic schedule {g['initial']} -> target over steps "
        f"{g['begin_step']}-{g['end_step']}, a prune every {g['update_every']} steps, masks "
        f"frozen after; OBS: Fisher of the {b['num_grads']} steps before each prune.", ""
    ] + gradual_table(summary) + [
        "", f"Rule, stated before the runs: {summary['rule']} (verdict in the rule column at "
        f"{round(100 * summary['rule_target'])} %; in brackets at the other target). "
        f"Sparsity reached: GMP / OBS, over the encoder's Linear kernels.", ""]


def plot(summary: dict, path) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    tasks = summary["tasks"]
    rows = 2 if summary["gradual"] else 1  # one-shot sweeps; the gradual runs if any
    fig, axes = plt.subplots(rows, len(tasks), figsize=(4.8 * len(tasks), 3.5 * rows),
                             squeeze=False)
    for col, task in enumerate(tasks):
        ax, table = axes[0][col], summary["oneshot"][task]
        levels = table["settings"]["levels"]
        for name, row in table["rows"].items():
            if name != "dense":
                xs = [x for x in levels if str(x) in row]
                ax.plot([100 * x for x in xs], [100 * row[str(x)][METRIC] for x in xs],
                        marker="o", label=name)
        _baselines(ax, summary, task)
        ax.set_title(f"one shot, {LABELS.get(task, task)}")
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("dev accuracy (%)")
        ax.legend(fontsize=7)
        if rows == 1:
            continue
        ax = axes[1][col]
        xs = [100 * t for t in summary["targets"]]
        for k, (method, shift) in enumerate((("gmp", -0.6), ("obs", 0.6))):
            ds = [summary["gradual"][f"{task}@{t}"][method] for t in summary["targets"]]
            mean = [100 * d["mean"] for d in ds]
            err = [0 if d["lo"] is None else 100 * (d["hi"] - d["lo"]) / 2 for d in ds]
            ax.errorbar([x + shift for x in xs], mean, yerr=err, marker="o", capsize=4,
                        ls="none", label=method.upper(), color=f"C{k}")
        _baselines(ax, summary, task)
        ax.set_xticks(xs)
        ax.set_title(f"gradual + KD, {LABELS.get(task, task)} (95 % CI)")
        ax.set_xlabel("target sparsity (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _baselines(ax, summary: dict, task: str) -> None:
    ax.axhline(100 * summary["teacher"][task], color="k", ls="--", lw=1, label="dense teacher")
    ax.axhline(100 * summary["majority"][task], color="gray", ls=":", lw=1,
               label="majority class")
