"""run(config, workdir): resume-or-start, iterate the jitted step, log, checkpoint, evaluate,
and write the final model and report.json.

Nothing is lost on a crash: checkpoints on the `checkpoint.every` interval (async) hold the
whole train state including the data position, so the same command resumes and reaches the
same params as an uninterrupted run. A damaged newest checkpoint falls back to the newest
older one that verifies (checkpoint.py); a config changed since the checkpoint is an error
unless allowed (train/resume.py). SIGTERM (preemption) saves the current step and stops
with `Preempted`. A non-finite loss stops the run naming the step; the last good checkpoint
is kept (a bad state is never saved). With `train.skip_nonfinite` such a step is skipped
instead (train/guards.py), and only more than `train.max_consecutive_skips` in a row stop
the run. Metrics are read one step late, and the next global batch is pulled from the input
iterator (train/feed.py; Grain workers build it) and sent to the devices after the current
step is dispatched, so input and compute overlap and the host never waits on the step it
has just dispatched. The full log is WORKDIR/log.txt.

WORKDIR may be local or a bucket (gs://...): paths go through etils.epath, as in Orbax. Logs,
metrics and TensorBoard events of a bucket workdir are written locally (LOCAL_LOGS/<name>)
and copied into it every minute and at the end (paths.LogMirror).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import pathlib
import signal
import tempfile
import threading
import time

import jax
import numpy as np
from etils import epath

from prune_ofa_jax import checkpoint as ckpt_lib
from prune_ofa_jax import jsonio, logs, paths, presets
from prune_ofa_jax.convert import params_ckpt, qat_ranges
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.sparsity import masks as masks_lib
from prune_ofa_jax.train import build as build_lib
from prune_ofa_jax.train import feed as feed_lib
from prune_ofa_jax.train import guards
from prune_ofa_jax.train import inputs as inputs_lib
from prune_ofa_jax.train import resume as resume_lib
from prune_ofa_jax.train import validate as validate_lib

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; the run stopped and kept its last good checkpoint."""


class Preempted(RuntimeError):
    """SIGTERM arrived: the state after `step` steps is saved; the same command resumes."""

    def __init__(self, step: int, directory):
        super().__init__(f"preempted (SIGTERM) after step {step}; its checkpoint is in "
                         f"{directory}. Run the same command to resume.")
        self.step = step


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
        self.jsonl.write(jsonio.dumps({"step": step, **clean}) + "\n")
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
    sig = {"model": run.model_config.to_dict(), "task": cfg.task, "num_labels": cfg.num_labels,
           "sparsity_enabled": cfg.sparsity.enabled, "qat": cfg.quant.enabled,
           "grad_accum": cfg.train.grad_accum, "batch_size": cfg.train.batch_size}
    if run.method.name not in ("fixed", "magnitude"):  # scores in the state
        sig["sparsity_method"] = run.method.name
    return sig


def _progress(total: int, initial: int, enabled: bool):
    if not enabled or jax.process_index() != 0:
        return None
    import tqdm  # pylint: disable=import-outside-toplevel
    return tqdm.tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True)


@contextlib.contextmanager
def _sigterm_flag():
    """A flag SIGTERM sets (single process, main thread). Multi-process runs use JAX's own
    preemption notifier instead (via the manager), which all hosts agree on."""
    flag = threading.Event()
    if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def _describe(run_, workdir) -> None:
    c, m = run_.config, run_.model_config
    n = sum(x.size for x in jax.tree.leaves(run_.state.params))
    log.info("model: %s, %d layers, hidden %d, %.1fM params, task %s; init %s", m.model_type,
             m.num_layers, m.hidden_size, n / 1e6, c.task, c.init.path or "random")
    if run_.teacher is not None:
        log.info("teacher (frozen): %s; KD weight %g, T=%g", c.teacher.path,
                 c.distill.kd_weight, c.distill.temperature)
    method = run_.method
    if c.sparsity.enabled:
        log.info("pruning: %s (%s, %s) to %.0f%%; schedule over steps %d-%d, masks every %d, "
                 "frozen at %d", method.name, method.distribution, c.sparsity.pattern,
                 100 * c.sparsity.target, c.sparsity.begin_step, c.sparsity.end_step,
                 c.sparsity.update_every, c.sparsity.freeze_step)
    elif c.sparsity.lock_pattern:
        log.info("sparsity pattern of the init weights locked")
    if method.frozen_weights:
        log.info("weights frozen (bit-identical): everything under backbone/; heads train")
    log.info("run: %d steps, batch %d x %d tokens, mesh %s (%d devices), %s", c.train.steps,
             c.train.batch_size, c.data.seq_len, dict(run_.mesh.shape), run_.mesh.size,
             c.model.dtype + (", QAT" if c.quant.enabled else ""))
    log.info("outputs: %s (log.txt, metrics.jsonl, tb/, checkpoints/, model/, report.json)",
             workdir)


LOCAL_LOGS = pathlib.Path(tempfile.gettempdir()) / "prune_ofa_jax_logs"


def log_dir(workdir) -> pathlib.Path:
    """Where log.txt, metrics.jsonl and tb/ are written: the workdir itself when it is local."""
    if not paths.is_bucket(workdir):
        return pathlib.Path(str(workdir))
    return LOCAL_LOGS / str(workdir).replace("://", "_").replace("/", "_")


def _mirror(logdir, workdir, name: str):
    """A bucket workdir's logs copied into it while the run writes them: process 0's log,
    metrics and TensorBoard events, each other process's own log."""
    if str(logdir) == str(workdir):
        return contextlib.nullcontext()
    names = (name, "metrics.jsonl", "tb") if jax.process_index() == 0 else (name,)
    return paths.LogMirror(logdir, workdir, names)


def run(config, workdir, build_fn=None, *, explicit=(), **build_options) -> dict:
    """Train per `config` in `workdir`; returns the report dict (also written as report.json).

    explicit: the dotted config keys the user set on the command line (main.py passes them):
    such a key wins over a recipe's key that would override it (validate.explicit).

    build_options: passed to the builder, e.g. `method=` (a pruning Method built in the
    caller's code) and `loss_terms=` (objectives.LossTerm's added to the objective) for
    `train.build.build`. build_fn: (config, **build_options) -> Run (default
    `train.build.build`); a capability with a step of its own (the NAS supernet,
    nas/supernet.py) passes its builder. What the loop reads of a Run: config, mesh,
    model_config, state, step_fn, teacher, teacher_params, method (for the checkpoint
    signature and the console), evaluate(state, data) -> metrics and saved_task (the task
    recorded with the final params)."""
    mesh_lib.maybe_initialize_distributed()  # first: anything below may touch the backend
    workdir = epath.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    logdir = log_dir(workdir)
    name = "log.txt" if jax.process_index() == 0 else f"log.process{jax.process_index()}.txt"
    with _mirror(logdir, workdir, name), logs.to_file(logdir, name), \
            _sigterm_flag() as sigterm:
        try:
            config = validate_lib.explicit(presets.resolve(config), explicit)
            validate_lib.validate(config)
            validate_lib.check_models(config)
            builder = functools.partial(build_fn or build_lib.build, **build_options)
            return _run(config, workdir, sigterm, builder)
        except Exception as e:  # why the run stopped, in log.txt (the console: the CLI's line)
            log.error("run stopped: %s", e, exc_info=True, extra=logs.FILE_ONLY)
            raise


def _run(config, workdir: epath.Path, sigterm: threading.Event, build_fn) -> dict:
    t_start, cpu_start = time.time(), time.process_time()
    data = inputs_lib.make_sources(config)
    config = presets.resolve_steps(config, data)  # train.epochs -> steps: the LR needs them
    validate_lib.check_steps(config)
    ckpt_dir = workdir / "checkpoints"
    manager = ckpt_lib.make_manager(ckpt_dir, keep=config.checkpoint.keep,
                                    async_save=config.checkpoint.async_save)
    resume_lib.check_newest(config, manager)  # a changed config: before anything is built
    run_ = build_fn(config)
    meta = {"signature": _signature(run_), resume_lib.CONFIG: resume_lib.flatten(config)}
    _describe(run_, workdir)
    log.info("data: %s", inputs_lib.describe(config, data))
    state, feed, resumed = _resume(config, data, run_, manager, meta)
    resume_lib.record(workdir, config, resumed)
    start, total = int(state.step), config.train.steps
    writer = MetricWriter(log_dir(workdir))
    bar = _progress(total, start, config.train.progress)
    checks = _LateCheck(writer, bar, config.train, total, manager, ckpt_dir)
    step_fn = _aligned_start(run_, guards.skip_nonfinite(run_) if config.train.skip_nonfinite
                             else run_.step_fn, state, feed, start)
    try:
        for step in range(start, total):
            batch = feed.take()  # on the device already (prefetched during the last step)
            state, metrics = step_fn(state, run_.teacher_params, batch)  # async
            done = step + 1
            checks.push(done, metrics)  # checks the previous step's, ready by now
            evaluate_now = bool(config.train.eval_every) and done % config.train.eval_every == 0
            preempted = (manager.reached_preemption(done) if jax.process_count() > 1
                         else sigterm.is_set())
            save_now = ckpt_lib.should_save(done, config.checkpoint.every, total, preempted)
            if evaluate_now or save_now:
                checks.flush()  # this state's own metrics, before it is used
            if evaluate_now:
                _log_eval(writer, done, run_.evaluate(state, data))
            if save_now:  # the iterator has served exactly the batches trained so far
                ckpt_lib.save(manager, done, state, meta, data=feed.iterator)
                log.info("checkpoint: step %d -> %s", done, ckpt_dir)
            if bar is not None:
                bar.update(1)
            if preempted:
                raise Preempted(done, ckpt_dir)
            if done < total:
                feed.prefetch()  # built and transferred while this step runs
        checks.flush()
    finally:
        manager.wait_until_finished()
        feed.close()
        if bar is not None:
            bar.close()
    final_eval = run_.evaluate(state, data)
    _log_eval(writer, int(state.step), final_eval)
    writer.close()
    return _finish(run_, state, workdir, final_eval, time.time() - t_start,
                   time.process_time() - cpu_start)


def _aligned_start(run_, step_fn, state, feed: feed_lib.Feed, start: int):
    """`step_fn`; multi-host: compiled here, then every process waits for the others,
    so all enter the first step together (a slow compile on one host would otherwise leave
    the others waiting in its first collective, past gloo's 30 s on CPU hosts)."""
    if jax.process_count() == 1:
        return step_fn
    feed.prefetch()
    compiled = step_fn.lower(state, run_.teacher_params, feed.peek()).compile()
    mesh_lib.sync_hosts(f"prune_ofa_jax_loop_start_{start}")
    return compiled


def _resume(config, data, run_, manager, meta: dict):
    """(state, feed, step): the newest checkpoint that verifies and matches this run (else
    the fresh state and None), and the input iterator at the same step's data position."""
    it = feed_lib.host_iterator(data.train, 0, config.data.worker_count, config.data.prefetch)

    def check(saved: dict, step: int) -> None:
        resume_lib.check(config, meta["signature"], saved, step, manager.directory)

    restored = ckpt_lib.restore(manager, run_.state, check_meta=check, data=it)
    state = run_.state if restored is None else restored.state
    position = int(state.data_position)
    if restored is not None:
        log.info("resumed from step %d (%s)", restored.step, manager.directory)
        if not restored.data_restored and position:  # a checkpoint without the data item
            if not isinstance(it, feed_lib.RandomAccess):
                raise ckpt_lib.CheckpointError(
                    f"checkpoint step {restored.step} has no input state to resume the "
                    "stream from; use a fresh --workdir")
            it.position = position
    return (state, feed_lib.Feed(it, run_.mesh, config.train.grad_accum),
            None if restored is None else restored.step)


class _LateCheck:
    """The NaN/inf guard and the metric log, one step late: the host never waits for the
    step it has just dispatched, so it builds and transfers the next batch while that step
    runs. A state is saved or evaluated only after its own metrics were found finite."""

    def __init__(self, writer: MetricWriter, bar, train_cfg, total: int, manager, ckpt_dir):
        self.writer, self.bar, self.total = writer, bar, total
        self.log_every = train_cfg.log_every
        self.max_skips = train_cfg.max_consecutive_skips  # used with train.skip_nonfinite
        self.manager, self.ckpt_dir = manager, ckpt_dir
        self.pending = None
        self.skipped: list = []  # the current run of consecutive skipped steps

    def push(self, done: int, metrics: dict) -> None:
        self.flush()
        self.pending = (done, metrics)

    def flush(self) -> None:
        if self.pending is None:
            return
        (done, metrics), self.pending = self.pending, None
        loss, gnorm = float(metrics["loss"]), float(metrics["grad_norm"])
        finite = math.isfinite(loss) and math.isfinite(gnorm)
        if not finite and guards.SKIPPED in metrics:  # train.skip_nonfinite: the state is kept
            self._skipped(done - 1, loss, gnorm)
        elif not finite:
            raise NonFiniteLossError(
                f"loss {loss}, grad norm {gnorm} at step {done - 1}; stopped. The last good "
                f"checkpoint (step {self.manager.latest_step()}) in {self.ckpt_dir} is kept.")
        else:
            self.skipped = []
        if done % self.log_every == 0 or done == self.total or not finite:
            m = jax.device_get(metrics)
            self.writer.write(done, m)
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{loss:.3f}", sparsity=f"{float(m['sparsity']):.3f}")

    def _skipped(self, step: int, loss: float, gnorm: float) -> None:
        self.skipped.append(step)
        first, n = self.skipped[0], len(self.skipped)
        if n > self.max_skips:
            raise NonFiniteLossError(
                f"loss {loss}, grad norm {gnorm} at steps {first}-{step} ({n} in a row, more "
                f"than train.max_consecutive_skips={self.max_skips}); stopped. The last "
                f"checkpoint (step {self.manager.latest_step()}) in {self.ckpt_dir} is kept.")
        log.warning("step %d skipped (train.skip_nonfinite): loss %s, grad norm %s; params, "
                    "optimizer state and masks unchanged, its batch consumed (%d in a row)",
                    step, loss, gnorm, n)


def _log_eval(writer: MetricWriter, step: int, metrics: dict) -> None:
    writer.write(step, metrics)
    log.info("eval at step %d: %s", step,
             ", ".join(f"{k}={float(v):.4f}" for k, v in metrics.items() if np.ndim(v) == 0))


def _finish(run_, state, workdir, final_eval, wall, cpu) -> dict:
    """Final model (masks baked in) as a params checkpoint, and report.json."""
    params = mesh_lib.to_host(masks_lib.apply_masks(state.params, state.masks))
    task = run_.saved_task
    params_ckpt.save_params(workdir / "model", params, run_.model_config, task, overwrite=True,
                            tokenizer_dir=inputs_lib.tokenizer_path(run_.config))
    if run_.config.quant.enabled:  # the int8 export's ranges (gathered on every process)
        quant_stats = mesh_lib.to_host(state.quant_stats)
        if jax.process_index() == 0:
            qat_ranges.save(workdir / "model", quant_stats,
                            {k: v for k, v in run_.config.quant.to_dict().items()
                             if k != "enabled"})
    stats = masks_lib.sparsity_report(params, mesh_lib.to_host(state.masks))
    report = jsonio.clean({"task": task, "steps": int(state.step),
                           "wall_time_s": round(wall, 2),
                           "cpu_time_s": round(cpu, 2),  # this process, all threads
                           "eval": {k: float(v) for k, v in final_eval.items()},
                           "sparsity": stats, "model_dir": str(workdir / "model")})
    if jax.process_index() == 0:
        (workdir / "report.json").write_text(jsonio.dumps(report, indent=2))
    log.info("done in %.0f s: final model %s, report %s", wall, workdir / "model",
             workdir / "report.json")
    return report
