"""Accelerator section: samples/s and MFU of the Prune OFA pretrain steps (bf16 BERT-Base,
seq 128) counting the frozen teacher's forward, next to the dense step: the fast preset's
(KD at the masked positions) and the reference preset's (KD on every token, fused, dense
latent weights). Runs only when the default backend is a GPU or TPU."""

from __future__ import annotations

import pathlib
import statistics

import jax

from prune_ofa_jax.bench import flops, timing, variants
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.train import synthetic

SKIPPED = {"skipped": "no accelerator"}
# dense; fast preset's Prune OFA step; reference preset's (MFU counts its all-position logits)
STEPS = ("dense", "prune_ofa", "reference_step")


def available() -> bool:
    return jax.devices()[0].platform in ("gpu", "tpu")


def run(bc, tmp: pathlib.Path, log=print) -> dict:
    a, n = bc.accel, jax.device_count()
    if not (available() or a.force):
        log("accelerator section: skipped: no accelerator")
        return dict(SKIPPED)
    global_batch = a.batch_size * n
    base = variants.base_config(a.model, a.overrides, a.dtype, global_batch, a.seq_len,
                                a.max_predictions, bc.sparsity_target, bc.seed)
    teacher, student = variants.save_teacher(base, tmp), variants.save_student(base, tmp)
    mesh = mesh_lib.make_mesh(-1, 1, 1)
    mcfg = variants.model_config_of(base)
    local = synthetic.batch("pretraining", global_batch // jax.process_count(), a.seq_len,
                            mcfg.vocab_size, max_predictions=a.max_predictions,
                            seed=bc.seed + jax.process_index(), pad_fraction=0.5)
    steps = variants.build_steps(base, list(STEPS), teacher, local, mesh,
                                 threads=2, fast=bc.fast_compile, log=log,
                                 student_path=student)
    times, cpu = timing.interleave(steps, a.steps, a.warmup, 0.0, log=log)
    kind = jax.devices()[0].device_kind
    peak = a.peak_flops or flops.peak_flops(kind)
    out = {"device_kind": kind, "devices": n, "model": a.model, "dtype": a.dtype,
           "global_batch": global_batch, "seq_len": a.seq_len, "peak_flops_per_device": peak,
           "prune_ofa_vs_dense": timing.ratio(times, "prune_ofa", "dense", cpu),
           "reference_step_vs_dense": timing.ratio(times, "reference_step", "dense", cpu)}
    for name in STEPS:
        k = variants.KINDS[name]
        step_s = statistics.median(times[name])
        f = flops.train_step_flops(mcfg, global_batch, a.seq_len, a.max_predictions, base.task,
                                   k.gathered, k.teacher)
        out[name] = {**timing.summary(times[name]), "samples_per_s": global_batch / step_s,
                     "flops_per_step": f, "tflops_per_s_per_device": f["total"] / step_s / n / 1e12,
                     "mfu": None if peak is None else flops.mfu(f["total"], step_s, peak, n)}
    out["target_mfu"] = 0.45
    mfu = out["prune_ofa"]["mfu"]
    out["met"] = None if mfu is None else mfu >= 0.45
    return out
