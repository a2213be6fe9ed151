"""The structured study's result (study/structured_study.py): per task, every row's score
(mean and 95 % t interval over seeds), its paired difference to dense with the stated rule's
verdict, the encoder size it keeps and its measured onnxruntime latency and speedup at batch
1 and 32; the goals' verdicts, the knee of the structured curve, the best row under a range
of latency budgets; majority and random baselines; the cost. JSON, Markdown, one plot."""

from __future__ import annotations

import numpy as np

from prune_ofa_jax.study import cost, stats, structured_models

LABELS = {"sst2": "SST-2", "tweets": "disaster tweets"}
METRIC = {"sst2": "accuracy", "tweets": "f1"}
SEEDED = ("dense", "unstructured", "structured")   # rows with an interval over seeds
BUDGETS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)          # latency budgets: dense / x
FAMILY_NAMES = {"dense": "dense", "unstructured": "GMP", "structured": "structured",
                "layer_drop": "layer drop", "autotinybert": "AutoTinyBERT"}


def rows(p) -> dict:
    """{row key: {"family", "level", "int8", "label"}} in the table's order."""
    out = {"dense": dict(family="dense", level=None, int8=False, label="dense")}
    for fam, tag, name in (("unstructured", "gmp", "GMP"), ("structured", "st", "structured")):
        block = p[fam]
        for level in block.levels:
            pct = round(100 * level)
            out[f"{tag}{pct}"] = dict(family=fam, level=level, int8=False,
                                      label=f"{name} {pct} %")
            if level in tuple(block.int8):
                out[f"{tag}{pct}_int8"] = dict(family=fam, level=level, int8=True,
                                               label=f"{name} {pct} % + int8")
    for k in p.layer_drop:
        out[f"drop{k}"] = dict(family="layer_drop", level=k, int8=False,
                               label=f"layer drop: first {k}")
    for arch in p.autotinybert:
        out["atb_" + arch.replace("/", "-")] = dict(family="autotinybert", level=arch,
                                                    int8=False, label=f"AutoTinyBERT {arch}")
    return out


def _task_rows(p, task, reports, runs, lat) -> dict:
    metric = METRIC[task]
    speed = structured_models.per_variant(lat)
    score = {}  # key -> {seed: value}
    for name, (_, _, t, key, seed) in runs.items():
        if t == task:
            score.setdefault(key, {})[seed] = reports[name]["eval"][metric]
    dense = score["dense"]
    out = {}
    for key, row in rows(p).items():
        per = score[key]
        seeds = sorted(per)
        r = {**row, "seeds": seeds, "per_seed": [per[s] for s in seeds],
             "score": stats.t_interval([per[s] for s in seeds]).to_dict()}
        if all(s in dense for s in seeds):
            diff = stats.paired([per[s] for s in seeds], [dense[s] for s in seeds])
            r["vs_dense"] = {**diff.to_dict(),
                             "verdict": stats.Rule(key, "dense", p.goals.margin).verdict(diff)}
        sizes = [lat["sizes"][f"{task}_{key}_s{s}"] for s in seeds]
        r["encoder_params"] = float(np.mean([z["compact"] for z in sizes]))
        r["encoder_params_dense"] = sizes[0]["dense"]
        r["layers"] = sizes[0]["layers"]
        sp = [reports[f"{task}_{key}_s{s}"].get("sparsity") or {} for s in seeds]
        r["removed"] = (float(np.mean([x.get("global", 0.0) for x in sp]))
                        if row["family"] in ("unstructured", "structured") else None)
        timed = [speed[f"{key}_s{s}"] for s in seeds if f"{key}_s{s}" in speed]
        r["latency"] = {b: {"ms": float(np.mean([t[b]["ms"] for t in timed])),
                            "speedup": float(np.mean([t[b]["speedup"] for t in timed])),
                            "timed_seeds": len(timed)} for b in timed[0]}
        out[key] = r
    return out


def _goal(p, trs: dict, int8: bool) -> dict:
    g = p.goals
    need = g.int8_speedup if int8 else g.fp32_speedup
    cands = [(k, r) for k, r in trs.items() if r["family"] == "structured"
             and r["int8"] == int8 and r["latency"][str(g.batch)]["speedup"] >= need]
    held = [k for k, r in cands if r.get("vs_dense", {}).get("verdict") == "holds"]
    fastest = max(cands, key=lambda kr: kr[1]["latency"][str(g.batch)]["speedup"],
                  default=(None, None))[0]
    return {"need_speedup": need, "candidates": [k for k, _ in cands], "holds": held,
            "fastest": fastest, "met": bool(held)}


def _knee(p, trs: dict) -> dict:
    """The fastest structured (fp32) level whose mean paired loss to dense is within the
    margin, and the next faster level."""
    b = str(p.goals.batch)
    levels = sorted((r["latency"][b]["speedup"], k) for k, r in trs.items()
                    if r["family"] == "structured" and not r["int8"] and "vs_dense" in r)
    within = [k for _, k in levels if trs[k]["vs_dense"]["mean"] >= -p.goals.margin]
    last = within[-1] if within else None
    after = [k for _, k in levels if last is None or
             trs[k]["latency"][b]["speedup"] > trs[last]["latency"][b]["speedup"]]
    return {"last_within": last, "next": after[0] if after else None}


def _budgets(trs: dict) -> dict:
    """Per batch size: for each budget (dense latency / x), the best-scoring row that fits."""
    out = {}
    for b in trs["dense"]["latency"]:
        dense_ms = trs["dense"]["latency"][b]["ms"]
        out[b] = []
        for x in BUDGETS:
            fit = [(r["score"]["mean"], -r["latency"][b]["ms"], k) for k, r in trs.items()
                   if r["latency"][b]["ms"] <= dense_ms / x * 1.0001]
            best = max(fit)[2] if fit else None  # a tie in score: the faster row
            out[b].append({"x": x, "budget_ms": dense_ms / x, "best": best,
                           "score": trs[best]["score"]["mean"] if best else None})
    return out


def summarise(p, reports: dict, runs: dict, latency: dict, labels: dict) -> dict:
    tasks = {}
    for task in p.tasks:
        trs = _task_rows(p, task, reports, runs, latency[task])
        metric = METRIC[task]
        tasks[task] = {
            "metric": metric, "rows": trs, "dev_rows": len(labels[task]),
            "majority": stats.majority(labels[task])[metric],
            "random": stats.uniform_random(labels[task])[metric],
            "teacher": reports[f"{task}_teacher"]["eval"][metric],
            "knee": _knee(p, trs), "budgets": _budgets(trs)}
    goal_task = tasks.get(p.goals.task) or next(iter(tasks.values()))
    return {"tasks": tasks, "seeds": list(p.seeds), "rule": p.goals.text,
            "goals": {"fp32": _goal(p, goal_task["rows"], False),
                      "int8": _goal(p, goal_task["rows"], True), "task": p.goals.task,
                      "margin": p.goals.margin, "batch": p.goals.batch},
            "settings": {"teacher": dict(p.teacher), "budget": dict(p.budget),
                         "unstructured": dict(p.unstructured),
                         "structured": dict(p.structured), "latency": dict(p.latency),
                         "tasks": {k: dict(v) for k, v in p.tasks.items()}},
            **cost.cost(reports.values())}


# --- Markdown ----------------------------------------------------------------------------
def _pts(d: dict, signed: bool = False) -> str:
    f = "{:+.1f}" if signed else "{:.1f}"
    m = f.format(100 * d["mean"])
    if d["lo"] is None:
        return f"{m} (n={d['n']})"
    return f"{m} [{f.format(100 * d['lo'])}, {f.format(100 * d['hi'])}]"


def _lat(r: dict, b: str) -> str:
    x = r["latency"].get(b)
    return "—" if x is None else f"{x['ms']:.1f} ({x['speedup']:.2f}x)"


def task_table(p_task: dict, task: str) -> list:
    bs = list(p_task["rows"]["dense"]["latency"])
    lines = [f"**{LABELS.get(task, task)}** ({p_task['metric']}, {p_task['dev_rows']} dev rows; "
             f"majority class {100 * p_task['majority']:.1f}, random "
             f"{100 * p_task['random']:.1f}; teacher {100 * p_task['teacher']:.1f})", "",
             "| row | seeds | score [95 % CI] | vs dense [95 % CI] | verdict | removed | "
             "encoder params | " + " | ".join(f"ms b{b} (x)" for b in bs) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(bs)]
    for r in p_task["rows"].values():
        vs = r.get("vs_dense") if r["family"] != "dense" else None
        removed = "—" if r["removed"] is None else f"{100 * r['removed']:.0f} %"
        lines.append(
            f"| {r['label']} | {len(r['seeds'])} | {_pts(r['score'])} | "
            f"{_pts(vs, True) if vs else '—'} | {vs['verdict'] if vs else '—'} | {removed} | "
            f"{r['encoder_params'] / 1e6:.2f} M | "
            + " | ".join(_lat(r, b) for b in bs) + " |")
    return lines


def markdown(summary: dict) -> str:
    out = []
    for task, t in summary["tasks"].items():
        out += task_table(t, task) + [""]
        knee = t["knee"]
        if knee["last_within"]:
            out.append(f"Knee ({LABELS.get(task, task)}): the structured curve stays within "
                       f"{100 * summary['goals']['margin']:.1f} points of dense up to "
                       f"{t['rows'][knee['last_within']]['label']}"
                       + (f"; {t['rows'][knee['next']]['label']} is past it." if knee["next"]
                          else "."))
        out.append("")
        out.append("| latency budget (batch) | " + " | ".join(
            f"dense / {x['x']:g}" for x in next(iter(t["budgets"].values()))) + " |")
        out.append("|---|" + "---|" * len(BUDGETS))
        for b, per in t["budgets"].items():
            out.append(f"| best row, batch {b} | " + " | ".join(
                "—" if x["best"] is None else
                f"{t['rows'][x['best']]['label']} ({100 * x['score']:.1f})" for x in per) + " |")
        out.append("")
    g = summary["goals"]
    for kind in ("fp32", "int8"):
        x = g[kind]
        out.append(f"- Goal ({kind}): a structured model at >= {x['need_speedup']:g}x dense "
                   f"fp32 speed (batch {g['batch']}) within {100 * g['margin']:.1f} points on "
                   f"{g['task']}: **{'met' if x['met'] else 'not met'}** (levels at that "
                   f"speed: {', '.join(x['candidates']) or 'none'}; holding: "
                   f"{', '.join(x['holds']) or 'none'}).")
    out.append(f"- Rule: {summary['rule']}")
    out.append(f"- {cost.cost_line(summary)}")
    return "\n".join(out) + "\n"


# --- the plot -----------------------------------------------------------------------------
STYLE = {"dense": ("k", "*"), "unstructured": ("tab:blue", "o"),
         "structured": ("tab:red", "s"), "layer_drop": ("tab:green", "^"),
         "autotinybert": ("tab:purple", "D")}


def plot(summary: dict, out) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    from matplotlib import ticker  # pylint: disable=import-outside-toplevel
    tasks = list(summary["tasks"])
    bs = list(summary["tasks"][tasks[0]]["rows"]["dense"]["latency"])
    fig, axes = plt.subplots(len(tasks), len(bs), figsize=(5.5 * len(bs), 4.2 * len(tasks)),
                             squeeze=False)
    for i, task in enumerate(tasks):
        t = summary["tasks"][task]
        for j, b in enumerate(bs):
            ax = axes[i][j]
            seen = set()
            for fam in STYLE:
                for int8 in (False, True):
                    rs = [r for r in t["rows"].values() if r["family"] == fam
                          and r["int8"] == int8]
                    if not rs:
                        continue
                    rs.sort(key=lambda r: r["latency"][b]["ms"])
                    x = [r["latency"][b]["ms"] for r in rs]
                    y = [100 * r["score"]["mean"] for r in rs]
                    err = [[0 if r["score"]["lo"] is None else 100 * (r["score"]["mean"]
                                                                       - r["score"]["lo"])
                            for r in rs]] * 2
                    color, marker = STYLE[fam]
                    label = FAMILY_NAMES[fam] + (" + int8" if int8 else "")
                    ax.errorbar(x, y, yerr=err, color=color, marker=marker,
                                mfc="none" if int8 else color, ls="--" if int8 else "-",
                                capsize=3, label=label if label not in seen else None)
                    seen.add(label)
            ax.axhline(100 * t["majority"], color="grey", ls=":", label="majority class")
            ax.axhline(100 * t["random"], color="grey", ls="-.", lw=0.8, label="random")
            lo, hi = ax.get_ylim()  # scores are percentages: wider intervals are cut
            ax.set_ylim(max(lo, -2.0), min(hi, 102.0))
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())  # no overlapping labels
            ax.set_xlabel(f"onnxruntime latency, batch {b}, ms (log)")
            ax.set_ylabel(f"{LABELS.get(task, task)} {t['metric']} (%)")
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
