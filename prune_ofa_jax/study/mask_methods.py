"""Learned masks (Adapting by Pruning and its rivals) on one protocol that can separate them:

  python -m prune_ofa_jax.study masks --workdir runs/masks [--doc]
  python -m prune_ofa_jax.study masks --config configs/masks.py:test --workdir DIR   (suite)

The real MiniLM-L6 on SST-2 (its full 67k training rows, the full 872-row dev set), 3 seeds,
every sparse row at 50 % of the encoder Linear kernels (q, k, v, attention output, FFN in/out;
no pooler, no embeddings). Every run is an ordinary fine-tuning run (train/loop.py).

1. Mask learning (`steps` per run), each method as its paper runs it:
     adaprune   Adapting by Pruning (frozen weights, learned masks; alpha/gamma rescaled,
                see docs/studies/masks.md), the head trained along;
     supermask  1[score > 0.01] with STE (frozen weights, learned masks), head along;
     movement   hard movement pruning (weights and scores train, cubic schedule to 50 %);
     dense      (only when listed in `rows`) full fine-tune, a reference.
2. A fresh head on a fixed mask (`head_steps` per run, `fresh_head`, frozen encoder), every
   run initialised from the pre-trained encoder saved without a head, so per seed every row
   starts from the same head and reads the same batches and rows differ by their mask alone:
     feature    feature extraction: no mask;
     random     a seeded random mask (sparsity/methods/random_mask.py), one per seed: the
                baseline every learned mask must beat;
     magnitude  one-shot magnitude pruning of the frozen pre-trained weights;
     and for adaprune, supermask and movement their final mask from phase 1, applied to the
     pre-trained weights (movement's too, not its fine-tuned ones) in the saved encoder.

A finished run (report.json) is skipped and its checkpoints deleted (its report and final
model stay); an interrupted one resumes: rerunning the command continues the study.
WORKDIR/summary.json, table.md and masks.png hold the result; --doc writes them into
docs/studies/masks.md. The comparisons and their rules are stated in `get_config`.
"""

from __future__ import annotations

import pathlib
import shutil
import sys
import time

import jax
import ml_collections
import numpy as np

from prune_ofa_jax import errors, logs, paths, presets, recipes
from prune_ofa_jax.convert import loader, params_ckpt
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.study import cost, harness, mask_methods_report
from prune_ofa_jax.train import inputs

ROWS = mask_methods_report.ROWS
FIXED = mask_methods_report.FIXED          # phase 2 only: masks fixed from step 0
LEARNED = mask_methods_report.LEARNED      # phase 1, then a fresh head on the final mask
MASKED = mask_methods_report.MASKED        # rows whose runs end with a mask
FROZEN_ROWS = ("feature", "random", "magnitude", "adaprune", "supermask")
METHOD_OF = {"random": "random_mask", "magnitude": "magnitude", "adaprune": "adaprune",
             "supermask": "supermask", "movement": "movement_hard"}
UNMASKED = "pretrained"                    # masked/<this>: the encoder with no mask

run_name = mask_methods_report.run_name
head_name = mask_methods_report.head_name


def get_config(size: str = "") -> ml_collections.ConfigDict:
    """size "": the study as measured in docs/studies/masks.md; "test": a few steps per run."""
    p = ml_collections.ConfigDict()
    p.size = size
    p.seeds = (0, 1, 2)
    p.target = 0.5
    p.rows = ROWS                 # + "dense" for a full fine-tune reference (phase 1)
    p.base_model = ""             # "" = the real MiniLM-L6 from the pip package
    p.tokenizer = ""
    p.data_root = ""
    p.seq_len = 48                # SST-2 dev: 2 % of sentences are longer (by ~3 tokens)
    p.train_subset = 0            # 0: the full training set; n: a sample of n rows
    p.eval_subset = 0             # 0: the full dev set
    p.split_seed = 0              # which rows a subset samples: the same for every run seed
    p.batch_size = 32
    p.eval_batch_size = 128
    p.progress = False
    p.steps = 350                 # phase 1 (mask learning), every learned row
    p.head_steps = 120            # phase 2 (a fresh head on a fixed mask), every row
    p.checkpoint_every = 175      # finished runs drop their checkpoints, keep model/
    p.lr = 1e-4                   # rows whose weights train (movement, dense)
    p.head_lr = 2e-3              # frozen rows: only the head (and the scores) train
    # The head of frozen rows in both phases: the paper's layer mix over mean-pooled tokens
    # (MiniLM was trained with mean pooling; its [CLS] and pooler separate SST-2 poorly: the
    # pilot on the page). Rows whose weights train keep the family's standard head.
    p.frozen_head = "layer_mix_mean"
    p.update_every = 10           # movement: cubic 0 -> target over 60 % of the run
    p.include = (masks_lib.ENCODER_KERNELS,)
    p.movement = ml_collections.ConfigDict({"lr": 0.1})
    # AdaPrune's alpha and gamma rescaled to MiniLM and this budget (the page): alpha makes
    # the data term move theta beyond its init spread; gamma brings the median theta to 0
    # near step 0.01 / gamma = 250 (the pilot: the data term leaves the median where the push
    # puts it), leaving 100 steps of slack for a seed whose stop comes later.
    p.adaprune = ml_collections.ConfigDict({"lr": 500.0, "gamma": 4e-5})
    p.supermask = ml_collections.ConfigDict({"lr": 1e-3, "init_scale": 0.02})
    # The comparisons, stated before the runs: fresh-head accuracy, paired by seed; margin 0 =
    # superiority (the whole 95 % interval of a - b above 0). And the overlap rule.
    p.comparisons = (("adaprune", "magnitude"), ("adaprune", "random"),
                     ("supermask", "random"), ("movement", "random"),
                     ("magnitude", "random"), ("feature", "adaprune"))
    p.jaccard_margin = 0.05       # AdaPrune's cross-seed Jaccard >= random's + this, every pair
    if size == "test":
        p.seeds = (0,)
        p.devices = 1  # one device (recipes.small_run): sharding is the other tests' job
        # The fewest runs that cover the wiring: a fixed row (phase 2 only) and a learned
        # row whose weights train (phase 1, then a fresh head on the pre-trained weights).
        p.rows = ("random", "movement")
        p.comparisons = (("movement", "random"),)
        p.seq_len, p.train_subset, p.eval_subset = 32, 64, 16
        p.batch_size, p.eval_batch_size, p.steps, p.head_steps = 8, 16, 3, 2
        p.update_every, p.checkpoint_every = 1, 3
        p.adaprune.gamma = 0.03   # (with "adaprune" listed) every theta below 0 at step 1
    elif size:
        raise ValueError(f"--config.size: {size!r} is not '' or 'test'")
    return p


def _base(p, seed: int, steps: int, init: str, frozen: bool):
    c = recipes.finetune("glue", "sst2")
    c.init.path = init
    c.init.init_missing_heads = True     # MiniLM is a bare encoder: fresh task heads
    c.sparsity.lock_pattern = False
    c.sparsity.include = tuple(p.include)
    c.data.train_subset, c.data.eval_subset = p.train_subset, p.eval_subset
    c.data.split_seed = p.split_seed
    c.optim.lr = p.head_lr if frozen else p.lr
    c.model.cls_head = p.frozen_head if frozen else "default"
    c.sparsity.frozen_weights = frozen
    q = ml_collections.ConfigDict(p.to_dict())  # an unlocked copy (the CLI flag's is locked)
    q.preset, q.seed = presets.REFERENCE, seed
    recipes.small_run(c, q, steps)
    c.checkpoint.every = p.checkpoint_every
    return c


def _sparsity(c, p, row: str, seed: int, steps: int) -> None:
    sp = c.sparsity
    sp.enabled, sp.method, sp.target = True, METHOD_OF[row], p.target
    sp.begin_step, sp.end_step = 0, max(1, int(0.6 * steps))
    sp.update_every, sp.freeze_step = p.update_every, max(sp.end_step + 1, int(0.8 * steps))
    if row in FIXED:  # one shot at step 0, on the frozen pre-trained weights
        sp.initial, sp.end_step, sp.update_every, sp.freeze_step = p.target, 1, 1, 2
    sp.random_mask.seed = seed
    sp.movement.update_from_flattened_dict(dict(p.movement))
    sp.adaprune.update_from_flattened_dict(dict(p.adaprune))
    sp.supermask.update_from_flattened_dict(dict(p.supermask))


def base_model(p) -> str:
    return p.base_model or str(paths.minilm_dir())


def learn_config(p, row: str, seed: int):
    """Phase 1: a learned row's own run (or the dense reference) from the pre-trained model."""
    c = _base(p, seed, p.steps, base_model(p), row in FROZEN_ROWS)
    if row in METHOD_OF:
        _sparsity(c, p, row, seed, p.steps)
    return c


def head_config(p, root: pathlib.Path, row: str, seed: int):
    """Phase 2: a fresh head on the frozen encoder saved under masked/ (a learned row's final
    mask baked in; the fixed rows prune the unmasked one at step 0 with their method)."""
    c = _base(p, seed, p.head_steps, str(masked_dir(root, row, seed)), True)
    if row in FIXED and row in METHOD_OF:
        _sparsity(c, p, row, seed, p.head_steps)
    return c


def plan(p, root: pathlib.Path) -> tuple[dict, dict]:
    """(phase 1, phase 2): name -> (config, workdir), in the order they run."""
    unknown = [r for r in p.rows if r not in ROWS + ("dense",)]
    if unknown:
        raise errors.ConfigError(f"config.rows: {unknown} not in {ROWS + ('dense',)}")
    first, second = {}, {}
    for seed in p.seeds:
        for row in (r for r in p.rows if r in LEARNED + ("dense",)):
            first[run_name(row, seed)] = (learn_config(p, row, seed), root / run_name(row, seed))
    for seed in p.seeds:
        for row in (r for r in p.rows if r != "dense"):
            second[head_name(row, seed)] = (head_config(p, root, row, seed),
                                            root / head_name(row, seed))
    return first, second


def masked_dir(root: pathlib.Path, row: str, seed: int) -> pathlib.Path:
    return root / "masked" / (run_name(row, seed) if row in LEARNED else UNMASKED)


def write_masked(p, root: pathlib.Path, row: str, seed: int, pretrained) -> None:
    """The pre-trained encoder (no task head) under masked/, with the final mask of a learned
    row's run applied: a covered kernel entry is zeroed where that run's model holds a 0."""
    out = masked_dir(root, row, seed)
    if (out / params_ckpt.MODEL_JSON).exists():
        return
    params, mcfg = pretrained
    backbone = params["backbone"]
    if row in LEARNED:
        keep = mask_methods_report.load_masks(root / run_name(row, seed) / "model")
        backbone = jax.tree_util.tree_map_with_path(
            lambda path, w: mask_methods_report.masked(masks_lib.path_str(path), w, keep),
            backbone)
    params_ckpt.save_params(out, {"backbone": backbone}, mcfg, "cls", overwrite=True,
                            tokenizer_dir=base_model(p))


def dev_labels(p) -> np.ndarray:
    """The dev labels every run scores on (the runs' own split and subset)."""
    _, dev = inputs.classification_examples(_base(p, p.seeds[0], 1, base_model(p), True))
    return np.asarray(dev.labels)


def _say(msg: str) -> None:
    print(f"[masks] {msg}", flush=True)


def run(p, workdir) -> dict:
    root = harness.open_workdir(p, workdir)
    first, second = plan(p, root)
    t0 = time.time()
    with logs.to_file(root):
        reports = harness.run_all(first, _say, mask_methods_report.headline,
                                  drop_checkpoints=True)
        todo = [n for n, (_, wd) in second.items() if not (wd / "report.json").exists()]
        if todo:
            pretrained = loader.load(base_model(p), "cls", 2, True)[:2]
            for seed in p.seeds:
                for row in (r for r in p.rows if r != "dense"):
                    if head_name(row, seed) in todo:
                        write_masked(p, root, row, seed, pretrained)
        reports.update(harness.run_all(second, _say, mask_methods_report.headline,
                                       drop_checkpoints=True))
        shutil.rmtree(root / "masked", ignore_errors=True)  # rebuilt from the runs if needed
    summary = mask_methods_report.summarise(p, root, reports, dev_labels(p))
    summary["wall_time_s"] = round(time.time() - t0, 1)
    summary.update(cost.cost(reports.values()))
    return harness.save(root, summary, mask_methods_report, "masks.png")


STUDY = harness.Study(name="masks", marker="masks", plot="masks.png", run=run,
                      markdown=mask_methods_report.markdown, alt="mask methods", doc=__doc__,
                      config="configs/masks.py")


def main(argv=None) -> int:
    return harness.main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
