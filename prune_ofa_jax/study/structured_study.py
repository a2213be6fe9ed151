"""One picture of every compression method we have: score against measured onnxruntime latency.

  python -m prune_ofa_jax.study structured --workdir runs/structured [--doc]
  python -m prune_ofa_jax.study structured --config configs/structured_study.py:test --workdir DIR

On SST-2 and the disaster tweets, with the real MiniLM-L6, every row gets the same fine-tune
budget: a dense teacher (MiniLM fine-tuned `teacher.steps`), then `budget.steps` more steps
from it with KD from it (0.5 / 0.5, T = 2), `seeds` seeds for the dense, unstructured and
structured rows:
- dense: no pruning (the budget's reference);
- unstructured: GMP (the Prune OFA pruner, per-tensor cubic schedule) to each level, and the
  same with int8 QAT during the run (+int8);
- structured: `structured.method` (heads and FFN neurons, sparsity/methods/structured.py)
  removing each level of the encoder's Linear weights, and with int8 QAT (+int8);
- uniform layer dropping: the teacher's first k layers;
- AutoTinyBERT: the searched architectures of docs/studies/autotinybert.md cut from the
  teacher by its extraction (nas/extract.py; no supernet is trained here), pattern locked.
Data splits are fixed by data.split_seed, the same for every seed. Scores are the runs' own
evaluations (fake-quant for the int8 rows; the int8 graph matches them, study compression).
Latency: every model exported as it is deployed (compact ONNX, int8 for QAT rows) and timed
by runtime/latency.py at batch 1 and 32, one task's models side by side with its dense
model. WORKDIR/summary.json, table.md and structured.png hold the result; --doc writes them
into docs/studies/structured.md. The decision rules (config.goals) are stated before the runs.
"""

from __future__ import annotations

import pathlib
import sys
import time

import ml_collections

from prune_ofa_jax import logs, paths, presets, recipes
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.study import harness, structured_models, structured_report
from prune_ofa_jax.train import inputs

METRIC = {"sst2": "accuracy", "tweets": "f1"}


def get_config(size: str = "") -> ml_collections.ConfigDict:
    """size "": the study as measured on its page; "test": seconds, the suite's."""
    p = ml_collections.ConfigDict()
    p.size = size
    p.base_model = ""          # "" = the real MiniLM-L6 from the pip package
    p.tokenizer = ""
    p.data_root = ""           # "" = the shared data
    p.split_seed = 0           # data.split_seed of every run: one train/dev split for all
    p.eval_batch_size = 128
    p.progress = False
    # Sized from other studies' MiniLM-L6 pilots on this machine (~1 s per step of 32 x 48,
    # ~35 s per run besides): 64 runs of ~75 s, the teachers and the latency, ~100 min.
    # Time a pilot first (docs/studies/structured.md) and adjust budget.steps to it.
    p.tasks = ml_collections.ConfigDict({
        "sst2": dict(seq_len=48, train_rows=8000), "tweets": dict(seq_len=48, train_rows=0)})
    p.teacher = ml_collections.ConfigDict(dict(steps=200, batch_size=32, lr=1e-4))
    # every row after the teacher: these steps from it, KD from it; the pruning rows prune
    # on the cubic schedule from begin_step to end_step (then the masks are frozen)
    p.budget = ml_collections.ConfigDict(dict(
        steps=40, batch_size=32, lr=1e-4, kd_weight=0.5, temperature=2.0, begin_step=0,
        end_step=24, update_every=4, qat_ema_decay=0.99))
    p.seeds = (0, 1, 2)
    p.other_seeds = (0,)       # layer dropping and AutoTinyBERT (no interval asked of them)
    p.unstructured = ml_collections.ConfigDict(dict(
        method="magnitude", distribution="uniform", levels=(0.8, 0.9), int8=(0.9,)))
    p.structured = ml_collections.ConfigDict(dict(
        method="structured_magnitude", distribution="global", levels=(0.5, 0.7, 0.85),
        int8=(0.7, 0.85)))  # 0.7: methods.structured.DEFAULT_TARGET, the bench's shape
    p.layer_drop = (3, 2)      # the teacher's first k layers
    p.autotinybert = ("5/288/1152/96", "2/336/1056/240", "2/336/192/144")  # L/H/FFN/qkv
    p.latency = ml_collections.ConfigDict(dict(
        batch_sizes=(1, 32), seq_len=128, threads=0, warmup=2, repeats=10, budget_s=60.0,
        group=10,  # variants per measurement (each group has the dense model too)
        every_seed=True))  # the structured rows' every seed (False: seed 0, as the others)
    p.goals = ml_collections.ConfigDict(dict(
        task="sst2", margin=0.015, fp32_speedup=2.5, int8_speedup=4.0, batch=32,
        text=("On SST-2, the fastest structured level at >= 2.5x the dense model's "
              "onnxruntime fp32 speed (batch 32) holds when the 95 % t interval of its "
              "paired difference to dense (same seed) lies above -1.5 points; the same for "
              "structured + int8 at >= 4x. Every other row is reported the same way.")))
    if size == "test":  # one task, one seed, a structured row beside dense, tiny steps at
        # the :test recipes' batch and length (the derived rows and int8: tests of their own)
        p.tasks = ml_collections.ConfigDict({"sst2": dict(seq_len=32, train_rows=64)})
        p.teacher.update(steps=2, batch_size=16)
        p.budget.update(steps=4, batch_size=16, end_step=2, update_every=1)
        p.seeds, p.other_seeds = (0,), (0,)
        p.devices = 1  # one device (recipes.small_run): sharding has tests of its own
        p.unstructured.update(levels=(), int8=())
        p.structured.update(levels=(0.5,), int8=())
        p.layer_drop, p.autotinybert = (), ()
        p.latency.update(batch_sizes=(1, 2), seq_len=16, warmup=1, repeats=2, budget_s=0.0)
        p.goals.batch = 2
    elif size:
        raise ValueError(f"--config.size: {size!r} is not '' or 'test'")
    return p


# --- runs --------------------------------------------------------------------------------
def _base(p, task: str, steps: int, batch_size: int, seed: int, lr: float):
    c = recipes.finetune("glue", "sst2")
    if task == "tweets":
        c.data.kind = "tweets"
    elif task != "sst2":
        raise ValueError(f"--config.tasks: {task!r} is not sst2 or tweets")
    c.num_labels = 2
    c.sparsity.lock_pattern = False
    q = ml_collections.ConfigDict(dict(
        preset=presets.FAST, seed=seed, data_root=p.data_root, seq_len=p.tasks[task].seq_len,
        tokenizer=p.tokenizer, batch_size=batch_size, eval_batch_size=p.eval_batch_size,
        progress=p.progress, devices=p.get("devices", 0)))
    recipes.small_run(c, q, steps)
    c.data.split_seed = p.split_seed
    c.data.train_subset = p.tasks[task].train_rows
    c.optim.lr = lr
    c.checkpoint.every = steps  # one save, at the end (dropped once the run is done)
    return c


def teacher_config(p, task: str):
    t = p.teacher
    c = _base(p, task, t.steps, t.batch_size, 0, t.lr)
    c.init.path = p.base_model or str(paths.minilm_dir())
    c.init.init_missing_heads = True  # MiniLM is a bare encoder: a fresh task head
    return c


def row_config(p, task: str, teacher_dir, row: dict, seed: int, init=None):
    """One row's run: `budget.steps` from `init` (default: the teacher), KD from the
    teacher; row = {"family", "level", "int8"} (structured_report.rows)."""
    b = p.budget
    c = _base(p, task, b.steps, b.batch_size, seed, b.lr)
    teacher = str(pathlib.Path(teacher_dir) / "model")
    c.init.path, c.teacher.path = str(init or teacher), teacher
    c.init.init_missing_heads = init is not None  # extracted encoders: a fresh task head
    c.distill.kd_weight, c.distill.task_weight = b.kd_weight, 1.0 - b.kd_weight
    c.distill.temperature = b.temperature
    family = row["family"]
    if family in ("unstructured", "structured"):
        block = p[family]
        c.sparsity.update(
            enabled=True, method=block.method, target=row["level"], initial=0.0,
            begin_step=b.begin_step, end_step=b.end_step, update_every=b.update_every,
            freeze_step=b.end_step + 1, distribution=block.distribution, regrow=False,
            include=(masks_lib.ENCODER_KERNELS,))
    elif family == "autotinybert":
        c.sparsity.lock_pattern = True  # the extraction's zero padding stays zero
    if row["int8"]:
        c.quant.enabled = True
        c.quant.ema_decay = b.qat_ema_decay
    return c


def _say(msg: str) -> None:
    print(f"[structured] {msg}", flush=True)


def plan(p, root: pathlib.Path, teachers: dict) -> dict:
    """{run name: (config, workdir, task, row key, seed)} of every row's runs (the derived
    models, layer drop and AutoTinyBERT, are cut from the teacher first)."""
    out = {}
    for task in p.tasks:
        tdir = teachers[task]
        for key, row in structured_report.rows(p).items():
            seeds = p.seeds if row["family"] in structured_report.SEEDED else p.other_seeds
            init = structured_models.derived(p, root, task, tdir, row)
            for seed in seeds:
                name = f"{task}_{key}_s{seed}"
                out[name] = (row_config(p, task, tdir, row, seed, init), root / name, task,
                             key, seed)
    return out


def run(p, workdir) -> dict:
    root = harness.open_workdir(p, workdir)
    t0 = time.time()
    with logs.to_file(root):
        teachers = {task: root / f"{task}_teacher" for task in p.tasks}
        reports = harness.run_all({f"{t}_teacher": (teacher_config(p, t), d)
                                   for t, d in teachers.items()}, _say, _headline,
                                  drop_checkpoints=True)
        runs = plan(p, root, teachers)
        reports.update(harness.run_all({k: v[:2] for k, v in runs.items()}, _say, _headline,
                                       drop_checkpoints=True))
        latency = structured_models.latencies(p, root, runs, _say)
    labels = {task: _dev_labels(runs, task) for task in p.tasks}
    summary = structured_report.summarise(p, reports, runs, latency, labels)
    summary["wall_time_s"] = round(time.time() - t0, 1)
    return harness.save(root, summary, structured_report, "structured.png")


def _headline(report: dict) -> str:
    ev, sp = report["eval"], (report.get("sparsity") or {}).get("global")
    return ", ".join(f"{k}={v:.4f}" for k, v in ev.items() if k in ("accuracy", "f1")) + (
        f", sparsity={sp:.3f}" if sp is not None else "")


def _dev_labels(runs: dict, task: str):
    cfg = next(v[0] for v in runs.values() if v[2] == task)
    return list(inputs.classification_examples(cfg)[1].labels)


STUDY = harness.Study(name="structured", marker="structured", plot="structured.png", run=run,
                      markdown=structured_report.markdown,
                      alt="score against measured onnxruntime latency", doc=__doc__,
                      config="configs/structured_study.py")


def main(argv=None) -> int:
    return harness.main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
