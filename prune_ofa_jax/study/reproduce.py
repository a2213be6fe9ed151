"""Prune OFA's claim as a comparison that can come out either way, at a scale two CPU cores
can run:

  python -m prune_ofa_jax.study reproduce --workdir runs/reproduce [--doc]
  python -m prune_ofa_jax.study reproduce --workdir DIR --config configs/reproduce.py:test

Dense model: the real MiniLM-L6 after teacher preparation (fresh MLM/NSP heads), shared by
every row and seed. Upstream (per seed): GMP to the target at mid-run, masks frozen at 80 %,
then recovery at the target, on the shared English text, with and without KD from the dense
model. Each upstream model and the teacher are scored on the masked LM of WikiText-2's test
split, which no run trains on. Rows, each fine-tuned on SST-2 and the tweets task (one fixed
train/dev split for every seed), one change per row, every fine-tune the same steps and rows:
  dense        fine-tune the dense model (the reference point);
  prune_ofa    Prune OFA: upstream GMP + KD on every token (preset reference), then sparse
               transfer with the pattern locked;
  gmp_no_kd    the same upstream without distillation (GMP on the MLM/NSP loss alone);
  task_gmp     GMP during the fine-tune from the dense model, to the same sparsity, in the
               fine-tune's own steps and rows (the baseline the paper beats);
  task_gmp_long  (only with --config.compute_matched) task GMP given the upstream's steps on
               top: the compute-matched extra row.
Fine-tunes use no task teacher (every row alike). Decision rules, stated before the runs
(`RULES`, each on the 95 % t interval of a difference paired by seed):
  R1 per task: Prune OFA >= task GMP - 1 point of dev accuracy (non-inferiority);
  R2: KD upstream > no-KD upstream on held-out masked-LM accuracy (superiority);
  R3 per task: Prune OFA > GMP without KD on dev accuracy (superiority).
Each run is an ordinary training run (train/loop.py) in WORKDIR/<name>; a finished run
(report.json) is skipped and an interrupted one resumes, so rerunning the command continues
the study. WORKDIR/summary.json, table.md and reproduce.png hold the result; --doc writes
them into docs/studies/reproduce.md.
"""

from __future__ import annotations

import pathlib
import sys
import time

import ml_collections

from prune_ofa_jax import config_base, logs, paths, presets, recipes
from prune_ofa_jax.study import cost, harness, reproduce_report, stats
from prune_ofa_jax.train import inputs

ROWS, UPSTREAM_OF = reproduce_report.ROWS, reproduce_report.UPSTREAM_OF
UPSTREAMS = ("kd", "no_kd")

# The decision rules (stats.Rule: a - b on the paired interval; margin in accuracy units).
RULES = {
    "R1": stats.Rule("prune_ofa", "task_gmp", 0.01,
                     "Prune OFA >= task GMP - 1 point (dev accuracy, per task)"),
    "R2": stats.Rule("kd", "no_kd", 0.0,
                     "KD upstream > no-KD upstream (held-out masked-LM accuracy)"),
    "R3": stats.Rule("prune_ofa", "gmp_no_kd", 0.0,
                     "Prune OFA > upstream GMP without KD (dev accuracy, per task)"),
}


def get_config(size: str = "") -> ml_collections.ConfigDict:
    """size "": the study as measured on its page; "test": a few steps per run."""
    p = ml_collections.ConfigDict()
    p.size = size
    p.seeds = (0, 1, 2, 3, 4)
    p.split_seed = 0              # the dev rows and the held-out text: one for every seed
    p.target = 0.8
    p.base_model = ""             # "" = the real MiniLM-L6 from the pip package
    p.tokenizer = ""
    p.data_root = ""
    p.text_files = ("wikitext2/valid.txt", "text_state_union/*.txt")
    p.eval_files = ("wikitext2/test.txt",)  # held-out masked LM: no run trains on it
    p.mlm_eval_batches = 16       # x eval_batch_size rows of eval_files, the same for all
    p.batch_size = 16             # teacher and upstream
    p.eval_batch_size = 128
    p.progress = False            # one line per run instead of a bar each
    # Sized from a pilot (docs/studies/reproduce.md): about 160 CPU-minutes in all.
    p.teacher_steps = 300         # teacher preparation (shared by every row and seed)
    p.teacher_lr = 2e-4
    p.upstream_steps = 160        # GMP reaches the target at 80, masks frozen at 128
    p.upstream_seq_len = 48
    p.upstream_lr = 1e-4
    p.prune_end = 0.5             # GMP: 0 -> target by this fraction of a run (mid-run),
    p.prune_freeze = 0.8          # masks frozen here; the rest recovers at the target
    p.update_every = 10           # a mask update every this many upstream steps
    p.task_update_every = 10      # ... of task GMP's fine-tune steps (same fractions)
    p.compute_matched = False     # True: + task_gmp_long (task GMP with upstream + fine-tune
    #                               steps: the compute-matched extra row)
    p.tasks = ml_collections.ConfigDict({  # every row of a task: these steps and rows
        "sst2": dict(kind="glue", seq_len=48, steps=120, batch_size=16, train_subset=0,
                     eval_subset=0, lr=1e-4),
        "tweets": dict(kind="tweets", seq_len=48, steps=120, batch_size=16, train_subset=0,
                       eval_subset=0, lr=1e-4),
    })
    if size == "test":
        p.seeds = (0,)
        p.devices = 1  # one device (recipes.small_run): sharding is the other tests' job
        p.text_files = ("wikitext2/valid.txt",)
        p.mlm_eval_batches = 1
        p.tasks = ml_collections.ConfigDict({"sst2": p.tasks.sst2.to_dict()})  # one task
        p.batch_size = 8
        p.eval_batch_size = 16
        p.teacher_steps = 2
        p.upstream_steps = 4
        p.update_every = p.task_update_every = 1
        p.upstream_seq_len = 32
        for t in p.tasks.values():
            t.steps, t.seq_len, t.batch_size = 3, 32, 8
            t.train_subset, t.eval_subset = 64, 16
    elif size:
        raise ValueError(f"--config.size: {size!r} is not '' or 'test'")
    return p


def _run_p(p, *, preset: str, seed: int, seq_len: int, batch_size: int):
    """The fields recipes.small_run reads, for one run."""
    q = ml_collections.ConfigDict(p.to_dict())  # an unlocked copy (the flag's is locked)
    q.preset, q.seed, q.seq_len, q.batch_size = preset, seed, seq_len, batch_size
    return q


def _gmp(c, steps: int, p, update_every: int) -> None:
    """Cubic 0 -> target by p.prune_end of the run, masks frozen at p.prune_freeze."""
    c.sparsity.enabled = True
    c.sparsity.target = p.target
    c.sparsity.begin_step = 0
    c.sparsity.end_step = max(1, int(steps * p.prune_end))
    c.sparsity.update_every = update_every
    c.sparsity.freeze_step = max(c.sparsity.end_step + 1, int(steps * p.prune_freeze))


def _mlm_data(c, p) -> None:
    c.data.text_files = tuple(p.text_files)
    c.data.eval_files = tuple(p.eval_files)
    c.data.eval_batches = p.mlm_eval_batches
    c.data.split_seed = p.split_seed


def plan(p, root: pathlib.Path) -> dict:
    """name -> (config, workdir), in the order they run."""
    runs = {}
    teacher = config_base.base()
    teacher.task = "pretraining"
    teacher.init.path = p.base_model or str(paths.minilm_dir())
    teacher.init.init_missing_heads = True
    _mlm_data(teacher, p)
    teacher.optim.lr = p.teacher_lr
    recipes.small_run(teacher, _run_p(p, preset=presets.NONE, seed=p.seeds[0],
                                       seq_len=p.upstream_seq_len, batch_size=p.batch_size),
                      p.teacher_steps)
    runs["teacher"] = (teacher, root / "teacher")
    dense_model = str(root / "teacher" / "model")
    for seed in p.seeds:
        for variant in UPSTREAMS:
            c = recipes.upstream("bert-base-uncased", p.target)
            c.init.path = dense_model
            c.teacher.path = "" if variant == "no_kd" else dense_model
            c.distill.kd_weight = 0.0 if variant == "no_kd" else 0.5
            _mlm_data(c, p)
            c.optim.lr = p.upstream_lr
            recipes.small_run(c, _run_p(p, preset=presets.REFERENCE, seed=seed,
                                         seq_len=p.upstream_seq_len, batch_size=p.batch_size),
                              p.upstream_steps)
            _gmp(c, p.upstream_steps, p, p.update_every)
            runs[f"up_{variant}_s{seed}"] = (c, root / f"up_{variant}_s{seed}")
        for task, t in p.tasks.items():
            for row in reproduce_report.rows(p):
                runs[run_name(task, row, seed)] = _finetune(p, root, task, t, row, seed,
                                                            dense_model)
    return runs


def run_name(task: str, row: str, seed: int) -> str:
    return f"ft_{task}_{row}_s{seed}"


def _finetune(p, root, task, t, row, seed, dense_model):
    c = recipes.finetune(t.kind, task if t.kind == "glue" else "sst2")
    c.data.split_seed = p.split_seed
    steps = t.steps
    if row == "dense":
        c.init.path, c.sparsity.lock_pattern = dense_model, False
    elif row in ("task_gmp", "task_gmp_long"):
        c.init.path, c.sparsity.lock_pattern = dense_model, False
        steps = t.steps + (p.upstream_steps if row == "task_gmp_long" else 0)
    else:
        c.init.path = str(root / f"up_{UPSTREAM_OF[row]}_s{seed}" / "model")
    c.data.train_subset = t.train_subset
    c.data.eval_subset = t.eval_subset
    c.optim.lr = t.lr
    recipes.small_run(c, _run_p(p, preset=presets.REFERENCE, seed=seed, seq_len=t.seq_len,
                                batch_size=t.batch_size), steps)
    if row.startswith("task_gmp"):
        _gmp(c, steps, p, p.task_update_every)
    c.checkpoint.every = steps  # one save, at the end (the fine-tunes are short)
    return c, root / run_name(task, row, seed)


def dev_labels(runs: dict, p) -> dict:
    """task -> the dev labels every row of the task scores on (for the chance baselines)."""
    return {task: inputs.classification_examples(
        runs[run_name(task, "dense", p.seeds[0])][0])[1].labels for task in p.tasks}


def _say(msg: str) -> None:
    print(f"[reproduce] {msg}", flush=True)


def run(p, workdir) -> dict:
    root = harness.open_workdir(p, workdir)
    runs = plan(p, root)
    t0 = time.time()
    with logs.to_file(root):
        reports = harness.run_all(runs, _say, lambda r: reproduce_report.headline(r["eval"]),
                                  drop_checkpoints=True)
    summary = reproduce_report.summarise(p, reports, dev_labels(runs, p), RULES)
    summary["wall_time_s"] = round(time.time() - t0, 1)
    summary.update(cost.cost(reports.values()))
    return harness.save(root, summary, reproduce_report, "reproduce.png")


STUDY = harness.Study(name="reproduce", marker="reproduce", plot="reproduce.png", run=run,
                      markdown=reproduce_report.markdown, alt="dev accuracy per row and task",
                      doc=__doc__, config="configs/reproduce.py")


def main(argv=None) -> int:
    return harness.main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
