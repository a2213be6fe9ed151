"""Second-order pruning (OBS / oBERT) against magnitude at a scale two CPU cores can run:

  python -m prune_ofa_jax.study obs --workdir runs/obs [--doc]
  python -m prune_ofa_jax.study obs --config configs/obs_study.py:test --workdir DIR  (suite)

On SST-2 and the disaster tweets, with the real MiniLM-L6:
1. data: one fixed train/dev split per task for every run and seed, written as SST-2-layout
   TSVs under WORKDIR/data/<task>/ (SST-2: a seeded train subset, the full dev set; tweets:
   the 90/10 stratified split of train.csv that `data.kind=tweets` makes with seed 0,
   whitespace normalised), so the seeds vary initialisation of nothing but the data order
   and dropout, and no dev row was ever a teacher's training row;
2. a dense teacher per task: MiniLM fine-tuned on the task (the one-shot input, and the
   gradual runs' initialisation and KD teacher);
3. one-shot (prune_ofa_jax/prune_once.py): the teacher pruned to 50-90 % without
   retraining by magnitude, by OBS with one Fisher, and by OBS re-estimating the Fisher
   along the way (`oneshot.recompute`);
4. gradual, downstream: from the teacher, GMP and OBS to each target over the same steps
   and the same cubic schedule, KD from the teacher, `seeds` seeds each.
Every finished piece is skipped on a rerun (a run's report.json, a sweep's oneshot.json).
`--config.seeds='()'` runs steps 1-3 only (the one-shot result, without the gradual runs).
WORKDIR/summary.json, table.md and obs.png hold the result; --doc writes them into
docs/studies/obs.md. The decision rule (config.rule) is stated before the runs.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import ml_collections
import numpy as np

from prune_ofa_jax import logs, paths, presets, prune_once, recipes
from prune_ofa_jax.data import classification, common, disaster_tweets, glue
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.study import harness, obs_report

METHODS = {"gmp": "magnitude", "obs": "obs"}
TWEETS_CSV = "disaster_tweets/train.csv"


def get_config(size: str = "") -> ml_collections.ConfigDict:
    """size "": the study as measured on its page; "test": seconds, the suite's."""
    p = ml_collections.ConfigDict()
    p.size = size
    p.base_model = ""          # "" = the real MiniLM-L6 from the pip package
    p.tokenizer = ""
    p.data_root = ""           # where the task files are read ("" = the shared data)
    p.eval_batch_size = 128
    p.progress = False
    p.rule = ("OBS ahead of GMP at 90 %: on each task, the 95 % t interval over seeds of the "
              "paired dev-accuracy difference OBS - GMP (same seed, same data order) lies "
              "above 0")
    p.rule_target = 0.9
    # train_rows / dev_rows: 0 = all of the split
    p.tasks = ml_collections.ConfigDict({
        "sst2": dict(seq_len=64, train_rows=8000, dev_rows=0),
        "tweets": dict(seq_len=64, train_rows=0, dev_rows=0)})
    p.teacher = ml_collections.ConfigDict(dict(steps=400, batch_size=32, lr=1e-4))
    p.oneshot = ml_collections.ConfigDict(dict(
        levels=(0.5, 0.6, 0.7, 0.8, 0.9), recompute=(1, 9), num_grads=256, batch_size=16,
        distribution="uniform"))
    p.obs = ml_collections.ConfigDict(dict(block_size=32, damp=0.01, num_grads=16))
    # Gradual: the same schedule for both methods: cubic from `initial` at begin_step (the
    # first prune, after a window of num_grads steps) to the target at end_step, masks
    # frozen after it, then recovery to `steps`; KD 0.5 / 0.5 at T = 2 from the teacher.
    p.gradual = ml_collections.ConfigDict(dict(
        steps=100, batch_size=16, lr=5e-5, initial=0.5, begin_step=16, end_step=64,
        update_every=16, kd_weight=0.5, temperature=2.0))
    p.seeds = (0, 1, 2)        # () = the teachers and the one-shot sweeps only
    p.targets = (0.8, 0.9)
    if size == "test":  # one task (the tweets' split has a test of its own), 3 tiny runs,
        # at the :test recipes' batch and length (their steps compile once for the suite)
        p.tasks = ml_collections.ConfigDict({
            "sst2": dict(seq_len=32, train_rows=64, dev_rows=32)})
        p.teacher.update(steps=2, batch_size=16)
        p.oneshot.update(levels=(0.5, 0.9), recompute=(1, 2), num_grads=2, batch_size=16)
        p.obs.update(block_size=8, num_grads=2)
        p.gradual.update(steps=4, batch_size=16, initial=0.5, begin_step=2, end_step=3,
                         update_every=1)
        p.seeds, p.targets, p.rule_target = (0,), (0.9,), 0.9
        p.devices = 1  # one device (recipes.small_run): sharding has tests of its own
    elif size:
        raise ValueError(f"--config.size: {size!r} is not '' or 'test'")
    return p


def run_name(task: str, row: str, target=None, seed: int = 0) -> str:
    return f"{task}_{row}" if target is None else f"{task}_{row}_{round(100 * target)}_s{seed}"


# --- data ----------------------------------------------------------------------------------
def _source(p) -> pathlib.Path:
    return pathlib.Path(p.data_root) if p.data_root else paths.data_root()


def _sst2(root: pathlib.Path, split: str) -> classification.Examples:
    spec = glue.task("sst2")
    for data_dir in (root / "glue", root):
        try:
            glue.task_file(spec, split, data_dir)
        except common.DataError:
            continue
        return glue.load("sst2", split, data_dir=data_dir)
    return glue.load("sst2", split, data_dir=root)  # raises the error naming the paths


def _rows(examples, n: int):
    if not n or n >= len(examples):
        return examples
    return examples.subset(np.sort(np.random.default_rng(0).permutation(len(examples))[:n]))


def _write_tsv(path: pathlib.Path, examples) -> None:
    lines = ["sentence\tlabel"] + [f"{' '.join(t.split())}\t{int(y)}"
                                   for t, y in zip(examples.text_a, examples.labels)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def task_data(p, root: pathlib.Path, task: str) -> pathlib.Path:
    """The task's fixed split as an SST-2-layout data root (written once)."""
    out = root / "data" / task
    if (out / "sst2" / "dev.tsv").is_file():
        return out
    t, src = p.tasks[task], _source(p)
    if task == "sst2":
        train, dev = _sst2(src, "train"), _sst2(src, "dev")
    elif task == "tweets":
        train, dev = disaster_tweets.train_dev_split(disaster_tweets.load(src / TWEETS_CSV),
                                                     0.1, 0)
    else:
        raise ValueError(f"--config.tasks: {task!r} is not sst2 or tweets")
    (out / "sst2").mkdir(parents=True, exist_ok=True)
    _write_tsv(out / "sst2" / "train.tsv", _rows(train, t.train_rows))
    _write_tsv(out / "sst2" / "dev.tsv", _rows(dev, t.dev_rows))
    return out


def dev_labels(data_dir: pathlib.Path) -> np.ndarray:
    return np.asarray(glue.load("sst2", "dev", data_dir=data_dir).labels)


# --- runs --------------------------------------------------------------------------------
def _base(p, data_dir, task: str, steps: int, batch_size: int, seed: int, lr: float):
    c = recipes.finetune("glue", "sst2")
    c.sparsity.lock_pattern = False
    q = ml_collections.ConfigDict(dict(
        preset=presets.FAST, seed=seed, data_root=str(data_dir), seq_len=p.tasks[task].seq_len,
        tokenizer=p.tokenizer, batch_size=batch_size, eval_batch_size=p.eval_batch_size,
        progress=p.progress, devices=p.get("devices", 0)))
    recipes.small_run(c, q, steps)
    c.optim.lr = lr
    c.checkpoint.every = steps  # one save, at the end (dropped once the run is done)
    return c


def teacher_config(p, data_dir, task: str):
    t = p.teacher
    c = _base(p, data_dir, task, t.steps, t.batch_size, 0, t.lr)
    c.init.path = p.base_model or str(paths.minilm_dir())
    c.init.init_missing_heads = True  # MiniLM is a bare encoder: a fresh task head
    return c


def gradual_config(p, data_dir, task: str, teacher_dir, method: str, target: float,
                   seed: int):
    g = p.gradual
    c = _base(p, data_dir, task, g.steps, g.batch_size, seed, g.lr)
    c.init.path = c.teacher.path = str(pathlib.Path(teacher_dir) / "model")
    c.distill.kd_weight, c.distill.task_weight = g.kd_weight, 1.0 - g.kd_weight
    c.distill.temperature = g.temperature
    sp = c.sparsity
    sp.update(enabled=True, method=METHODS[method], target=target, initial=g.initial,
              begin_step=g.begin_step, end_step=g.end_step, update_every=g.update_every,
              freeze_step=g.end_step + 1, distribution="uniform", regrow=False,
              include=(masks_lib.ENCODER_KERNELS,))
    sp.obs.update(block_size=p.obs.block_size, damp=p.obs.damp, num_grads=p.obs.num_grads)
    return c


def oneshot_settings(p, data_dir, task: str, teacher_dir) -> prune_once.Settings:
    o = p.oneshot
    return prune_once.Settings(
        model=str(pathlib.Path(teacher_dir) / "model"), task="sst2",
        levels=tuple(o.levels), recompute=tuple(o.recompute), num_grads=o.num_grads,
        batch_size=o.batch_size, block_size=p.obs.block_size, damp=p.obs.damp,
        distribution=o.distribution, seq_len=p.tasks[task].seq_len,
        eval_batch_size=p.eval_batch_size, data_root=str(data_dir), tokenizer=p.tokenizer)


def _say(msg: str) -> None:
    print(f"[obs] {msg}", flush=True)


def _oneshot(p, root, task, data_dir, teacher_dir) -> dict:
    out = root / run_name(task, "oneshot")
    done = out / "oneshot.json"
    if done.exists():
        _say(f"{out.name}: done before, skipping")
        return json.loads(done.read_text())
    _say(f"{out.name}: one-shot sweep -> {out}")
    table = prune_once.sweep(oneshot_settings(p, data_dir, task, teacher_dir),
                             say=lambda m: _say(f"{out.name}: {m}"))
    prune_once.write(table, out)
    _say(f"{out.name} done in {table['wall_time_s']:.0f} s")
    return table


def run(p, workdir) -> dict:
    root = harness.open_workdir(p, workdir)
    t0 = time.time()
    with logs.to_file(root):
        data = {task: task_data(p, root, task) for task in p.tasks}
        teachers = {task: (teacher_config(p, data[task], task), root / run_name(task, "teacher"))
                    for task in p.tasks}
        reports = harness.run_all({run_name(t, "teacher"): v for t, v in teachers.items()},
                                  _say, obs_report.headline, drop_checkpoints=True)
        oneshot = {task: _oneshot(p, root, task, data[task], teachers[task][1])
                   for task in p.tasks}
        runs = {}
        for seed in p.seeds:
            for task in p.tasks:
                for target in p.targets:
                    for method in METHODS:
                        name = run_name(task, method, target, seed)
                        runs[name] = (gradual_config(p, data[task], task, teachers[task][1],
                                                     method, target, seed), root / name)
        reports.update(harness.run_all(runs, _say, obs_report.headline, drop_checkpoints=True))
    labels = {task: dev_labels(data[task]) for task in p.tasks}
    summary = obs_report.summarise(p, reports, oneshot, labels)
    summary["wall_time_s"] = round(time.time() - t0, 1)
    return harness.save(root, summary, obs_report, "obs.png")


STUDY = harness.Study(name="obs", marker="obs", plot="obs.png", run=run,
                      markdown=obs_report.markdown, alt="OBS vs magnitude", doc=__doc__,
                      config="configs/obs_study.py")


def main(argv=None) -> int:
    return harness.main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
