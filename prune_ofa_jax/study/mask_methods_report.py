"""The mask-method study's result (study/masks.py): scores per row, task and sparsity (mean and
half-range over seeds) beside the paper's BERT-base numbers; how the masks overlap (Jaccard of
the kept weights, per encoder layer, between methods and between seeds); how sparsity
spreads over layers and matrix types. JSON, a Markdown table, one plot, the README section.

Masks are read back from each run's final model (model/): a covered weight is kept iff it
is nonzero (the frozen pre-trained MiniLM kernels hold no exact zero; a trained weight
that lands exactly on 0.0 would count as pruned).
"""

from __future__ import annotations

import itertools
import pathlib
import re

import numpy as np

from prune_ofa_jax.convert import params_ckpt
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.study import cost

DENSE_ROWS = ("dense", "feature")  # no sparsity: one run per task and seed


def run_name(task: str, row: str, target, seed: int) -> str:
    return f"{task}_{row}_s{seed}" if row in DENSE_ROWS else (
        f"{task}_{row}_{round(100 * target)}_s{seed}")

METRICS = {"sst2": ("accuracy", "SST-2 acc"), "mrpc": ("f1", "MRPC F1")}
LABELS = {"dense": "full fine-tune (dense)", "feature": "feature extraction (frozen)",
          "magnitude": "magnitude, frozen weights", "gmp": "GMP during fine-tuning",
          "movement_hard": "movement, hard", "movement_soft": "movement, soft",
          "adaprune": "Adapting by Pruning (frozen)", "supermask": "supermask (frozen)"}
# Gao et al. 2021, appendix Table 2 (BERT-base, dev): (STS-B, SST-2, MNLI).
PAPER = {("dense", None): (.855, .926, .843), ("feature", None): (.761, .867, .585),
         ("adaprune", 0.5): (.837, .856, .709), ("adaprune", 0.9): (.624, .836, .679),
         ("magnitude", 0.5): (.706, .819, .648)}
MATRICES = ("attention/query", "attention/key", "attention/value", "attention/output",
            "ffn/intermediate", "ffn/output")
SHORT = {"attention/query": "q", "attention/key": "k", "attention/value": "v",
         "attention/output": "o", "ffn/intermediate": "ffn_in", "ffn/output": "ffn_out"}
_KERNEL = re.compile(r"encoder/layer_(\d+)/(attention/\w+|ffn/\w+)/kernel$")


def headline(report: dict) -> str:
    ev = report["eval"]
    keys = [k for k in ("accuracy", "f1") if k in ev]
    sp = (report.get("sparsity") or {}).get("global")
    return ", ".join(f"{k}={ev[k]:.4f}" for k in keys) + (
        f", sparsity={sp:.3f}" if sp is not None else "")


def _masks(model_dir) -> dict:
    """{(layer, matrix): bool keep mask} of the covered encoder kernels of a final model."""
    params, _, _ = params_ckpt.load_params(pathlib.Path(model_dir))
    out = {}
    for path, w in masks_lib.named_leaves(params):
        if m := _KERNEL.search(path):
            out[(int(m.group(1)), m.group(2))] = np.asarray(w) != 0
    return out


def _jaccard_by_layer(a: dict, b: dict) -> list:
    layers = sorted({k[0] for k in a})
    out = []
    for layer in layers:
        keys = [k for k in a if k[0] == layer]
        inter = sum(int((a[k] & b[k]).sum()) for k in keys)
        union = sum(int((a[k] | b[k]).sum()) for k in keys)
        out.append(inter / union if union else 1.0)
    return out


def _spread(masks: dict) -> dict:
    """Sparsity per layer and per matrix type."""
    layers = sorted({k[0] for k in masks})
    by_layer = [1 - np.mean(np.concatenate([masks[k].ravel() for k in masks if k[0] == i]))
                for i in layers]
    by_type = {SHORT[t]: 1 - np.mean(np.concatenate([masks[k].ravel() for k in masks
                                                     if k[1] == t])) for t in MATRICES}
    return {"layer": [float(x) for x in by_layer], "type": {k: float(v)
                                                            for k, v in by_type.items()}}


def _stat(vals) -> dict:
    vals = np.asarray(vals, float)
    return {"per_seed": vals.tolist(), "mean": float(vals.mean()),
            "spread": float(np.ptp(vals) / 2)}


def summarise(p, runs: dict, reports: dict) -> dict:
    sparse_rows = [r for r in p.rows if r not in DENSE_ROWS]
    scores, spread, jac, stability = {}, {}, {}, {}
    for row in p.rows:
        for target in ((None,) if row in DENSE_ROWS else p.targets):
            key = f"{row}@{target}"
            scores[key] = {}
            for task in p.tasks:
                rs = [reports[run_name(task, row, target, s)] for s in p.seeds]
                metric = METRICS[task][0]
                scores[key][task] = {
                    "score": _stat([100 * r["eval"][metric] for r in rs]),
                    "accuracy": _stat([100 * r["eval"]["accuracy"] for r in rs]),
                    "sparsity": _stat([(r["sparsity"].get("global") or 0.0) for r in rs]),
                    "wall_s": float(sum(r["wall_time_s"] for r in rs))}
    for target in p.targets:
        acc_sp = {r: [] for r in sparse_rows}
        acc_j = {pair: [] for pair in itertools.combinations(sparse_rows, 2)}
        per_seed = {r: {} for r in sparse_rows}
        for task, seed in itertools.product(p.tasks, p.seeds):
            ms = {r: _masks(runs[run_name(task, r, target, seed)][1] / "model")
                  for r in sparse_rows}
            for r in sparse_rows:
                acc_sp[r].append(_spread(ms[r]))
                per_seed[r].setdefault(task, []).append(ms[r])
            for a, b in acc_j:
                acc_j[(a, b)].append(_jaccard_by_layer(ms[a], ms[b]))
        spread[str(target)] = {r: {"layer": np.mean([s["layer"] for s in v], 0).tolist(),
                                   "type": {t: float(np.mean([s["type"][t] for s in v]))
                                            for t in v[0]["type"]}}
                               for r, v in acc_sp.items()}
        jac[str(target)] = {f"{a}|{b}": np.mean(v, 0).tolist() for (a, b), v in acc_j.items()}
        stability[str(target)] = {
            r: float(np.mean([np.mean(_jaccard_by_layer(m[0], m[1]))
                              for m in per_seed[r].values() if len(m) > 1]))
            if len(p.seeds) > 1 else None for r in sparse_rows}
    return {"rows": list(p.rows), "sparse_rows": sparse_rows, "targets": list(p.targets),
            "tasks": list(p.tasks), "seeds": list(p.seeds), "scores": scores,
            "spread": spread, "jaccard": jac, "seed_jaccard": stability,
            "settings": {"steps": p.steps, "batch_size": p.batch_size, "lr": p.lr,
                         "head_lr": p.head_lr, "movement": dict(p.movement),
                         "soft_l1": list(p.soft_l1),
                         "adaprune": dict(p.adaprune), "supermask": dict(p.supermask),
                         "tasks": {k: dict(v) for k, v in p.tasks.items()}}}


def random_jaccard(target: float) -> float:
    """Expected Jaccard of the kept sets of two independent random masks at `target`."""
    keep = 1.0 - target
    return keep * keep / (2 * keep - keep * keep)


def _cell(m: dict, digits: int = 1) -> str:
    return f"{m['mean']:.{digits}f} ± {m['spread']:.{digits}f}"


def _paper(row: str, target) -> str:
    v = PAPER.get((row, target))
    return "" if v is None else f"{100 * v[1]:.1f}"


def markdown(summary: dict) -> str:
    tasks, targets = summary["tasks"], summary["targets"]
    head = ["row"] + [f"{METRICS[t][1]} @{round(100 * s)}%" for t in tasks for s in targets]
    head += [f"sparsity reached @{round(100 * s)}%" for s in targets]
    head += ["paper SST-2 (BERT-base)", "wall (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary["rows"]:
        dense = f"{row}@None" in summary["scores"]
        keys = [f"{row}@None"] * len(targets) if dense else [f"{row}@{s}" for s in targets]
        cells = [LABELS[row]]
        for t in tasks:
            cells += [_cell(summary["scores"][k][t]["score"]) for k in keys]
        cells += ["—" if dense else " / ".join(
            f"{summary['scores'][k][t]['sparsity']['mean']:.3f}" for t in tasks) for k in keys]
        paper = [_paper(row, None if dense else s) for s in targets]
        cells.append(paper[0] if dense else (" / ".join(x or "—" for x in paper)
                                             if any(paper) else "—"))
        wall = sum(summary["scores"][k][t]["wall_s"] for k in set(keys) for t in tasks)
        cells.append(f"{wall:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    n = len(summary["seeds"])
    lines += ["", f"Mean ± half the range over {n} seed(s) {summary['seeds']}; scores in points "
              "(MRPC: F1 of the positive class). Sparsity reached: fraction of the covered "
              f"encoder weights pruned at the end, per task ({' / '.join(tasks)}). Paper: Gao "
              "et al. 2021, appendix Table 2, BERT-base dev (@50 % / @90 %). Wall: every run "
              f"of the row. {cost.cost_line(summary)}", "",
              "The paper's BERT-base dev numbers (STS-B Spearman / SST-2 acc / MNLI acc): "
              + "; ".join(f"{LABELS[r]}{'' if t is None else f' @{round(100 * t)}%'}: "
                          + " / ".join(f"{v:.3f}" for v in vals)
                          for (r, t), vals in PAPER.items()) + ".", ""]
    lines += _jaccard_table(summary) + [""] + _spread_table(summary)
    return "\n".join(lines) + "\n"


def _jaccard_table(summary: dict) -> list:
    rows = summary["sparse_rows"]
    out = []
    for target in summary["targets"]:
        jac = summary["jaccard"][str(target)]
        out += [f"Mask overlap at {round(100 * target)} %: Jaccard of the kept weights, mean "
                f"over the 6 layers, tasks and seeds (random masks: "
                f"{random_jaccard(target):.3f}); diagonal: seed 0 vs seed 1 of the same "
                "method and task.", "",
                "| | " + " | ".join(rows) + " |", "|" + "---|" * (len(rows) + 1)]
        for a in rows:
            cells = []
            for b in rows:
                if a == b:
                    v = summary["seed_jaccard"][str(target)][a]
                    cells.append("—" if v is None else f"({v:.2f})")
                else:
                    v = jac.get(f"{a}|{b}") or jac.get(f"{b}|{a}")
                    cells.append(f"{np.mean(v):.2f}")
            out.append(f"| {a} | " + " | ".join(cells) + " |")
        out.append("")
    return out


def _spread_table(summary: dict) -> list:
    out = []
    for target in summary["targets"]:
        sp = summary["spread"][str(target)]
        rows = summary["sparse_rows"]
        n_layers = len(sp[rows[0]]["layer"])
        types = list(sp[rows[0]]["type"])
        head = ["row"] + [f"L{i}" for i in range(n_layers)] + types
        out += [f"Where the pruning falls at {round(100 * target)} % (sparsity per encoder "
                "layer and per matrix type, mean over tasks and seeds):", "",
                "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            out.append(f"| {r} | " + " | ".join(f"{v:.2f}" for v in sp[r]["layer"]) + " | "
                       + " | ".join(f"{sp[r]['type'][t]:.2f}" for t in types) + " |")
        out.append("")
    return out


def plot(summary: dict, path: pathlib.Path) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    tasks, targets, rows = summary["tasks"], summary["targets"], summary["sparse_rows"]
    fig, axes = plt.subplots(1, len(tasks) + 2, figsize=(4.2 * (len(tasks) + 2), 3.6))
    x = [100 * s for s in targets]
    for ax, task in zip(axes, tasks):
        for r in rows:
            ms = [summary["scores"][f"{r}@{s}"][task]["score"] for s in targets]
            ax.errorbar(x, [m["mean"] for m in ms], yerr=[m["spread"] for m in ms],
                        marker="o", capsize=3, label=LABELS[r])
        for r, ls in (("dense", "--"), ("feature", ":")):
            if f"{r}@None" in summary["scores"]:
                ax.axhline(summary["scores"][f"{r}@None"][task]["score"]["mean"], color="k",
                           ls=ls, lw=1, label=LABELS[r])
        ax.set_title(f"MiniLM-L6, {METRICS[task][1]}")
        ax.set_xlabel("target sparsity (%)")
        ax.set_xticks(x)
    axes[0].legend(fontsize=6, loc="lower left")
    t_hi = str(targets[-1])
    ax = axes[len(tasks)]
    for r in rows:
        ax.plot(summary["spread"][t_hi][r]["layer"], marker="o", label=r)
    ax.set_title(f"sparsity per layer @{round(100 * targets[-1])}%")
    ax.set_xlabel("encoder layer")
    ax = axes[len(tasks) + 1]
    jac = summary["jaccard"][t_hi]
    seeds = summary["seed_jaccard"][t_hi]
    mat = np.array([[(seeds[a] if seeds[a] is not None else np.nan) if a == b
                     else np.mean(jac.get(f"{a}|{b}") or jac[f"{b}|{a}"])
                     for b in rows] for a in rows])
    im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(rows)), rows, rotation=60, fontsize=6)
    ax.set_yticks(range(len(rows)), rows, fontsize=6)
    ax.set_title(f"kept-set Jaccard @{round(100 * targets[-1])}% (diag: seeds)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
