"""The AutoTinyBERT result: per speedup, the found arch with its measured latency and dev
scores (mean and 95 % t interval over the fine-tune seeds) beside uniform shrinking (the
supernet's first k layers at full width) at the same budget, the paired difference between
them, the majority-class and random baselines, and Prune OFA sparsity (no speedup in a dense
runtime); as JSON, a Markdown table and a plot."""

from __future__ import annotations

import pathlib

from prune_ofa_jax.nas import space as space_lib
from prune_ofa_jax.study import stats

# Their published reference (README of huawei-noah AutoTinyBERT; speedup vs BERT-base on CPU).
PAPER = [{"model": "AutoTinyBERT-KD-S1", "speedup": 4.6, "squad_f1": 87.6, "glue": 81.2},
         {"model": "AutoTinyBERT-KD-S2", "speedup": 9.0, "squad_f1": 84.6, "glue": 77.5},
         {"model": "AutoTinyBERT-KD-S4", "speedup": 17.0, "squad_f1": 78.7, "glue": 73.5}]
TASK_KEYS = {"sst2": ("accuracy",), "mrpc": ("f1", "accuracy")}
TASK_LABEL = {"sst2": "SST-2 acc", "mrpc": "MRPC F1/acc"}


def _keys(task: str) -> tuple:
    return TASK_KEYS.get(task, ("score",))


def _scores(evals: list, task: str) -> dict:
    """{metric: {"per_seed": [...], **t interval}} over the seeds' evals."""
    out = {}
    for k in _keys(task):
        vals = [e[k] for e in evals if k in e]
        if vals:
            out[k] = {"per_seed": vals, **stats.t_interval(vals).to_dict()}
    return out


def _row(arch, table, teacher_ms, group_teacher, evals, tasks) -> dict:
    ms = table.get(arch)
    ref = group_teacher.get(arch, teacher_ms)  # the teacher timed beside this arch
    return {"arch": arch.to_dict(), "measured_ms": ms,
            "measured_speedup": ({b: ref[b] / v for b, v in ms.items()} if ms else None),
            "finetuned": {t: _scores(evals[t], t) for t in tasks} if evals else None}


def _paired(a: dict, b: dict, tasks) -> dict:
    """a - b per task and metric, paired by seed (the same seeds, in order)."""
    out = {}
    for t in tasks:
        for k in _keys(t):
            if a and b and k in a.get(t, {}) and k in b.get(t, {}):
                out[f"{t}/{k}"] = stats.paired(a[t][k]["per_seed"],
                                               b[t][k]["per_seed"]).to_dict()
    return out


def summarise(c, space, table, lat_rep, found, extracted, tuned, supernet_report,
              extra=None) -> dict:
    extra = extra or {}
    group_teacher = extra.get("group_teacher_ms", {})
    top = space.top()
    teacher_ms = table[top]
    tasks = tuple(c.nas.finetune.tasks)
    b = str(c.nas.latency.search_batch)
    uniform = {}
    for k in c.nas.finetune.uniform_layers:
        arch = space_lib.Arch(k, top.hidden, top.ffn, top.qkv)
        uniform[f"L{k}"] = _row(arch, table, teacher_ms, group_teacher,
                                tuned.get(f"uniform_L{k}"), tasks)
    out_found = {}
    for key, f in found.items():
        arch = space_lib.Arch.from_dict(f["arch"])
        row = _row(arch, table, teacher_ms, group_teacher, tuned.get(f"searched_{key}"), tasks)
        budget_hi = f["window_ms"][1]
        fits = [u for u, r in uniform.items() if r["measured_ms"][b] <= budget_hi]
        same = max(fits, key=lambda u: uniform[u]["arch"]["layers"]) if fits else None
        row.update(speedup=f["speedup"], predicted_ms=f["predicted_ms"],
                   window_ms=f["window_ms"], search_fitness=f["fitness"],
                   evaluated=f["evaluated"], generations=f["generations"],
                   candidates=f["candidates"], hf_dir=extracted.get(f"searched_{key}"),
                   uniform_same_budget=same,
                   vs_uniform=(_paired(row["finetuned"], uniform[same]["finetuned"], tasks)
                               if same else {}))
        out_found[key] = row
    sparse = lat_rep.get("prune_ofa_sparse_ms")
    return {
        "teacher": {"arch": top.to_dict(), "ms": teacher_ms, "path": c.teacher.path},
        "search_batch": int(b), "tasks": list(tasks), "seeds": list(c.nas.finetune.seeds),
        "found": out_found, "uniform": uniform, "baselines": extra.get("baselines", {}),
        "prune_ofa": sparse,
        "extracted": extracted,
        "fitness": {"tasks": list(c.nas.fitness.tasks), "steps": c.nas.fitness.steps,
                    "scored_on": (f"{c.nas.fitness.heldout_rows} train rows held out"
                                  if c.nas.fitness.heldout_rows else "the dev set")},
        "latency": {k: lat_rep.get(k) for k in (
            "runtime", "threads", "seq_len", "n_archs", "n_train", "n_heldout", "warmup",
            "repeats", "teacher_ms_groups", "heldout_mean_relative_error",
            "train_mean_relative_error")},
        "supernet": {"steps": supernet_report["steps"], "eval": supernet_report["eval"],
                     "wall_time_s": supernet_report["wall_time_s"]},
        "paper_reference": PAPER}


def _cell(ft, t) -> str:
    s = (ft or {}).get(t)
    if not s:
        return "-"
    return "/".join(stats.Interval(v["mean"], v["lo"], v["hi"], v["n"]).fmt()
                    for v in s.values())


def _arch_str(a: dict) -> str:
    return f"{a['layers']}/{a['hidden']}/{a['ffn']}/{a['qkv']}"


def markdown(s: dict) -> str:
    tasks = s["tasks"]
    bs = list(s["teacher"]["ms"])
    head = (["budget", "model", "L/H/FFN/qkv"] + [f"ms b{b} (x)" for b in bs]
            + [f"{TASK_LABEL.get(t, t)} [95 % CI]" for t in tasks])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in tasks:
        base = s.get("baselines", {}).get(t)
        if base:
            cells = ["-"] * (len(tasks))
            k = _keys(t)[0]
            cells[tasks.index(t)] = (f"{100 * base['majority'][k]:.1f} / "
                                     f"{100 * base['random'][k]:.1f}")
            lines.append("| - | majority class / random | - | "
                         + " | ".join(["-"] * len(bs) + cells) + " |")

    def line(budget, name, row):
        ms = row["measured_ms"] or {}
        sp = row["measured_speedup"] or {}
        cells = [f"{ms[b]:.1f} ({sp[b]:.1f}x)" if b in ms else "-" for b in bs]
        lines.append("| " + " | ".join([budget, name, _arch_str(row["arch"])] + cells
                                       + [_cell(row["finetuned"], t) for t in tasks]) + " |")

    for key, f in s["found"].items():
        line(key, "searched", f)
        u = f["uniform_same_budget"]
        if u:
            line(key, f"uniform ({u})", s["uniform"][u])
        else:
            lines.append(f"| {key} | uniform | no k fits | "
                         + " | ".join(["-"] * (len(bs) + len(tasks))) + " |")
    for u, row in s["uniform"].items():
        line("-", f"uniform {u}", row)
    p = s.get("prune_ofa")
    if p:
        cells = [f"{p['measured_ms'][b]:.1f} ({p['dense_ms'][b] / p['measured_ms'][b]:.2f}x)"
                 for b in bs]
        lines.append(f"| any | Prune OFA {100 * p['sparsity']:.0f} % sparse teacher | "
                     f"{_arch_str(s['teacher']['arch'])} | " + " | ".join(cells) + " | "
                     + " | ".join(["(see Prune OFA sections)"] * len(tasks)) + " |")
    n = len(s.get("seeds", []))
    lines += ["", f"Scores: dev set, mean [95 % t interval] over {n} fine-tune seeds "
              f"{s.get('seeds')}; every model cut from the same supernet; the search's fitness "
              f"scored on {s.get('fitness', {}).get('scored_on', 'the dev set')}. Speed-ups: "
              "against the teacher timed beside each model (runtime/latency.py)."]
    diffs = []
    for key, f in s["found"].items():
        for metric, d in (f.get("vs_uniform") or {}).items():
            iv = stats.Interval(d["mean"], d["lo"], d["hi"], d["n"])
            diffs.append(f"- {key}: searched - uniform ({f['uniform_same_budget']}), {metric}, "
                         f"paired by seed: {iv.fmt()} points")
    if diffs:
        lines += [""] + diffs
    return "\n".join(lines) + "\n"


def plot(s: dict, path) -> None:
    """Dev score (mean, 95 % interval) vs measured latency (the search batch), searched vs
    uniform, per task, with the majority class."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    b = str(s["search_batch"])
    tasks = s["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)

    def err(v):
        return [[0.0], [0.0]] if v["lo"] is None else [[100 * (v["mean"] - v["lo"])],
                                                       [100 * (v["hi"] - v["mean"])]]
    for ax, t in zip(axes[0], tasks):
        key = _keys(t)[0]
        pts = sorted((r["measured_ms"][b], r["finetuned"][t][key], u)
                     for u, r in s["uniform"].items() if r["finetuned"])
        if pts:
            ax.plot([p[0] for p in pts], [100 * p[1]["mean"] for p in pts], "-",
                    color="tab:gray")
            for x, v, u in pts:
                ax.errorbar([x], [100 * v["mean"]], yerr=err(v), fmt="o", color="tab:gray",
                            capsize=3, label="uniform (first k layers)" if u == pts[0][2]
                            else None)
                ax.annotate(u, (x, 100 * v["mean"]), textcoords="offset points",
                            xytext=(4, -10), fontsize=7, color="tab:gray")
        for k, f in s["found"].items():
            if f["finetuned"] and f["measured_ms"]:
                x, v = f["measured_ms"][b], f["finetuned"][t][key]
                ax.errorbar([x], [100 * v["mean"]], yerr=err(v), fmt="*", ms=12,
                            color="tab:red", capsize=3)
                ax.annotate(f"searched {k}", (x, 100 * v["mean"]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7, color="tab:red")
        base = s.get("baselines", {}).get(t)
        if base:
            ax.axhline(100 * base["majority"][key], color="k", ls="--", lw=0.8,
                       label="majority class")
        ax.axvline(s["teacher"]["ms"][b], ls=":", color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(f"measured latency, batch {b}, HF PyTorch CPU (ms, log)")
        ax.set_ylabel(f"{t} dev {key} (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(pathlib.Path(path), dpi=80)
    plt.close(fig)
