"""run(config, workdir): resume-or-start, iterate the jitted step, log, checkpoint, evaluate,
and write the final model and report.json.

Nothing is lost on a crash: checkpoints every `checkpoint.every` steps (async) hold the whole
train state including the data position, so the same command resumes and reaches the same
params as an uninterrupted run. A non-finite loss stops the run naming the step; the last
good checkpoint is kept (a bad state is never saved).
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
import time

import jax
import numpy as np

from prune_ofa_jax import checkpoint as ckpt_lib
from prune_ofa_jax.convert import params_ckpt
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.train import build as build_lib
from prune_ofa_jax.train import evaluate as evaluate_lib
from prune_ofa_jax.train import inputs as inputs_lib
from prune_ofa_jax.train import validate as validate_lib

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; the run stopped and kept its last good checkpoint."""


class MetricWriter:
    """metrics.jsonl + TensorBoard events in the workdir (process 0 only)."""

    def __init__(self, workdir: pathlib.Path):
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        self.jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
        try:
            import tensorboardX  # pylint: disable=import-outside-toplevel
            self.tb = tensorboardX.SummaryWriter(str(workdir / "tb"))
        except ImportError:
            self.tb = None

    def write(self, step: int, metrics: dict):
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
        self.jsonl.write(json.dumps({"step": step, **clean}) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in clean.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()

    def close(self):
        if self.enabled:
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()


def _signature(run) -> dict:
    cfg = run.config
    return {"model": run.model_config.to_dict(), "task": cfg.task, "num_labels": cfg.num_labels,
            "sparsity_enabled": cfg.sparsity.enabled, "qat": cfg.quant.enabled,
            "grad_accum": cfg.train.grad_accum, "batch_size": cfg.train.batch_size}


def _progress(total: int, initial: int, enabled: bool):
    if not enabled or jax.process_index() != 0:
        return None
    import tqdm  # pylint: disable=import-outside-toplevel
    return tqdm.tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True)


def run(config, workdir) -> dict:
    """Train per `config` in `workdir`; returns the report dict (also written as report.json)."""
    validate_lib.validate(config)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    mesh_lib.maybe_initialize_distributed()
    t_start = time.time()

    run_ = build_lib.build(config)
    data = inputs_lib.make_sources(config)
    manager = ckpt_lib.make_manager(workdir / "checkpoints", keep=config.checkpoint.keep,
                                    save_every=config.checkpoint.every,
                                    async_save=config.checkpoint.async_save)
    meta = {"signature": _signature(run_)}
    state = run_.state
    restored = ckpt_lib.restore_latest(manager, state, meta)
    if restored is not None:
        state = restored[0]
        log.info("resumed from step %d", int(state.step))
    start = int(state.step)
    accum = config.train.grad_accum
    writer = MetricWriter(workdir)
    bar = _progress(config.train.steps, start, config.train.progress)
    try:
        for step in range(start, config.train.steps):
            local = data.train.batch(int(state.data_position))
            batch = mesh_lib.global_batch(local, run_.mesh, accum=accum)
            state, metrics = run_.step_fn(state, run_.teacher_params, batch)
            loss, gnorm = float(metrics["loss"]), float(metrics["grad_norm"])
            if not (math.isfinite(loss) and math.isfinite(gnorm)):  # before any save
                raise NonFiniteLossError(
                    f"loss {loss}, grad norm {gnorm} at step {step}; stopped. The last good "
                    f"checkpoint (step {manager.latest_step()}) in {workdir / 'checkpoints'} "
                    "is kept.")
            done = step + 1
            if done % config.train.log_every == 0 or done == config.train.steps:
                m = jax.device_get(metrics)
                writer.write(done, m)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.3f}", sparsity=f"{float(m['sparsity']):.3f}")
            if config.train.eval_every and done % config.train.eval_every == 0:
                writer.write(done, evaluate_lib.evaluate(run_, state, data))
            ckpt_lib.save(manager, done, state, meta, force=done == config.train.steps)
            if bar is not None:
                bar.update(1)
    finally:
        manager.wait_until_finished()
        if bar is not None:
            bar.close()
    final_eval = evaluate_lib.evaluate(run_, state, data)
    writer.write(int(state.step), final_eval)
    writer.close()
    return _finish(run_, state, workdir, final_eval, time.time() - t_start)


def _finish(run_, state, workdir, final_eval, wall) -> dict:
    """Final model (masks baked in) as a params checkpoint, and report.json."""
    params = jax.device_get(masks_lib.apply_masks(state.params, state.masks))
    params_ckpt.save_params(workdir / "model", params, run_.model_config, run_.config.task,
                            overwrite=True)
    stats = masks_lib.sparsity_report(params, state.masks)
    report = {"task": run_.config.task, "steps": int(state.step), "wall_time_s": round(wall, 2),
              "eval": {k: float(v) for k, v in final_eval.items()},
              "sparsity": stats, "model_dir": str(workdir / "model")}
    if jax.process_index() == 0:
        (workdir / "report.json").write_text(json.dumps(report, indent=2))
    return report
