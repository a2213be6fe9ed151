"""Mask-learning methods compared on one protocol, at a scale two CPU cores can run:

  python -m prune_ofa_jax.study masks --workdir runs/masks [--doc]
  python -m prune_ofa_jax.study masks --config configs/masks.py:test --workdir DIR   (suite)

The real MiniLM-L6 fine-tuned on SST-2 and MRPC (the shared GLUE data; STS-B and MNLI, the
paper's other tasks, are not available offline), 2 seeds, each sparse row at 50 % and 90 %
of the encoder Linear kernels (q, k, v, attention output, FFN in/out; no pooler, no
embeddings). Rows, every one an ordinary fine-tuning run (train/loop.py) of the same steps:
  dense          full fine-tune (the family's head);
  feature        feature extraction: frozen encoder, only the head trains;
  magnitude      magnitude pruning of the frozen pre-trained weights (one shot), head trains
                 (the paper's magnitude baseline);
  gmp            gradual magnitude pruning during fine-tuning (weights train);
  movement_hard, movement_soft   movement pruning (weights and scores train);
  adaprune       Adapting by Pruning (frozen weights, learned masks);
  supermask      1[score > 0.01] with STE (frozen weights, learned masks).
Frozen-encoder rows use the paper's layer-mix head (models/heads.py; over mean-pooled
tokens, see `frozen_head`), the others the standard one. A finished run (report.json) is skipped and its checkpoints deleted (its
report and final model stay); an interrupted one resumes: rerunning the command continues
the study. WORKDIR/summary.json, table.md and masks.png hold the result; --doc writes them
into docs/studies/masks.md.
"""

from __future__ import annotations

import pathlib
import sys
import time

import ml_collections

from prune_ofa_jax import jsonio, logs, paths, presets, recipes
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.study import cost, harness, mask_methods_report

ROWS = ("dense", "feature", "magnitude", "gmp", "movement_hard", "movement_soft", "adaprune",
        "supermask")
DENSE_ROWS = mask_methods_report.DENSE_ROWS  # no sparsity: one run per task and seed
FROZEN_ROWS = ("feature", "magnitude", "adaprune", "supermask")
METHOD_OF = {"magnitude": "magnitude", "gmp": "magnitude", "movement_hard": "movement_hard",
             "movement_soft": "movement_soft", "adaprune": "adaprune",
             "supermask": "supermask"}


def get_config(size: str = "") -> ml_collections.ConfigDict:
    """size "": the study as measured in the README; "test": a few steps per run."""
    p = ml_collections.ConfigDict()
    p.size = size
    p.seeds = (0, 1)
    p.targets = (0.5, 0.9)
    p.rows = ROWS
    p.base_model = ""             # "" = the real MiniLM-L6 from the pip package
    p.tokenizer = ""
    p.data_root = ""
    p.batch_size = 16
    p.eval_batch_size = 128
    p.progress = False
    p.steps = 80                  # every run, every row (sized for ~75 min on 2 cores)
    p.checkpoint_every = 80       # one save (at the end); finished runs drop it, keep model/
    p.lr = 1e-4                   # rows whose weights train
    p.head_lr = 2e-3              # frozen-encoder rows: only the head (and scores) train
    # Their head: the paper's layer mix, over mean-pooled tokens rather than [CLS]: MiniLM
    # (all-MiniLM-L6-v2) was trained with mean pooling, and its [CLS] barely depends on the
    # input below the last layer (a logistic probe on layers 1-5's [CLS]: 51 % on SST-2 dev;
    # on their token means: 75-78 %). "layer_mix" is the paper's [CLS] version.
    p.frozen_head = "layer_mix_mean"
    p.update_every = 5            # GMP / hard movement: cubic 0 -> target over 60 % of the run
    p.include = (masks_lib.ENCODER_KERNELS,)
    p.movement = ml_collections.ConfigDict({"lr": 0.1, "threshold": 0.1})
    # Soft movement's sparsity is the L1 penalty's outcome: its final weight per target,
    # from two pilot runs on SST-2 (l1 = 50 -> 24 % after 90 steps, 400 -> 85 % after 70).
    p.soft_l1 = (120.0, 400.0)   # one per target
    # AdaPrune's alpha and gamma rescaled to 80 steps (README): alpha makes the data term
    # move theta beyond its init spread; gamma has 90 % of theta below 0 by ~2/3 of the run.
    p.adaprune = ml_collections.ConfigDict({"lr": 500.0, "gamma": 2.5e-4})
    p.supermask = ml_collections.ConfigDict({"lr": 1e-3, "init_scale": 0.02})
    p.tasks = ml_collections.ConfigDict({
        "sst2": dict(seq_len=48, train_subset=4000, eval_subset=0),
        "mrpc": dict(seq_len=64, train_subset=0, eval_subset=0)})
    if size == "test":
        p.seeds, p.targets, p.soft_l1 = (0,), (0.5,), (120.0,)
        p.tasks = ml_collections.ConfigDict({
            "sst2": dict(seq_len=32, train_subset=64, eval_subset=16)})
        p.batch_size, p.eval_batch_size, p.steps, p.update_every = 8, 16, 3, 1
        p.checkpoint_every = 3    # one save per run
        p.adaprune.gamma = 0.03   # every theta below 0 after one step: the stop at step 1
    elif size:
        raise ValueError(f"--config.size: {size!r} is not '' or 'test'")
    return p


run_name = mask_methods_report.run_name


def _row_config(p, task: str, t, row: str, target, seed: int):
    c = recipes.finetune("glue", task)
    c.init.path = p.base_model or str(paths.minilm_dir())
    c.init.init_missing_heads = True     # MiniLM is a bare encoder: fresh task heads
    c.sparsity.lock_pattern = False
    c.sparsity.include = tuple(p.include)
    c.data.train_subset, c.data.eval_subset = t.train_subset, t.eval_subset
    frozen = row in FROZEN_ROWS
    c.optim.lr = p.head_lr if frozen else p.lr
    c.model.cls_head = p.frozen_head if frozen else "default"
    c.sparsity.frozen_weights = frozen
    q = ml_collections.ConfigDict(p.to_dict())  # an unlocked copy (the CLI flag's is locked)
    q.preset, q.seed, q.seq_len = presets.REFERENCE, seed, t.seq_len
    recipes.small_run(c, q, p.steps)
    c.checkpoint.every = p.checkpoint_every
    if row in METHOD_OF:
        _sparsity(c, p, row, target)
    return c


def _sparsity(c, p, row: str, target) -> None:
    sp = c.sparsity
    sp.enabled, sp.method, sp.target = True, METHOD_OF[row], target
    sp.begin_step, sp.end_step = 0, max(1, int(0.6 * p.steps))
    sp.update_every, sp.freeze_step = p.update_every, max(sp.end_step + 1, int(0.8 * p.steps))
    if row == "magnitude":   # one shot at step 0, on the frozen pre-trained weights
        sp.initial, sp.end_step, sp.update_every, sp.freeze_step = target, 1, 1, 2
    sp.movement.update_from_flattened_dict(dict(p.movement))
    sp.movement.l1 = p.soft_l1[list(p.targets).index(target)]
    sp.adaprune.update_from_flattened_dict(dict(p.adaprune))
    sp.supermask.update_from_flattened_dict(dict(p.supermask))


def plan(p, root: pathlib.Path) -> dict:
    """name -> (config, workdir), in the order they run."""
    if len(p.soft_l1) != len(p.targets):
        raise ValueError(f"--config.soft_l1 {tuple(p.soft_l1)}: one L1 weight per target "
                         f"{tuple(p.targets)}")
    runs = {}
    for seed in p.seeds:
        for task, t in p.tasks.items():
            for row in p.rows:
                for target in ((None,) if row in DENSE_ROWS else p.targets):
                    name = run_name(task, row, target, seed)
                    runs[name] = (_row_config(p, task, t, row, target, seed), root / name)
    return runs


def _say(msg: str) -> None:
    print(f"[masks] {msg}", flush=True)


def run(p, workdir) -> dict:
    root = harness.open_workdir(p, workdir)
    runs = plan(p, root)
    t0 = time.time()
    with logs.to_file(root):
        reports = harness.run_all(runs, _say, mask_methods_report.headline, drop_checkpoints=True)
    summary = mask_methods_report.summarise(p, runs, reports)
    summary["wall_time_s"] = round(time.time() - t0, 1)
    summary.update(cost.cost(reports.values()))
    (root / "summary.json").write_text(jsonio.dumps(summary, indent=2))
    (root / "table.md").write_text(mask_methods_report.markdown(summary))
    mask_methods_report.plot(summary, root / "masks.png")
    print(mask_methods_report.markdown(summary), flush=True)
    return summary


STUDY = harness.Study(name="masks", marker="masks", plot="masks.png", run=run,
                      markdown=mask_methods_report.markdown, alt="mask methods", doc=__doc__,
                      config="configs/masks.py")


def main(argv=None) -> int:
    return harness.main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
