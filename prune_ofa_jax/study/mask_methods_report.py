"""The learned-masks study's result (study/mask_methods.py): per row the dev accuracy of both
phases (the method's own run, then a fresh head on its final mask) as a mean with its 95 %
t interval over seeds, the paired differences the study states up front with their verdicts,
the majority-class and random-mask baselines; how the masks overlap (Jaccard of the kept
weights, whole encoder and per layer, between seeds of one method and between methods at one
seed, against two independent random masks); where the pruning falls. JSON, a Markdown
section and one plot.

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
from prune_ofa_jax.study import cost, stats

FIXED = ("feature", "random", "magnitude")          # a head on a mask fixed from step 0
LEARNED = ("adaprune", "supermask", "movement")     # learn a mask, then a fresh head on it
ROWS = FIXED + LEARNED
MASKED = ROWS[1:]
LABELS = {"dense": "full fine-tune (dense)", "feature": "feature extraction (frozen)",
          "random": "random mask (frozen)", "magnitude": "magnitude, frozen weights",
          "adaprune": "Adapting by Pruning (frozen)", "supermask": "supermask (frozen)",
          "movement": "movement, hard (weights train)"}
# Gao et al. 2021, appendix Table 2: BERT-base, SST-2 dev accuracy (50 % where sparse).
PAPER = {"dense": 92.6, "feature": 86.7, "adaprune": 85.6, "magnitude": 81.9}
MATRICES = ("attention/query", "attention/key", "attention/value", "attention/output",
            "ffn/intermediate", "ffn/output")
SHORT = {"attention/query": "q", "attention/key": "k", "attention/value": "v",
         "attention/output": "o", "ffn/intermediate": "ffn_in", "ffn/output": "ffn_out"}
_KERNEL = re.compile(r"encoder/layer_(\d+)/(attention/\w+|ffn/\w+)/kernel$")


def run_name(row: str, seed: int) -> str:
    return f"{row}_s{seed}"


def head_name(row: str, seed: int) -> str:
    return f"head_{row}_s{seed}"


def headline(report: dict) -> str:
    sp = (report.get("sparsity") or {}).get("global")
    return f"accuracy={report['eval']['accuracy']:.4f}" + (
        f", sparsity={sp:.3f}" if sp is not None else "")


def load_masks(model_dir) -> dict:
    """{(layer, matrix): bool keep mask} of the covered encoder kernels of a final model."""
    params, _, _ = params_ckpt.load_params(pathlib.Path(model_dir))
    out = {}
    for path, w in masks_lib.named_leaves(params):
        if m := _KERNEL.search(path):
            out[(int(m.group(1)), m.group(2))] = np.asarray(w) != 0
    return out


def masked(path: str, w, keep: dict):
    """`w` with the kept entries of `keep` (load_masks) if `path` is a covered kernel."""
    m = _KERNEL.search(path)
    if m is None:
        return w
    return w * keep[(int(m.group(1)), m.group(2))].astype(w.dtype)


def jaccard(a: dict, b: dict) -> dict:
    """Jaccard of the kept sets, over the whole encoder and per layer."""
    def j(keys):
        inter = sum(int((a[k] & b[k]).sum()) for k in keys)
        union = sum(int((a[k] | b[k]).sum()) for k in keys)
        return inter / union if union else 1.0
    layers = sorted({k[0] for k in a})
    return {"all": j(list(a)), "layers": [j([k for k in a if k[0] == i]) for i in layers]}


def random_jaccard(target: float) -> float:
    """Expected Jaccard of the kept sets of two independent random masks at `target`."""
    keep = 1.0 - target
    return keep * keep / (2 * keep - keep * keep)


def _spread(masks: dict) -> dict:
    """Sparsity per layer and per matrix type."""
    layers = sorted({k[0] for k in masks})
    by_layer = [1 - np.mean(np.concatenate([masks[k].ravel() for k in masks if k[0] == i]))
                for i in layers]
    by_type = {SHORT[t]: 1 - np.mean(np.concatenate([masks[k].ravel() for k in masks
                                                     if k[1] == t]))
               for t in MATRICES if any(k[1] == t for k in masks)}
    return {"layer": [float(x) for x in by_layer], "type": {k: float(v)
                                                            for k, v in by_type.items()}}


def _row_stats(values) -> dict:
    return {"per_seed": [float(v) for v in values], **stats.t_interval(values).to_dict()}


def _overlap(p, root: pathlib.Path, rows: list) -> dict:
    """Cross-seed and cross-method Jaccard and the spread, from the masks the fresh heads saw
    (a learned row's: its phase-1 final mask)."""
    if not rows:
        return {"seeds": {}, "methods": {}, "spread": {}}
    masks = {(r, s): load_masks(root / head_name(r, s) / "model") for r in rows for s in p.seeds}
    seeds, methods, spread = {}, {}, {}
    for r in rows:
        pairs = {f"{a}-{b}": jaccard(masks[(r, a)], masks[(r, b)])
                 for a, b in itertools.combinations(p.seeds, 2)}
        alls = [v["all"] for v in pairs.values()]
        seeds[r] = {"pairs": pairs, "mean": float(np.mean(alls)) if alls else None,
                    "min": float(np.min(alls)) if alls else None,
                    "max": float(np.max(alls)) if alls else None,
                    "layers": (np.mean([v["layers"] for v in pairs.values()], 0).tolist()
                               if pairs else None)}
        each = [_spread(masks[(r, s)]) for s in p.seeds]
        spread[r] = {"layer": np.mean([e["layer"] for e in each], 0).tolist(),
                     "type": {t: float(np.mean([e["type"][t] for e in each]))
                              for t in each[0]["type"]}}
    for a, b in itertools.combinations(rows, 2):
        js = [jaccard(masks[(a, s)], masks[(b, s)]) for s in p.seeds]
        methods[f"{a}|{b}"] = {"all": float(np.mean([j["all"] for j in js])),
                               "layers": np.mean([j["layers"] for j in js], 0).tolist()}
    return {"seeds": seeds, "methods": methods, "spread": spread}


def jaccard_verdict(seed_jaccard: dict, target: float, margin: float) -> str:
    """The overlap rule: AdaPrune's whole-encoder Jaccard between every pair of seeds is at
    least the random expectation + margin ('holds'), every pair below it ('fails'), else
    'undecided'; fewer than 2 seeds: 'n < 2'."""
    ada = seed_jaccard.get("adaprune")
    if not ada or ada["min"] is None:
        return "n < 2"
    bound = random_jaccard(target) + margin
    if ada["min"] >= bound:
        return "holds"
    return "fails" if ada["max"] < bound else "undecided"


def summarise(p, root: pathlib.Path, reports: dict, labels) -> dict:
    rows = list(p.rows)
    fresh = [r for r in rows if r != "dense"]
    own = [r for r in rows if r in LEARNED + ("dense",)]
    masked_rows = [r for r in rows if r in MASKED]
    acc = lambda name: reports[name]["eval"]["accuracy"]  # noqa: E731
    phase1 = {r: _row_stats([acc(run_name(r, s)) for s in p.seeds]) for r in own}
    phase2 = {r: _row_stats([acc(head_name(r, s)) for s in p.seeds]) for r in fresh}
    for table, name_of in ((phase1, run_name), (phase2, head_name)):
        for r in table:
            sp = [(reports[name_of(r, s)].get("sparsity") or {}).get("global")
                  for s in p.seeds]
            table[r]["sparsity"] = None if None in sp else float(np.mean(sp))
            table[r]["wall_s"] = float(sum(reports[name_of(r, s)]["wall_time_s"]
                                           for s in p.seeds))
    comparisons = []
    for a, b in p.comparisons:
        if a in fresh and b in fresh:
            d = stats.paired(phase2[a]["per_seed"], phase2[b]["per_seed"])
            comparisons.append({"a": a, "b": b, **d.to_dict(),
                                "verdict": stats.Rule(a, b, 0.0).verdict(d)})
    overlap = _overlap(p, root, masked_rows)
    return {"rows": rows, "fresh_rows": fresh, "own_rows": own, "masked_rows": masked_rows,
            "seeds": list(p.seeds), "target": p.target, "phase1": phase1, "phase2": phase2,
            "comparisons": comparisons, "overlap": overlap,
            "random_jaccard": random_jaccard(p.target), "jaccard_margin": p.jaccard_margin,
            "jaccard_verdict": jaccard_verdict(overlap["seeds"], p.target, p.jaccard_margin),
            "majority": stats.majority(labels)["accuracy"],
            "uniform": stats.uniform_random(labels, 2)["accuracy"], "dev_rows": int(len(labels)),
            "settings": {"steps": p.steps, "head_steps": p.head_steps,
                         "batch_size": p.batch_size, "seq_len": p.seq_len, "lr": p.lr,
                         "head_lr": p.head_lr, "frozen_head": p.frozen_head,
                         "train_subset": p.train_subset, "movement": dict(p.movement),
                         "adaprune": dict(p.adaprune), "supermask": dict(p.supermask)}}


def missed_target(summary: dict, tolerance: float = 0.005) -> dict:
    """{row: sparsity reached} of the masked rows whose mean final sparsity is more than
    `tolerance` off the target (a threshold method's drift, AdaPrune short of its stop)."""
    out = {}
    for r in summary["masked_rows"]:
        d = summary["phase1"].get(r) or summary["phase2"].get(r) or {}  # a learned row's own
        sp = d.get("sparsity")
        if sp is not None and abs(sp - summary["target"]) > tolerance:
            out[r] = sp
    return out


def _ci(d: dict, signed: bool = False) -> str:
    f = "+.1f" if signed else ".1f"
    if d["lo"] is None:
        return f"{100 * d['mean']:{f}} (n={d['n']})"
    return f"{100 * d['mean']:{f}} [{100 * d['lo']:{f}}, {100 * d['hi']:{f}}]"


def _jac(d: dict) -> str:
    if not d or d["mean"] is None:
        return "—"
    return f"{d['mean']:.3f} [{d['min']:.3f}, {d['max']:.3f}]"


def markdown(summary: dict) -> str:
    s, pct = summary, round(100 * summary["target"])
    o = s["overlap"]
    head = ["row", "fresh head on the final mask", "own run (head trained along)",
            "sparsity reached", "Jaccard across seeds", "paper (BERT-base)", "wall (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in s["rows"]:
        p1, p2 = s["phase1"].get(r), s["phase2"].get(r)
        wall = (p1["wall_s"] if p1 else 0.0) + (p2["wall_s"] if p2 else 0.0)
        sp = (p1 or p2)["sparsity"]
        lines.append(f"| {LABELS[r]} | {_ci(p2) if p2 else '—'} | "
                     f"{_ci(p1) if p1 else '(the same run)'} | "
                     f"{'—' if sp is None else f'{sp:.3f}'} | {_jac(o['seeds'].get(r))} | "
                     f"{PAPER.get(r, '—')} | {wall:.0f} |")
    maj = f"{100 * s['majority']:.1f}"
    lines += [f"| majority class | {maj} | {maj} | — | — | — | — |",
              f"| uniform random guess | {100 * s['uniform']:.1f} | {100 * s['uniform']:.1f} | "
              f"— | {s['random_jaccard']:.3f} (expected) | — | — |", "",
              f"SST-2 dev accuracy ({s['dev_rows']} rows), points: mean and 95 % t interval over "
              f"{len(s['seeds'])} seed(s) {s['seeds']}. Sparse rows at {pct} % of the encoder "
              "kernels. Fresh head: a new head trained on the frozen pre-trained encoder under "
              "the row's final mask (the fixed rows' only run). Jaccard across seeds: "
              "kept-set overlap of the final masks, whole encoder, mean [min, max] over the "
              "seed pairs. Paper: Gao et al. 2021, appendix Table 2, SST-2 dev. "
              f"{cost.cost_line(s)}", ""]
    missed = missed_target(s)
    if missed:
        lines += ["**Off target** (their comparisons are not at the stated sparsity): " +
                  ", ".join(f"{r} reached {v:.3f}" for r, v in missed.items()) + ".", ""]
    lines += ["Comparisons stated before the runs (fresh-head accuracy, a − b paired by seed, "
              "points; a > b when the whole 95 % interval is above 0):", "",
              "| a − b | difference [95 % interval] | verdict |", "|---|---|---|"]
    for c in s["comparisons"]:
        lines.append(f"| {c['a']} − {c['b']} | {_ci(c, True)} | {c['verdict']} |")
    lines += ["", f"Overlap rule: AdaPrune's cross-seed Jaccard, every seed pair, >= the random "
              f"expectation {s['random_jaccard']:.3f} + {s['jaccard_margin']}: "
              f"**{s['jaccard_verdict']}**.", ""]
    return "\n".join(lines + _layer_tables(s)) + "\n"


def _layer_tables(s: dict) -> list:
    o, rows = s["overlap"], s["masked_rows"]
    if not rows:
        return []
    n_layers = len(o["spread"][rows[0]]["layer"])
    layers = [f"L{i}" for i in range(n_layers)]
    out = [f"Cross-seed Jaccard per layer (mean over the seed pairs; two independent random "
           f"masks: {s['random_jaccard']:.3f}):", "",
           "| row | " + " | ".join(layers) + " |", "|" + "---|" * (n_layers + 1)]
    for r in rows:
        v = o["seeds"][r]["layers"]
        out.append(f"| {r} | " + (" | ".join(f"{x:.3f}" for x in v) if v else
                                  " | ".join("—" for _ in layers)) + " |")
    out += ["", "Jaccard between methods at the same seed (whole encoder, mean over seeds; "
            "diagonal: across seeds):", "", "| | " + " | ".join(rows) + " |",
            "|" + "---|" * (len(rows) + 1)]
    for a in rows:
        cells = []
        for b in rows:
            if a == b:
                m = o["seeds"][a]["mean"]
                cells.append("—" if m is None else f"({m:.2f})")
            else:
                cells.append(f"{(o['methods'].get(f'{a}|{b}') or o['methods'][f'{b}|{a}'])['all']:.2f}")
        out.append(f"| {a} | " + " | ".join(cells) + " |")
    types = list(o["spread"][rows[0]]["type"])
    out += ["", "Where the pruning falls (sparsity per encoder layer and matrix type, mean over "
            "seeds):", "", "| row | " + " | ".join(layers + types) + " |",
            "|" + "---|" * (n_layers + len(types) + 1)]
    for r in rows:
        sp = o["spread"][r]
        out.append(f"| {r} | " + " | ".join(f"{v:.2f}" for v in sp["layer"]) + " | "
                   + " | ".join(f"{sp['type'][t]:.2f}" for t in types) + " |")
    return out + [""]


def plot(summary: dict, path: pathlib.Path) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    s = summary
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [3, 2, 3]})
    panels = ((axes[0], [(r, "phase2") for r in s["fresh_rows"]],
               "fresh head on the final mask"),
              (axes[1], [(r, "phase1") for r in s["own_rows"]], "own run (head trained along)"))
    for ax, items, title in panels:
        for i, (r, key) in enumerate(items):
            d = s[key][r]
            ax.scatter([i] * len(d["per_seed"]), [100 * v for v in d["per_seed"]], s=10,
                       color="0.6", zorder=2)
            err = None if d["lo"] is None else [[100 * (d["mean"] - d["lo"])],
                                                [100 * (d["hi"] - d["mean"])]]
            ax.errorbar([i], [100 * d["mean"]], yerr=err, fmt="o", capsize=4, zorder=3)
        ax.axhline(100 * s["majority"], color="k", ls="--", lw=1, label="majority class")
        if "random" in s["phase2"]:
            ax.axhline(100 * s["phase2"]["random"]["mean"], color="tab:red", ls=":", lw=1,
                       label="random mask (fresh head)")
        ax.set_xticks(range(len(items)), [r for r, _ in items], rotation=30, fontsize=8)
        ax.set_ylabel("SST-2 dev accuracy (%)")
        ax.set_title(f"MiniLM-L6 @{round(100 * s['target'])} %: {title}", fontsize=9)
        ax.legend(fontsize=7, loc="best")  # not over a row at the majority class
    ax = axes[2]
    for r in s["masked_rows"]:
        v = s["overlap"]["seeds"][r]["layers"]
        if v:
            ax.plot(v, marker="o", label=r)
    ax.axhline(s["random_jaccard"], color="k", ls="--", lw=1, label="independent random")
    ax.set_xlabel("encoder layer")
    ax.set_ylabel("Jaccard of kept weights across seeds")
    ax.set_title("do seeds learn the same mask?", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
