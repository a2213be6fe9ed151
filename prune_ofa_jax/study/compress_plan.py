"""The compression study's training runs, each an ordinary train/loop.py run in
OUT/runs/<name> (a finished one, with report.json, is skipped; an interrupted one resumes).

From the demo's workdir (configs/demo.py; `python -m prune_ofa_jax.main --config
configs/demo.py --workdir DEMO`): the prepared dense teacher (1_teacher/model) and the Prune
OFA 80 % upstream model (2_prune/model); its SST-2 runs are the SST-2 models of the study.
Per other task: `dense` (the teacher fine-tuned), `sparse` (Prune OFA, pattern locked),
`<model>_int8` (8-bit QAT of <model>). The sweep, on one task, at each sparsity s (F = the
demo's fine-tune steps):
  before    Prune OFA upstream to s (the demo's stage 2 recipe), then the locked fine-tune
            (F task steps);
  after     step-matched: one fine-tune of the dense teacher, F task steps, dense for the
            first half, then task GMP to s (target at 0.8 F, frozen at 0.9 F);
  after_2x  compute-matched (an extra row): the dense fine-tuned model (F steps), then F more
            steps of task GMP to s (target at 0.6 F, frozen at 0.8 F): 2 F task steps against
            before's F task steps plus its upstream steps.
"""

from __future__ import annotations

import copy
import pathlib

from prune_ofa_jax import recipes

# seq_len per task (SST-2 keeps the demo's 48); tweets fit in 64.
SEQ_LEN = {"sst2": 48, "tweets": 64}
ARMS = ("before", "after", "after_2x")
DEMO_SST2 = {"dense": "3_finetune_dense", "sparse": "3_finetune_sparse",
             "sparse_int8": "4_qat"}


def _demo_done(demo: pathlib.Path, model: str) -> bool:
    return model in DEMO_SST2 and (demo / DEMO_SST2[model] / "report.json").is_file()


def _p(p, task: str, test: bool):
    q = copy.deepcopy(p)
    if not test:
        q.seq_len = SEQ_LEN[task]
    return q


def _finetune_config(p, task: str, init: str, lock: bool, steps: int):
    if task == "tweets":
        c = recipes.finetune("glue", "sst2")
        c.data.kind = "tweets"
        c.num_labels = 2
    else:
        c = recipes.finetune("glue", task)
    c.init.path = init
    c.sparsity.lock_pattern = lock
    c.data.train_subset = p.train_subset
    c.optim.lr = p.finetune_lr
    return recipes.small_run(c, p, steps)


def _qat_config(p, task: str, init: str):
    c = _finetune_config(p, task, init, True, p.qat_steps)
    c.quant.enabled = True
    c.quant.ema_decay = p.qat_ema_decay
    c.optim.lr = p.qat_lr
    return c


def model_runs(p, demo: pathlib.Path, root: pathlib.Path, models, tasks,
               test: bool = False) -> dict:
    """{(model, task): (config or None, run dir)}; None = an existing demo run, reused."""
    out = {}
    teacher, upstream = str(demo / "1_teacher" / "model"), str(demo / "2_prune" / "model")
    for task in tasks:
        pt = _p(p, task, test)
        for model in models:
            if task == p.glue_task and _demo_done(demo, model):
                out[(model, task)] = (None, demo / DEMO_SST2[model])
                continue
            base = model[:-len("_int8")] if model.endswith("_int8") else model
            base_dir = out.get((base, task), (None, root / f"{task}_{base}"))[1]
            wd = root / f"{task}_{model}"
            if model.endswith("_int8"):
                c = _qat_config(pt, task, str(base_dir / "model"))
            elif model == "dense":
                c = _finetune_config(pt, task, teacher, False, p.finetune_steps)
            elif model == "sparse":
                c = _finetune_config(pt, task, upstream, True, p.finetune_steps)
            else:
                raise ValueError(f"--models: unknown model {model!r}; dense, sparse, "
                                 "dense_int8, sparse_int8")
            out[(model, task)] = (c, wd)
    return out


def _upstream_config(p, teacher: str, target: float):
    prune = recipes.upstream("bert-base-uncased", target)
    prune.init.path = prune.teacher.path = teacher
    prune.data.text_files = tuple(p.text_files)
    prune.sparsity.end_step = int(p.prune_steps * 0.6)
    prune.sparsity.update_every = p.update_every
    prune.sparsity.freeze_step = int(p.prune_steps * 0.8)
    prune.optim.lr = p.prune_lr
    return recipes.small_run(prune, p, p.prune_steps)


def _task_gmp(c, p, target: float, begin: int, steps: int):
    """Task GMP on fine-tune config `c`: 0 at `begin`, `target` after 60 % of the remaining
    steps, masks frozen after 80 %."""
    c.sparsity.enabled = True
    c.sparsity.target = target
    c.sparsity.begin_step = begin
    c.sparsity.end_step = max(begin + int((steps - begin) * 0.6), begin + 1)
    c.sparsity.update_every = p.update_every
    c.sparsity.freeze_step = max(begin + int((steps - begin) * 0.8), c.sparsity.end_step + 1)
    return c


def sweep_runs(p, demo: pathlib.Path, root: pathlib.Path, task: str, levels,
               test: bool = False, arms=ARMS) -> dict:
    """{(arm, s): [(config or None, run dir), ...]}, the last run is evaluated; arms of
    ARMS (the module docstring)."""
    pt = _p(p, task, test)
    teacher = str(demo / "1_teacher" / "model")
    reuse = task == p.glue_task and _demo_done(demo, "dense")
    dense_ft = (None, demo / DEMO_SST2["dense"]) if reuse else (
        _finetune_config(pt, task, teacher, False, p.finetune_steps), root / f"{task}_dense")
    out = {}
    f = p.finetune_steps
    for s in levels:
        tag = f"{int(round(100 * s))}"
        if s == 0:
            out.update({(arm, s): [dense_ft] for arm in arms})
            continue
        demo_sparse = (task == p.glue_task and abs(s - p.target) < 1e-9
                       and _demo_done(demo, "sparse"))
        if "before" in arms and demo_sparse:
            out[("before", s)] = [(None, demo / "2_prune"), (None, demo / DEMO_SST2["sparse"])]
        elif "before" in arms:
            up = root / f"sweep_up_{tag}"
            out[("before", s)] = [
                (_upstream_config(pt, teacher, s), up),
                (_finetune_config(pt, task, str(up / "model"), True, f),
                 root / f"sweep_{task}_before_{tag}")]
        if "after" in arms:
            c = _task_gmp(_finetune_config(pt, task, teacher, False, f), p, s, f // 2, f)
            out[("after", s)] = [(c, root / f"sweep_{task}_matched_{tag}")]
        if "after_2x" in arms:
            c = _task_gmp(_finetune_config(pt, task, str(dense_ft[1] / "model"), False, f), p,
                          s, 0, f)
            out[("after_2x", s)] = [dense_ft, (c, root / f"sweep_{task}_after_{tag}")]
    return out
