"""The runs of a Distiller experiment, shared by the search CLI and the study: a masked LM
for contextual augmentation (MiniLM + the MLM head of a short teacher-preparation run), a
task teacher (MiniLM-L6 fine-tuned), the student's initialisation (MiniLM's layers
{1, 3, 5}) and one student run per pipeline. Each is an ordinary training run
(train/loop.py) in its own workdir; a finished run (report.json) is skipped and an
interrupted one resumes, so rerunning a command continues it.

Every run reads its data through train/inputs.py with `data.split_seed` = p.split_seed, so
the tweets train/dev split and every subset are the same for every seed, every student and
the teacher (the run seed varies the initialisation and the data order only).

`settings()` holds the sizes; "test" is the tiny variant the suite runs.
"""

from __future__ import annotations

import json
import logging
import pathlib

import ml_collections

from prune_ofa_jax import config_base, paths, recipes
from prune_ofa_jax.distill import student
from prune_ofa_jax.kdsearch import candidates
from prune_ofa_jax.train import loop

log = logging.getLogger(__name__)

# task -> (dev metrics whose mean scores a run, label); the data sizes live in settings().
# MRPC: the mean of F1 and accuracy (GLUE's pair), since F1 alone rewards the majority class
# (68 % positive: predicting "paraphrase" everywhere scores F1 81).
METRIC = {"sst2": (("accuracy",), "SST-2 acc"), "mrpc": (("f1", "accuracy"), "MRPC F1/acc"),
          "tweets": (("f1",), "Tweets F1")}


def settings(size: str = "") -> ml_collections.ConfigDict:
    p = ml_collections.ConfigDict()
    p.size = size
    p.seeds = (0, 1, 2)
    p.split_seed = 0              # data.split_seed of every run: one tweets split, one subset
    p.base_model = ""             # "" = the real MiniLM-L6 (pip package)
    p.tokenizer = ""
    p.data_root = ""
    p.preset = ""                 # config_base's defaults (Adam eps 1e-6, ...)
    p.progress = False
    p.eval_batch_size = 128
    p.student_layers = (1, 3, 5)
    p.batch_size = 16             # student runs (rows per step, augmented rows included)
    p.steps = 80
    p.lr = 1e-4
    p.critic_lr_scale = 10.0       # fresh critics learn within a 100-step run (see README)
    p.teacher_batch_size = 16
    p.teacher_steps = 150
    p.teacher_lr = 1e-4
    p.mlm_steps = 100             # MLM head for contextual augmentation (teacher prep)
    p.mlm_lr = 2e-4
    p.mlm_seq_len = 48
    p.text_files = ("wikitext2/valid.txt", "text_state_union/*.txt")
    p.tasks = ml_collections.ConfigDict({
        # seq_len cuts the tail of 9 % of the SST-2 dev rows, 20 % of MRPC's, 13 % of tweets.
        # The Distiller study leaves MRPC out (configs/distiller_study.py); the search has it.
        "sst2": dict(kind="glue", seq_len=40, train_subset=0, eval_subset=0),
        "mrpc": dict(kind="glue", seq_len=64, train_subset=0, eval_subset=0),
        "tweets": dict(kind="tweets", seq_len=48, train_subset=0, eval_subset=0),
    })
    if size == "test":  # for a tiny 2-layer base model (the tests'); MiniLM works too
        p.seeds = (0,)
        p.devices = 1              # one device (recipes.small_run): sharding is tested elsewhere
        p.student_layers = (1,)
        p.eval_batch_size = 32
        p.batch_size = 8
        p.steps = 1                # one step, one checkpoint: the runs' mechanics, not learning
        p.teacher_batch_size = 8
        p.teacher_steps = 1
        p.mlm_steps = 1
        p.mlm_seq_len = 32
        p.tasks = ml_collections.ConfigDict({
            "mrpc": dict(kind="glue", seq_len=32, train_subset=48, eval_subset=16),
            "tweets": dict(kind="tweets", seq_len=32, train_subset=48, eval_subset=16)})
    elif size:
        raise ValueError(f"size {size!r} is not '' or 'test'")
    return p


def _small(c, p, *, seed: int, seq_len: int, batch: int, steps: int):
    q = ml_collections.ConfigDict(p.to_dict())  # an unlocked copy (the CLI flag's is locked)
    q.seed, q.seq_len, q.batch_size = seed, seq_len, batch
    return recipes.small_run(c, q, steps)


def base_model(p) -> str:
    return p.base_model or str(paths.minilm_dir())


def mlm_config(p):
    """MiniLM + fresh MLM/NSP heads trained on the shared English text (the demo's stage 1)."""
    c = config_base.base()
    c.task = "pretraining"
    c.init.path = base_model(p)
    c.init.init_missing_heads = True
    c.data.text_files = tuple(p.text_files)
    c.optim.lr = p.mlm_lr
    return _small(c, p, seed=0, seq_len=p.mlm_seq_len, batch=p.batch_size, steps=p.mlm_steps)


def _task_config(p, task: str):
    t = p.tasks[task]
    c = recipes.finetune(t.kind, task if t.kind == "glue" else "sst2")
    c.data.train_subset, c.data.eval_subset = t.train_subset, t.eval_subset
    c.data.split_seed = p.split_seed
    c.sparsity.lock_pattern = False
    c.init.init_missing_heads = True  # MiniLM and the students are bare encoders: fresh heads
    return c


def teacher_config(p, task: str):
    """MiniLM-L6 (all six layers) fine-tuned on the task: the teacher."""
    c = _task_config(p, task)
    c.init.path = base_model(p)
    c.optim.lr = p.teacher_lr
    return _small(c, p, seed=0, seq_len=p.tasks[task].seq_len, batch=p.teacher_batch_size,
                  steps=p.teacher_steps)


def student_config(p, task: str, pipe: dict, seed: int, dirs: dict):
    """One student run: init from the layer-selected MiniLM, the pipeline's objective."""
    c = _task_config(p, task)
    c.init.path = str(dirs["student"])
    c.teacher.path = str(dirs["teacher"])
    c.optim.lr = p.lr
    c.distill.critic_lr_scale = p.critic_lr_scale
    _small(c, p, seed=seed, seq_len=p.tasks[task].seq_len, batch=p.batch_size, steps=p.steps)
    candidates.apply(c, pipe, str(dirs.get("mlm", "")))
    if c.augment.kinds:  # augment only as many rows as the run draws (the MLM is slow)
        c.augment.pool_rows = p.steps * (c.train.batch_size - c.train.batch_size // 2)
    return c


def make_student(p, root: pathlib.Path) -> pathlib.Path:
    return student.make(base_model(p), list(p.student_layers), root / "student_init")


def run_once(cfg, wd: pathlib.Path, label: str) -> dict:
    """loop.run unless `wd` holds a finished run; one console line either way."""
    done = wd / "report.json"
    if done.exists():
        report = json.loads(done.read_text())
        log.info("%s: done before (%s)", label, wd)
        return report
    log.info("%s: %d steps -> %s", label, cfg.train.steps, wd)
    report = loop.run(cfg, wd)
    log.info("%s: %.0f s, %s", label, report["wall_time_s"],
             ", ".join(f"{k}={v:.4f}" for k, v in report["eval"].items()
                       if k in ("accuracy", "f1")))
    return report


def prepare(p, root: pathlib.Path, task: str, need_mlm: bool = True) -> dict:
    """The shared inputs of a task's student runs: {"student", "teacher", "mlm"} dirs and
    the teacher's report."""
    dirs = {"student": make_student(p, root)}
    if need_mlm:
        run_once(mlm_config(p), root / "mlm", "masked LM for contextual augmentation")
        dirs["mlm"] = root / "mlm" / "model"
    rep = run_once(teacher_config(p, task), root / f"teacher_{task}", f"teacher {task}")
    dirs["teacher"] = root / f"teacher_{task}" / "model"
    dirs["teacher_report"] = rep
    return dirs


def score(task: str, report: dict) -> float:
    return float(sum(report["eval"][k] for k in METRIC[task][0]) / len(METRIC[task][0]))
