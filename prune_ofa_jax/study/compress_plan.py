"""The compression study's training runs, each an ordinary train/loop.py run in
OUT/runs/<name> (a finished one, with report.json, is skipped; an interrupted one resumes).

From the demo's workdir (configs/demo.py; `python -m prune_ofa_jax.main --config
configs/demo.py --workdir DEMO`): the prepared dense teacher (1_teacher/model) and the Prune
OFA 80 % upstream model (2_prune/model); its SST-2 runs are the SST-2 models of the study.
Per other task: `dense` (the teacher fine-tuned), `sparse` (Prune OFA, pattern locked),
`<model>_int8` (8-bit QAT of <model>). The sweep, on one task, at each sparsity s:
  before  Prune OFA upstream to s (the demo's stage 2 recipe), then the locked fine-tune;
  after   task-specific GMP to s while fine-tuning the dense fine-tuned model (no upstream).
"""

from __future__ import annotations

import copy
import pathlib

from prune_ofa_jax import recipes

# seq_len per task (SST-2 keeps the demo's 48): MRPC pairs need more, tweets fit in 64.
SEQ_LEN = {"sst2": 48, "mrpc": 128, "tweets": 64}
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


def sweep_runs(p, demo: pathlib.Path, root: pathlib.Path, task: str, levels,
               test: bool = False) -> dict:
    """{("before"|"after", s): [(config or None, run dir), ...]}, the last run is evaluated."""
    pt = _p(p, task, test)
    teacher = str(demo / "1_teacher" / "model")
    reuse = task == p.glue_task and _demo_done(demo, "dense")
    dense_ft = (None, demo / DEMO_SST2["dense"]) if reuse else (
        _finetune_config(pt, task, teacher, False, p.finetune_steps), root / f"{task}_dense")
    out = {}
    for s in levels:
        tag = f"{int(round(100 * s))}"
        if s == 0:
            out[("before", s)] = out[("after", s)] = [dense_ft]
            continue
        if task == p.glue_task and abs(s - p.target) < 1e-9 and _demo_done(demo, "sparse"):
            out[("before", s)] = [(None, demo / "2_prune"), (None, demo / DEMO_SST2["sparse"])]
        else:
            up = root / f"sweep_up_{tag}"
            out[("before", s)] = [
                (_upstream_config(pt, teacher, s), up),
                (_finetune_config(pt, task, str(up / "model"), True, p.finetune_steps),
                 root / f"sweep_{task}_before_{tag}")]
        c = _finetune_config(pt, task, str(dense_ft[1] / "model"), False, p.finetune_steps)
        c.sparsity.enabled = True
        c.sparsity.target = s
        c.sparsity.begin_step = 0
        c.sparsity.end_step = int(p.finetune_steps * 0.6)
        c.sparsity.update_every = p.update_every
        c.sparsity.freeze_step = int(p.finetune_steps * 0.8)
        out[("after", s)] = [dense_ft, (c, root / f"sweep_{task}_after_{tag}")]
    return out
