"""The whole Prune OFA pipeline at small scale (the demo): teacher preparation -> upstream
pruning with distillation -> SST-2 fine-tuning (sparse, pattern locked; and the dense teacher
as the baseline) -> 8-bit QAT -> export to Hugging Face PyTorch and reload -> a table.

Each stage is an ordinary training run (train/loop.py) in its own sub-workdir, built from the
same recipe builders as configs/*.py. A stage whose report.json exists is skipped, and an
interrupted stage resumes from its checkpoint, so rerunning the command continues the demo.
"""

from __future__ import annotations

import json
import logging
import pathlib
import time

from prune_ofa_jax import config_base, jsonio, logs, paths, recipes
from prune_ofa_jax.convert import hf_check, params_ckpt
from prune_ofa_jax.eval import compression
from prune_ofa_jax.train import loop

log = logging.getLogger(__name__)


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def stage_configs(p, root: pathlib.Path) -> dict:
    """name -> (config, workdir) for each stage of the pipeline."""
    d = {k: root / k for k in ("1_teacher", "2_prune", "3_finetune_sparse", "3_finetune_dense",
                               "4_qat")}
    teacher = config_base.base()
    teacher.task = "pretraining"
    teacher.init.path = p.base_model or str(paths.minilm_dir())
    teacher.init.init_missing_heads = True
    teacher.data.text_files = tuple(p.text_files)
    teacher.optim.lr = p.teacher_lr
    recipes.small_run(teacher, p, p.teacher_steps)

    prune = recipes.upstream("bert-base-uncased", p.target)
    prune.init.path = prune.teacher.path = str(d["1_teacher"] / "model")
    prune.data.text_files = tuple(p.text_files)
    prune.sparsity.end_step = int(p.prune_steps * 0.6)
    prune.sparsity.update_every = p.update_every
    prune.sparsity.freeze_step = int(p.prune_steps * 0.8)
    prune.optim.lr = p.prune_lr
    recipes.small_run(prune, p, p.prune_steps)

    def finetune(init: str, lock: bool):
        c = recipes.finetune("glue", p.glue_task)
        c.init.path = init
        c.sparsity.lock_pattern = lock
        c.data.train_subset = p.train_subset
        c.optim.lr = p.finetune_lr
        return recipes.small_run(c, p, p.finetune_steps)

    qat = recipes.qat("glue", p.glue_task)
    qat.init.path = str(d["3_finetune_sparse"] / "model")
    qat.data.train_subset = p.train_subset
    qat.optim.lr = p.qat_lr
    qat.quant.ema_decay = p.qat_ema_decay
    recipes.small_run(qat, p, p.qat_steps)
    return {"1_teacher": (teacher, d["1_teacher"]), "2_prune": (prune, d["2_prune"]),
            "3_finetune_sparse": (finetune(str(d["2_prune"] / "model"), True),
                                  d["3_finetune_sparse"]),
            "3_finetune_dense": (finetune(str(d["1_teacher"] / "model"), False),
                                 d["3_finetune_dense"]),
            "4_qat": (qat, d["4_qat"])}


def run(config, workdir) -> dict:
    root = pathlib.Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    with logs.to_file(root):  # the whole demo's log; each stage also writes its own
        return _run(config, root)


def _run(config, root: pathlib.Path) -> dict:
    p = config.pipeline
    t0 = time.time()
    reports = {}
    stages = stage_configs(p, root)
    for i, (name, (cfg, wd)) in enumerate(stages.items(), 1):
        done = wd / "report.json"
        if done.exists():
            _say(f"stage {i}/{len(stages) + 1} {name}: already done ({done}), skipping")
            reports[name] = json.loads(done.read_text())
            continue
        _say(f"stage {i}/{len(stages) + 1} {name}: {cfg.train.steps} steps -> {wd}")
        reports[name] = loop.run(cfg, wd)
        _say(f"stage {name} done in {reports[name]['wall_time_s']:.0f}s: "
             f"{jsonio.dumps(reports[name]['eval'])}")
    _say(f"stage {len(stages) + 1}/{len(stages) + 1} export to Hugging Face PyTorch, reload "
         "with transformers, compare logits")
    exports = hf_check.export_and_check(stages, root / "5_export", p)
    summary = table(stages, reports, exports, config.sparsity.include)
    summary["wall_time_s"] = round(time.time() - t0, 1)
    (root / "summary.json").write_text(jsonio.dumps(summary, indent=2))
    print(format_table(summary), flush=True)
    return summary


def table(stages, reports, exports, prunable) -> dict:
    """Dense vs sparse vs sparse+int8: accuracy, sparsity, params, compressed size."""
    rows = []
    for label, name, int8 in (("dense (teacher fine-tuned)", "3_finetune_dense", False),
                              ("sparse (Prune OFA)", "3_finetune_sparse", False),
                              ("sparse + int8 QAT", "4_qat", True)):
        params, _, _ = params_ckpt.load_params(stages[name][1] / "model")
        comp = compression.report(params, prunable, int8=int8)
        ev = reports[name]["eval"]
        rows.append({"model": label, "stage": name,
                     "accuracy": ev.get("accuracy"),
                     "encoder_sparsity": comp["prunable_sparsity"],
                     "params_total": comp["params_total"],
                     "params_nonzero": comp["params_nonzero"],
                     "size_dense_fp32_mb": comp["bytes"]["dense_fp32"] / 2**20,
                     "size_stored_mb": comp["bytes_best"] / 2**20,
                     "size_bytes": comp["bytes"],
                     "compression_x": comp["compression_vs_dense_fp32"],
                     "model_dir": str(stages[name][1] / "model"),
                     "hf_dir": exports.get(name, {}).get("hf_dir", "")})
    return {"rows": rows, "exports": exports,
            "teacher_prep": reports["1_teacher"]["eval"], "pruning": reports["2_prune"]["eval"]}


def format_table(summary: dict) -> str:
    head = (f"{'model':28s} {'SST-2 acc':>9s} {'sparsity':>8s} {'params':>10s} "
            f"{'nonzero':>10s} {'fp32 MB':>8s} {'stored MB':>9s} {'x':>5s}")
    lines = ["", head, "-" * len(head)]
    for r in summary["rows"]:
        acc = "n/a" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
        lines.append(f"{r['model']:28s} {acc:>9s} {r['encoder_sparsity']:8.3f} "
                     f"{r['params_total']:10d} {r['params_nonzero']:10d} "
                     f"{r['size_dense_fp32_mb']:8.2f} {r['size_stored_mb']:9.2f} "
                     f"{r['compression_x']:5.1f}")
    lines.append("")
    for name, e in summary["exports"].items():
        lines.append(f"{name}: HF export {e['hf_dir']} reloaded with transformers; max |logit "
                     f"diff| vs Flax = {e['max_abs_logit_diff']:.2e}; zeros in export = "
                     f"{e['export_sparsity']:.4f}")
    lines.append(f"stored MB: smallest of dense / bitmask / CSR storage (index overhead "
                 f"counted); x = vs dense fp32. Wall time {summary.get('wall_time_s', 0)} s.")
    return "\n".join(lines)
