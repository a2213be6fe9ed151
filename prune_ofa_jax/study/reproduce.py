"""The paper's claim as a comparison, at a scale two CPU cores can run:

  python -m prune_ofa_jax.study reproduce --workdir runs/reproduce [--doc]
  python -m prune_ofa_jax.study reproduce --workdir DIR --config configs/reproduce.py:test

Dense model: the real MiniLM-L6 after teacher preparation (fresh MLM/NSP heads), shared by
every row. Upstream: the shared English text. Rows, each on SST-2, MRPC and the SQuAD train
subset, for every seed:
  dense        fine-tune the dense model (the reference point);
  prune_ofa    Prune OFA: upstream GMP + KD on every token (preset reference), then sparse
               transfer with the pattern locked;
  gmp_no_kd    the same upstream without distillation (GMP on the MLM/NSP loss only);
  prune_ofa_fast  Prune OFA with KD at the masked positions only (preset fast);
  task_gmp     GMP during fine-tuning from the dense model, same sparsity, as many steps as
               prune_ofa's upstream + fine-tune (the baseline the paper beats).
Fine-tunes use no task teacher (every row alike). Each run is an ordinary training run
(train/loop.py) in WORKDIR/<name>; a finished run (report.json) is skipped and an interrupted
one resumes, so rerunning the command continues the study. WORKDIR/summary.json, table.md
and reproduce.png hold the result; --doc writes them into docs/studies/reproduce.md.
"""

from __future__ import annotations

import pathlib
import sys
import time

import ml_collections

from prune_ofa_jax import config_base, jsonio, logs, paths, presets, recipes
from prune_ofa_jax.study import cost, harness, reproduce_report

ROWS, UPSTREAM_OF = reproduce_report.ROWS, reproduce_report.UPSTREAM_OF
PRESET_OF = {"kd_all": presets.REFERENCE, "no_kd": presets.REFERENCE,
             "kd_masked": presets.FAST}


def get_config(size: str = "") -> ml_collections.ConfigDict:
    """size "": the study as measured in the README; "test": a few steps per run."""
    p = ml_collections.ConfigDict()
    p.size = size
    p.seeds = (0, 1)
    p.target = 0.8
    p.base_model = ""             # "" = the real MiniLM-L6 from the pip package
    p.tokenizer = ""
    p.data_root = ""
    p.text_files = ("wikitext2/valid.txt", "text_state_union/*.txt")
    p.batch_size = 16
    p.eval_batch_size = 128
    p.progress = False            # one line per run instead of a bar each
    p.teacher_steps = 100         # teacher preparation (shared by every row and seed)
    p.teacher_lr = 2e-4
    p.upstream_steps = 150
    p.upstream_seq_len = 48
    p.upstream_lr = 1e-4
    p.update_every = 9            # GMP: 0 -> target over 60 % of a run, frozen at 80 %
    p.tasks = ml_collections.ConfigDict({  # steps: the fine-tune's (task_gmp: + upstream's)
        "sst2": dict(kind="glue", seq_len=48, steps=200, train_subset=4000, eval_subset=0,
                     lr=1e-4),
        "mrpc": dict(kind="glue", seq_len=64, steps=350, train_subset=0, eval_subset=0,
                     lr=1e-4),
        "squad": dict(kind="squad", seq_len=128, steps=150, train_subset=0, eval_subset=300,
                      lr=1.5e-4),
    })
    if size == "test":
        p.tasks = ml_collections.ConfigDict({"sst2": p.tasks.sst2.to_dict()})  # one task
        p.batch_size = 8
        p.eval_batch_size = 32
        p.teacher_steps = 2
        p.upstream_steps = 4
        p.update_every = 1
        p.upstream_seq_len = 32
        for t in p.tasks.values():
            t.steps = 3
            t.seq_len = 64 if t.kind == "squad" else 32
            t.train_subset = 64
            t.eval_subset = 16
    elif size:
        raise ValueError(f"--config.size: {size!r} is not '' or 'test'")
    return p


def _run_p(p, *, preset: str, seed: int, seq_len: int):
    """The fields recipes.small_run reads, for one run."""
    q = ml_collections.ConfigDict(p.to_dict())  # an unlocked copy (the flag's is locked)
    q.preset, q.seed, q.seq_len = preset, seed, seq_len
    return q


def _gmp(c, steps: int, p) -> None:
    c.sparsity.enabled = True
    c.sparsity.target = p.target
    c.sparsity.begin_step = 0
    c.sparsity.end_step = max(1, int(steps * 0.6))
    c.sparsity.update_every = p.update_every
    c.sparsity.freeze_step = max(c.sparsity.end_step + 1, int(steps * 0.8))


def plan(p, root: pathlib.Path) -> dict:
    """name -> (config, workdir), in the order they run."""
    runs = {}
    teacher = config_base.base()
    teacher.task = "pretraining"
    teacher.init.path = p.base_model or str(paths.minilm_dir())
    teacher.init.init_missing_heads = True
    teacher.data.text_files = tuple(p.text_files)
    teacher.optim.lr = p.teacher_lr
    recipes.small_run(teacher, _run_p(p, preset=presets.NONE, seed=p.seeds[0],
                                       seq_len=p.upstream_seq_len), p.teacher_steps)
    runs["teacher"] = (teacher, root / "teacher")
    dense_model = str(root / "teacher" / "model")
    for seed in p.seeds:
        for variant, preset in PRESET_OF.items():
            c = recipes.upstream("bert-base-uncased", p.target)
            c.init.path = dense_model
            c.teacher.path = "" if variant == "no_kd" else dense_model
            c.distill.kd_weight = 0.0 if variant == "no_kd" else 0.5
            c.data.text_files = tuple(p.text_files)
            c.optim.lr = p.upstream_lr
            recipes.small_run(c, _run_p(p, preset=preset, seed=seed,
                                         seq_len=p.upstream_seq_len), p.upstream_steps)
            _gmp(c, p.upstream_steps, p)
            runs[f"up_{variant}_s{seed}"] = (c, root / f"up_{variant}_s{seed}")
        for task, t in p.tasks.items():
            for row in ROWS:
                runs[f"ft_{task}_{row}_s{seed}"] = _finetune(p, root, task, t, row, seed,
                                                            dense_model)
    return runs


def _finetune(p, root, task, t, row, seed, dense_model):
    c = recipes.finetune(t.kind, task if t.kind == "glue" else "sst2")
    steps = t.steps
    if row == "dense":
        c.init.path, c.sparsity.lock_pattern = dense_model, False
    elif row == "task_gmp":
        c.init.path, c.sparsity.lock_pattern = dense_model, False
        steps = p.upstream_steps + t.steps
        _gmp(c, steps, p)
    else:
        c.init.path = str(root / f"up_{UPSTREAM_OF[row]}_s{seed}" / "model")
    c.data.train_subset = t.train_subset
    c.data.eval_subset = t.eval_subset
    c.optim.lr = t.lr
    recipes.small_run(c, _run_p(p, preset=presets.REFERENCE, seed=seed, seq_len=t.seq_len),
                       steps)
    return c, root / f"ft_{task}_{row}_s{seed}"


def _say(msg: str) -> None:
    print(f"[reproduce] {msg}", flush=True)


def run(p, workdir) -> dict:
    root = harness.open_workdir(p, workdir)
    runs = plan(p, root)
    t0 = time.time()
    with logs.to_file(root):
        reports = harness.run_all(runs, _say, lambda r: reproduce_report.headline(r["eval"]))
    summary = reproduce_report.summarise(p, reports)
    summary["wall_time_s"] = round(time.time() - t0, 1)
    summary.update(cost.cost(reports.values()))
    (root / "summary.json").write_text(jsonio.dumps(summary, indent=2))
    (root / "table.md").write_text(reproduce_report.markdown(summary))
    reproduce_report.plot(summary, root / "reproduce.png")
    print(reproduce_report.markdown(summary), flush=True)
    return summary


STUDY = harness.Study(name="reproduce", marker="reproduce", plot="reproduce.png", run=run,
                      markdown=reproduce_report.markdown, alt="retention per task", doc=__doc__,
                      config="configs/reproduce.py")


def main(argv=None) -> int:
    return harness.main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
