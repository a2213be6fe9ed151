"""The AutoTinyBERT result: per speedup, the found arch with its measured latency and dev
scores beside uniform shrinking (the teacher's first k layers) at the same budget and Prune
OFA sparsity (no speedup in a dense runtime); as JSON, a Markdown table and a plot."""

from __future__ import annotations

import pathlib

from prune_ofa_jax.nas import space as space_lib

# Their published reference (README of huawei-noah AutoTinyBERT; speedup vs BERT-base on CPU).
PAPER = [{"model": "AutoTinyBERT-KD-S1", "speedup": 4.6, "squad_f1": 87.6, "glue": 81.2},
         {"model": "AutoTinyBERT-KD-S2", "speedup": 9.0, "squad_f1": 84.6, "glue": 77.5},
         {"model": "AutoTinyBERT-KD-S4", "speedup": 17.0, "squad_f1": 78.7, "glue": 73.5}]
TASK_KEYS = {"sst2": ("accuracy",), "mrpc": ("f1", "accuracy")}


def _scores(ev: dict, task: str) -> dict:
    return {k: ev[k] for k in TASK_KEYS.get(task, ("score",)) if k in ev}


def _row(arch, table, teacher_ms, evals, tasks) -> dict:
    ms = table.get(arch)
    return {"arch": arch.to_dict(), "measured_ms": ms,
            "measured_speedup": ({b: teacher_ms[b] / v for b, v in ms.items()} if ms else None),
            "finetuned": {t: _scores(evals[t], t) for t in tasks} if evals else None}


def summarise(c, space, table, lat_rep, found, extracted, tuned, supernet_report) -> dict:
    top = space.top()
    teacher_ms = table[top]
    tasks = tuple(c.nas.finetune.tasks)
    b = str(c.nas.latency.search_batch)
    uniform = {}
    for k in c.nas.finetune.uniform_layers:
        arch = space_lib.Arch(k, top.hidden, top.ffn, top.qkv)
        uniform[f"L{k}"] = _row(arch, table, teacher_ms, tuned.get(f"uniform_L{k}"), tasks)
    out_found = {}
    for key, f in found.items():
        arch = space_lib.Arch.from_dict(f["arch"])
        row = _row(arch, table, teacher_ms, tuned.get(f"searched_{key}"), tasks)
        budget_hi = f["window_ms"][1]
        fits = [u for u, r in uniform.items() if r["measured_ms"][b] <= budget_hi]
        row.update(speedup=f["speedup"], predicted_ms=f["predicted_ms"],
                   window_ms=f["window_ms"], search_fitness=f["fitness"],
                   evaluated=f["evaluated"], generations=f["generations"],
                   candidates=f["candidates"], hf_dir=extracted.get(f"searched_{key}"),
                   uniform_same_budget=(max(fits, key=lambda u: uniform[u]["arch"]["layers"])
                                        if fits else None))
        out_found[key] = row
    sparse = lat_rep.get("prune_ofa_sparse_ms")
    return {
        "teacher": {"arch": top.to_dict(), "ms": teacher_ms, "path": c.teacher.path},
        "search_batch": int(b), "tasks": list(tasks),
        "found": out_found, "uniform": uniform,
        "prune_ofa": ({"sparsity": sparse["sparsity"],
                       "measured_ms": {k: v for k, v in sparse.items() if k != "sparsity"},
                       "note": "zeros in dense kernels: the same time as the dense teacher; "
                               "no budget below 1x is reachable by sparsity in this runtime"}
                      if sparse else None),
        "extracted": extracted,
        "latency": {k: lat_rep[k] for k in ("runtime", "threads", "seq_len", "n_archs",
                                            "n_train", "n_heldout",
                                            "heldout_mean_relative_error",
                                            "train_mean_relative_error")},
        "supernet": {"steps": supernet_report["steps"], "eval": supernet_report["eval"],
                     "wall_time_s": supernet_report["wall_time_s"]},
        "paper_reference": PAPER}


def _fmt_scores(ft, tasks) -> list:
    cells = []
    for t in tasks:
        s = (ft or {}).get(t)
        cells.append("/".join(f"{100 * v:.1f}" for v in s.values()) if s else "-")
    return cells


def _arch_str(a: dict) -> str:
    return f"{a['layers']}/{a['hidden']}/{a['ffn']}/{a['qkv']}"


def markdown(s: dict) -> str:
    tasks = s["tasks"]
    bs = list(s["teacher"]["ms"])
    head = (["budget", "model", "L/H/FFN/qkv"]
            + [f"ms b{b} (x)" for b in bs] + [{"sst2": "SST-2 acc", "mrpc": "MRPC F1/acc"}
                                              .get(t, t) for t in tasks])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def line(budget, name, row):
        ms = row["measured_ms"] or {}
        sp = row["measured_speedup"] or {}
        cells = [f"{ms[b]:.1f} ({sp[b]:.1f}x)" if b in ms else "-" for b in bs]
        lines.append("| " + " | ".join([budget, name, _arch_str(row["arch"])] + cells
                                       + _fmt_scores(row["finetuned"], tasks)) + " |")

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
        cells = [f"{p['measured_ms'][b]:.1f} ({s['teacher']['ms'][b] / p['measured_ms'][b]:.1f}x)"
                 for b in bs]
        lines.append(f"| any | Prune OFA {100 * p['sparsity']:.0f} % sparse teacher | "
                     f"{_arch_str(s['teacher']['arch'])} | " + " | ".join(cells) + " | "
                     + " | ".join(["(see Prune OFA sections)"] * len(tasks)) + " |")
    return "\n".join(lines) + "\n"


def plot(s: dict, path) -> None:
    """Dev score vs measured latency (the search batch), searched vs uniform, per task."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    b = str(s["search_batch"])
    tasks = s["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        key = TASK_KEYS.get(t, ("score",))[0]
        pts = sorted((r["measured_ms"][b], r["finetuned"][t][key], u)
                     for u, r in s["uniform"].items() if r["finetuned"])
        if pts:
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "o-", color="tab:gray",
                    label="uniform (first k layers)")
            for x, y, u in pts:
                ax.annotate(u, (x, 100 * y), textcoords="offset points", xytext=(4, -10),
                            fontsize=7, color="tab:gray")
        for k, f in s["found"].items():
            if f["finetuned"] and f["measured_ms"]:
                x, y = f["measured_ms"][b], 100 * f["finetuned"][t][key]
                ax.plot([x], [y], "*", ms=12, color="tab:red")
                ax.annotate(f"searched {k}", (x, y), textcoords="offset points",
                            xytext=(4, 4), fontsize=7, color="tab:red")
        ax.axvline(s["teacher"]["ms"][b], ls=":", color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(f"measured latency, batch {b}, HF PyTorch CPU (ms, log)")
        ax.set_ylabel(f"{t} dev {key} (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(pathlib.Path(path), dpi=80)
    plt.close(fig)


