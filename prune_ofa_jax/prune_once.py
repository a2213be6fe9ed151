"""One-shot pruning of a fine-tuned model, no retraining: score vs sparsity for magnitude and
OBS (the Optimal BERT Surgeon, sparsity/obs.py), with and without recomputation.

  python -m prune_ofa_jax prune-once --model RUN/model --task sst2 --workdir DIR
      [--methods magnitude,obs] [--sparsity 0.5,0.6,0.7,0.8,0.9] [--recompute 1,9]
      [--num_grads 256] [--batch_size 16] [--block_size 50] [--damp 0.01] ...

--model: a fine-tuned classifier (a run's model/, an HF dir, a .pofa file) for --task (a
GLUE task name, or `tweets`); the encoder's Linear kernels are pruned (not the embeddings,
pooler or head). Per level:
- magnitude: |w| to the level from the dense model, no update;
- obs (`--recompute 1`): from the dense model, OBS saliency and the exact OBS update of the
  kept weights, with the empirical Fisher of `num_grads` mini-batch gradients of the task
  loss (dev-free: train rows, dropout off) at the dense weights, one Fisher for every level:
  the reference's one-shot protocol;
- obs with `--recompute K` > 1 (series obs_rK): the Fisher is re-estimated every
  max(levels) / K of sparsity: one path from the dense model through max/K, 2 max/K, ...,
  max (and any level off that grid), each stop pruned from the one before with a Fisher
  estimated there, each level evaluated where the path reaches it. With every level on the
  grid this is the reference's recomputation from dense (level s in s / (max / K) steps:
  the same stops and the same kind of Fisher estimate), with each stop computed once.
Each level is evaluated on the dev set. DIR gets oneshot.json (every score), oneshot.md (the
table) and oneshot.png (score vs sparsity, each series, the dense score and the
majority-class baseline).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import sys
import time

import jax
import ml_collections
import numpy as np

from prune_ofa_jax import cli, errors, jsonio, logs, recipes
from prune_ofa_jax.data import common
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.sparsity import obs
from prune_ofa_jax.train import build, inputs, objectives, steps

MODULE = "prune_ofa_jax.prune_once"
METHODS = ("magnitude", "obs")
GROUP = 8  # gradients added to the Fisher in one pass


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one sweep does (the command's flags)."""
    model: str
    task: str
    levels: tuple = (0.5, 0.6, 0.7, 0.8, 0.9)
    methods: tuple = METHODS
    recompute: tuple = (1,)
    num_grads: int = 256  # 32 measured too noisy for one shot (docs/studies/obs.md)
    batch_size: int = 16
    block_size: int = 50
    damp: float = 0.01
    distribution: str = "uniform"
    seq_len: int = 64
    eval_batch_size: int = 128
    train_subset: int = 0
    eval_subset: int = 0
    data_root: str = ""
    tokenizer: str = ""
    seed: int = 0

    def series(self) -> list:
        """(name, method, recompute) in plotting order."""
        out = [("magnitude", "magnitude", 0)] if "magnitude" in self.methods else []
        if "obs" in self.methods:
            out += [("obs" if k == 1 else f"obs_r{k}", "obs", k) for k in self.recompute]
        return out


def task_config(s: Settings) -> ml_collections.ConfigDict:
    """The fine-tuning recipe of the task, loading --model with its pattern locked (its
    zeros stay zero), the encoder's Linear kernels covered."""
    if s.task == "tweets":
        c = recipes.finetune("glue", "sst2")
        c.data.kind = "tweets"
        c.num_labels = 2
    else:
        c = recipes.finetune("glue", s.task)
    c.init.path = s.model
    c.sparsity.lock_pattern = True
    c.sparsity.include = (masks_lib.ENCODER_KERNELS,)
    c.seed = s.seed
    c.data.root, c.data.tokenizer, c.data.seq_len = s.data_root, s.tokenizer, s.seq_len
    c.data.train_subset, c.data.eval_subset = s.train_subset, s.eval_subset
    c.train.batch_size, c.train.eval_batch_size = s.batch_size, s.eval_batch_size
    c.train.epochs, c.train.steps, c.train.progress = 0, 1, False
    c.mesh.data = -1
    return c


class OneShot:
    """A loaded model, its data and the jitted pieces a sweep needs."""

    def __init__(self, s: Settings):
        self.s = s
        self.config = task_config(s)
        self.data = inputs.make_sources(self.config)
        self.run = build.build(self.config)
        self.mesh = self.run.mesh
        self.dense = (self.run.state.params, self.run.state.masks)
        self.batches_used = 0
        self._fisher_step = jax.jit(functools.partial(
            _fisher_step, model=self.run.model, cfg=self.run.step_cfg, mesh=self.mesh),
            donate_argnums=0)
        self._prune = jax.jit(functools.partial(obs.prune, damp=s.damp,
                                                distribution=s.distribution, mesh=self.mesh))
        self._magnitude = jax.jit(functools.partial(masks_lib.magnitude_masks,
                                                    method=s.distribution))

    def fisher(self, params, masks) -> obs.Fisher:
        """The Fisher of `num_grads` fresh train mini-batches at these weights, GROUP
        gradients per pass over it (the pass, not the gradients, costs on CPU)."""
        f = obs.init(masks, self.s.block_size, self.mesh)
        left = self.s.num_grads
        while left:
            group = min(GROUP, left)
            rows = [self.data.train.batch(self.batches_used + i) for i in range(group)]
            self.batches_used, left = self.batches_used + group, left - group
            local = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
            f = self._fisher_step(f, params, masks,
                                  mesh_lib.global_batch(local, self.mesh, accum=group))
        return f

    def magnitude(self, level: float):
        params, masks = self.dense
        new = self._magnitude(params, masks, level)
        return masks_lib.apply_masks(params, new), new

    def obs(self, params, masks, fisher, level: float):
        return self._prune(params, fisher, masks, level)

    def evaluate(self, params, masks) -> dict:
        state = self.run.state.replace(params=params, masks=masks)
        out = self.run.evaluate(state, self.data)
        pruned = int(sum(int((~np.asarray(m)).sum()) for m in jax.tree.leaves(masks)))
        size = sum(int(np.size(m)) for m in jax.tree.leaves(masks))
        return {**{k: float(v) for k, v in out.items()}, "sparsity": pruned / size}

    def labels(self) -> np.ndarray:
        return np.asarray(self.data.eval.examples.labels)


def _task_grads(params, masks, batch, *, model, cfg):
    """Gradient of the task loss (dropout off) at the masked weights."""
    def loss(p):
        out, _ = steps.forward(model, masks_lib.apply_masks(p, masks), {}, batch, cfg,
                               train=False)
        return objectives.loss(cfg, out, None, batch)[0]
    return jax.grad(loss)(params)


def _fisher_step(fisher, params, masks, batches, *, model, cfg, mesh):
    """The Fisher plus g g^T of each mini-batch of `batches` ([group, batch, ...])."""
    grads = jax.lax.map(lambda b: _task_grads(params, masks, b, model=model, cfg=cfg), batches)
    return obs.accumulate(fisher, grads, stacked=True, mesh=mesh)


def path_levels(levels, k: int) -> list:
    """The stops of a recomputation path: max/k, 2 max/k, ..., max and every level."""
    top = max(levels)
    grid = {round(top * i / k, 6) for i in range(1, k + 1)}
    return sorted(grid | {round(x, 6) for x in levels})


def sweep(s: Settings, say=print, one: OneShot | None = None) -> dict:
    """Every series at every level (and the dense model), with the time each series took;
    `one`: a OneShot of these settings already built (its batches continue)."""
    t0 = time.time()
    one = one or OneShot(s)
    labels = one.labels()
    values, counts = np.unique(labels, return_counts=True)
    rows = {"dense": {"0.0": one.evaluate(*one.dense)}}
    say(f"dense: {_headline(rows['dense']['0.0'])}")
    cost, dense_fisher = {}, None
    for name, method, k in s.series():
        t = time.time()
        rows[name] = {}
        if method == "magnitude":
            for level in s.levels:
                rows[name][str(level)] = one.evaluate(*one.magnitude(level))
                say(f"{name} {level:.2f}: {_headline(rows[name][str(level)])}")
        elif k == 1:
            dense_fisher = dense_fisher or one.fisher(*one.dense)
            for level in s.levels:
                rows[name][str(level)] = one.evaluate(*one.obs(*one.dense, dense_fisher, level))
                say(f"{name} {level:.2f}: {_headline(rows[name][str(level)])}")
        else:
            params, masks = one.dense
            for i, stop in enumerate(path_levels(s.levels, k)):
                f = dense_fisher if i == 0 and dense_fisher is not None else one.fisher(
                    params, masks)
                params, masks = one.obs(params, masks, f, stop)
                if any(abs(stop - x) < 1e-6 for x in s.levels):
                    level = next(x for x in s.levels if abs(stop - x) < 1e-6)
                    rows[name][str(level)] = one.evaluate(params, masks)
                    say(f"{name} {level:.2f}: {_headline(rows[name][str(level)])}")
        cost[name] = round(time.time() - t, 1)
    return {"settings": dataclasses.asdict(s), "rows": rows, "series_wall_s": cost,
            "metric": _metric(rows["dense"]["0.0"]),
            "majority": float(counts.max() / counts.sum()), "majority_class": int(
                values[np.argmax(counts)]),
            "fisher": obs.fisher_bytes(one.dense[1], s.block_size, one.mesh.size),
            "wall_time_s": round(time.time() - t0, 1)}


def _metric(metrics: dict) -> str:
    return "accuracy" if "accuracy" in metrics else next(iter(metrics))


def _headline(m: dict) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in m.items())


def markdown(table: dict) -> str:
    """Score (in points) per series and level, the dense score and the majority class."""
    s, metric = table["settings"], table["metric"]
    levels = [str(x) for x in s["levels"]]
    head = ["series"] + [f"{round(100 * float(x))} %" for x in levels] + ["wall (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in table["rows"].items():
        if name == "dense":
            continue
        cells = [f"{100 * row[x][metric]:.1f}" if x in row else "—" for x in levels]
        wall = table["series_wall_s"][name]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {wall:.0f} |")
    dense = 100 * table["rows"]["dense"]["0.0"][metric]
    fb = table["fisher"]
    lines += ["", f"Dev {metric} in points of the {s['task']} model {s['model']} pruned once, "
              f"without retraining (dense: {dense:.1f}; majority class: "
              f"{100 * table['majority']:.1f}); {s['distribution']} sparsity over the "
              f"encoder's Linear kernels. OBS: {s['num_grads']} gradients of batch "
              f"{s['batch_size']} per Fisher, blocks of {s['block_size']}, damp {s['damp']:g} "
              f"(relative); Fisher {fb['total'] / 2**30:.2f} GiB. Whole sweep: "
              f"{table['wall_time_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def plot(tables: list, path) -> None:
    """Score vs sparsity, one panel per table (task): every series, dense and majority."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    fig, axes = plt.subplots(1, len(tables), figsize=(4.6 * len(tables), 3.6), squeeze=False)
    for ax, table in zip(axes[0], tables):
        metric, s = table["metric"], table["settings"]
        for name, row in table["rows"].items():
            if name == "dense":
                continue
            xs = [x for x in s["levels"] if str(x) in row]
            ax.plot([100 * x for x in xs], [100 * row[str(x)][metric] for x in xs],
                    marker="o", label=name)
        ax.axhline(100 * table["rows"]["dense"]["0.0"][metric], color="k", ls="--", lw=1,
                   label="dense")
        ax.axhline(100 * table["majority"], color="gray", ls=":", lw=1, label="majority class")
        ax.set_title(f"one-shot, {s['task']}")
        ax.set_xlabel("sparsity of the encoder kernels (%)")
        ax.set_ylabel(f"dev {metric} (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(table: dict, workdir) -> None:
    out = pathlib.Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "oneshot.json").write_text(jsonio.dumps(table, indent=2))
    (out / "oneshot.md").write_text(markdown(table))
    plot([table], out / "oneshot.png")


def _floats(text: str) -> tuple:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _ints(text: str) -> tuple:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parser() -> cli.Parser:
    p = cli.Parser(MODULE, description=__doc__)
    p.add_argument("--model", required=True, help="a fine-tuned classifier (run's model/, HF "
                   "dir or .pofa)")
    p.add_argument("--task", required=True, help="a GLUE task (sst2, mrpc, ...) or tweets")
    p.add_workdir("output dir: oneshot.json, oneshot.md, oneshot.png.")
    p.add_argument("--methods", "--method", dest="methods", default="magnitude,obs",
                   help="any of magnitude, obs, comma-separated")
    p.add_argument("--sparsity", default="0.5,0.6,0.7,0.8,0.9", help="levels, in (0, 1)")
    p.add_argument("--recompute", default="1", help="OBS series: 1 (one Fisher) and/or K > 1 "
                   "(a Fisher every max(levels)/K of sparsity), e.g. 1,9")
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    for flag in ("num_grads", "batch_size", "block_size", "damp", "seq_len", "train_subset",
                 "eval_subset", "seed"):
        p.add_argument(f"--{flag}", type=type(defaults[flag]), default=defaults[flag])
    p.add_argument("--distribution", default="uniform", choices=("uniform", "global"))
    p.add_argument("--data_root", default="", help="default: $PRUNE_OFA_DATA or ../shared/data")
    p.add_argument("--tokenizer", default="", help="default: the model's own, else MiniLM's")
    return p


def settings(args) -> Settings:
    """Settings from parsed flags; a bad value is a UsageError naming its flag."""
    try:
        levels, rec = _floats(args.sparsity), _ints(args.recompute)
    except ValueError as e:
        raise errors.UsageError(f"--sparsity / --recompute: {e}") from e
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    checks = (("--sparsity", bool(levels) and all(0 < x < 1 for x in levels),
               "levels in (0, 1), comma-separated"),
              ("--methods", bool(methods) and set(methods) <= set(METHODS), f"any of {METHODS}"),
              ("--recompute", bool(rec) and all(k >= 1 for k in rec), "integers >= 1"),
              ("--num_grads", args.num_grads >= 1, ">= 1"),
              ("--block_size", args.block_size >= 1, ">= 1"),
              ("--damp", args.damp >= obs.MIN_DAMP, f">= {obs.MIN_DAMP} (relative)"))
    for flag, ok, want in checks:
        if not ok:
            raise errors.UsageError(f"{flag}: must be {want}")
    return Settings(model=args.model, task=args.task, levels=tuple(sorted(levels)),
                    methods=methods, recompute=rec, num_grads=args.num_grads,
                    batch_size=args.batch_size, block_size=args.block_size, damp=args.damp,
                    distribution=args.distribution, seq_len=args.seq_len,
                    train_subset=args.train_subset, eval_subset=args.eval_subset,
                    data_root=args.data_root, tokenizer=args.tokenizer, seed=args.seed)


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        s = settings(args)
    except errors.UsageError as e:
        p.error(str(e))

    def body():
        logs.setup_console(verbose=args.verbose)
        table = sweep(s, say=lambda m: print(f"[prune-once] {m}", flush=True))
        write(table, args.workdir)
        print(markdown(table), flush=True)

    return cli.run(body, workdir=args.workdir, verbose=args.verbose,
                   user_errors=(common.DataError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
