"""Runs the bench: builds every variant, times them interleaved in one process, and turns
the medians into the figures (ratios with their targets), a JSON file and a table."""

from __future__ import annotations

import os
import pathlib
import statistics
import tempfile
import time

import jax

from prune_ofa_jax.bench import accel, flops, machine, timing, torch_hf, variants
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.train import synthetic

# Timing order: the two sides of each figure sit next to (or near) each other.
ORDER = ("torch_full", "mlm_full_vocab", "mlm_gathered", "torch_gathered", "reference_kd",
         "dense_full_vocab", "prune_ofa_full_vocab", "reference_step", "qat", "qat_no_requant",
         "dense", "dense_long", "prune_ofa", "prune_ofa_regrow", "masks_only", "mask_update")

# Every figure key of bench.json (the smoke test checks them all).
FIGURES = ("reference_kd_vs_dense_all_positions", "reference_kd_peak_memory_ratio",
           "reference_kd_vs_naive", "prune_ofa_vs_dense", "prune_ofa_full_vocab_vs_dense",
           "prune_ofa_full_vocab_vs_dense_full_vocab", "teacher_kd_cost", "mask_overhead",
           "qat_overhead", "ours_vs_hf_torch", "ours_vs_hf_torch_gathered",
           "ours_gathered_vs_hf_torch_stock", "mask_update_step", "accelerator",
           "preset_all_token_kd_cost", "preset_regrow_cost", "preset_reference_vs_fast_step",
           "preset_seq512_cost_per_token", "preset_requant_cost")


def _figure(times, cpu, num, den, target=None, direction="<=", invert=False, note=""):
    """A ratio figure; `invert`: value = den/num (a speed-up of `num` over `den`)."""
    if num not in times or den not in times:
        return {"skipped": "not in this suite (config.suite / config.extras)"}
    r = timing.ratio(times, *((den, num) if invert else (num, den)), cpu=cpu)
    fig = {"value": r["ratio"], **r, "note": note}
    if target is not None:
        ok = r["ratio"] <= target if direction == "<=" else r["ratio"] >= target
        fig.update(target=target, direction=direction, met=bool(ok))
    return fig


def figures(times: dict, cpu: dict, flop_ratio: float, update_every: int) -> dict:
    """All CPU figures from per-variant step times (wall and CPU seconds)."""
    fig = lambda *a, **k: _figure(times, cpu, *a, **k)  # noqa: E731
    f = {
        "reference_kd_vs_dense_all_positions": fig(
            "reference_kd", "dense_full_vocab", 1.40,
            note="reference Prune OFA step (KD on every non-padding token, fused, teacher, "
                 "masks) vs dense step with logits at every position; floor 4/3"),
        "reference_kd_vs_naive": fig(
            "reference_kd", "prune_ofa_full_vocab",
            note="fused all-token KD vs the same loss on full [B, L, V] logits"),
        "prune_ofa_vs_dense": fig(
            "prune_ofa", "dense", 1.40,
            note=f"masks + frozen teacher + KD vs plain step; FLOP floor {flop_ratio:.3f}"),
        "prune_ofa_full_vocab_vs_dense": fig(
            "prune_ofa_full_vocab", "dense",
            note="mlm_positions_only=False in the Prune OFA step only (naive ~2.0)"),
        "prune_ofa_full_vocab_vs_dense_full_vocab": fig(
            "prune_ofa_full_vocab", "dense_full_vocab",
            note="mlm_positions_only=False in both steps"),
        "teacher_kd_cost": fig("prune_ofa", "masks_only",
                               note="teacher forward + KD terms alone"),
        "mask_overhead": fig("masks_only", "dense", 1.03,
                             note="pruning step without teacher vs dense (target +3%)"),
        "qat_overhead": fig("qat", "dense", 1.15,
                            note="quant.enabled on vs off, dense step (target +15%)"),
        "ours_vs_hf_torch": fig(
            "mlm_full_vocab", "torch_full", 1.3, ">=", invert=True,
            note="speed-up over HF BertForMaskedLM; both project every position onto the "
                 "vocab, MLM loss on masked positions only"),
        "ours_vs_hf_torch_gathered": fig(
            "mlm_gathered", "torch_gathered", 1.3, ">=", invert=True,
            note="both project only the masked positions onto the vocab"),
        "ours_gathered_vs_hf_torch_stock": fig(
            "mlm_gathered", "torch_full", invert=True,
            note="our default step vs HF's stock all-position MLM head"),
        "mask_update_step": fig(
            "mask_update", "masks_only",
            note=f"a step that recomputes the masks; amortised over update_every="
                 f"{update_every}"),
    }
    f.update(preset_figures(fig))
    upd = f["mask_update_step"]
    if "ratio" in upd:
        upd["amortised_overhead_pct"] = 100 * (upd["ratio"] - 1) / update_every
    for key in ("mask_overhead", "qat_overhead"):
        if "ratio" in f[key]:
            f[key]["overhead_pct"] = 100 * (f[key]["ratio"] - 1)
    return f


def preset_figures(fig) -> dict:
    """--config.suite=presets: what each choice of the reference preset costs per step, next
    to the fast preset's step (masked-position KD, hard zero), in one run."""
    return {
        "preset_all_token_kd_cost": fig(
            "reference_kd", "prune_ofa",
            note="distill.mlm_positions_only=False (fused KD on every token) vs True"),
        "preset_regrow_cost": fig(
            "prune_ofa_regrow", "prune_ofa",
            note="sparsity.regrow=True (dense latent weights, masks in the forward) vs hard zero"),
        "preset_reference_vs_fast_step": fig(
            "reference_step", "prune_ofa",
            note="the reference preset's upstream step (both choices above) vs fast's"),
        "preset_seq512_cost_per_token": fig(
            "dense_long", "dense",
            note="rows 4x longer (512 vs 128 at the default shape), 4x fewer: same tokens"),
        "preset_requant_cost": fig(
            "qat", "qat_no_requant",
            note="quant.requantize_output=True (after the bias, with exclusions) vs off"),
    }


def memory_figure(steps: dict, num: str, den: str, target: float) -> dict:
    """Compiled peak memory (temporaries + arguments) of two steps, as a ratio."""
    if num not in steps or den not in steps:
        return {"skipped": "not in this suite (config.suite / config.extras)"}
    a, b = steps[num].peak_bytes(), steps[den].peak_bytes()
    return {"value": a / b, "ratio": a / b, "target": target, "direction": "<=",
            "met": a / b <= target, "numerator_bytes": a, "denominator_bytes": b,
            "numerator": num, "denominator": den,
            "note": "XLA memory_analysis(): temp + argument bytes of the compiled steps"}


def _step_records(steps, torch_steps, times, cpu, mcfg, bc) -> dict:
    out = {}
    for name, ts in times.items():
        rec = {**timing.summary(ts), "cpu_median_s": statistics.median(cpu[name])}
        if name in steps:
            k, s = variants.KINDS[name], steps[name]
            task = s.run.config.task
            rows, length, preds = variants.shape(name, bc.batch_size, bc.seq_len,
                                                 bc.max_predictions)
            fl = flops.train_step_flops(mcfg, rows, length, preds, task, k.gathered,
                                        k.teacher)["total"]
            rec.update(compile_s=s.compile_s, last_loss=s.last_loss(), flops=fl,
                       gflops_per_s=fl / rec["median_s"] / 1e9, task=task)
        else:
            rec.update(last_loss=torch_steps[name].loss)
        out[name] = rec
    return out


def run(bc, out_dir: str = "bench_results", log=print) -> dict:
    """The whole bench; writes `<out_dir>/bench.json` and returns its content."""
    t_start = time.perf_counter()
    info = machine.info()
    if bc.accel_only:
        with tempfile.TemporaryDirectory() as tmp:
            fig = accel.run(bc, pathlib.Path(tmp), log)
        return _write({"machine": info, "config": bc.to_dict(), "warnings": [],
                       "figures": {"accelerator": fig}, "steps": {},
                       "wall_s": {"total": time.perf_counter() - t_start}}, out_dir, log)
    base = variants.base_config(bc.model, bc.overrides, bc.dtype, bc.batch_size, bc.seq_len,
                                bc.max_predictions, bc.sparsity_target, bc.seed)
    base.distill.fused_chunk = bc.fused_chunk
    mcfg = variants.model_config_of(base)
    log(f"model {bc.model}: {mcfg}")
    names = variants.kinds(bc.extras, bc.suite)
    local = synthetic.batch("pretraining", bc.batch_size, bc.seq_len, mcfg.vocab_size,
                            max_predictions=bc.max_predictions, seed=bc.seed, pad_fraction=0.5)
    long = None
    if any(variants.KINDS[n].long for n in names):
        rows, length, preds = variants.shape("dense_long", bc.batch_size, bc.seq_len,
                                             bc.max_predictions)
        long = synthetic.batch("pretraining", rows, length, mcfg.vocab_size,
                               max_predictions=preds, seed=bc.seed, pad_fraction=0.5)
    # The CPU figures run on a CPU device even where the default backend is a GPU or TPU.
    mesh = mesh_lib.make_mesh(1, 1, 1, devices=jax.devices("cpu")[:1])
    deadline = t_start + bc.time_budget_s
    with tempfile.TemporaryDirectory() as tmp:
        teacher = variants.save_teacher(base, pathlib.Path(tmp))
        student = variants.save_student(base, pathlib.Path(tmp))
        steps = variants.build_steps(base, names, teacher, local, mesh, bc.compile_threads,
                                     bc.fast_compile, log, long_batch=long,
                                     student_path=student)
        only = bc.suite != "all"  # kd / presets: our steps only, no PyTorch or accelerator
        torch_steps, torch_info = ({}, {"skipped": f"suite {bc.suite}"}) if only else (
            torch_hf.make_steps(mcfg, local, base.optim, bc.torch_threads, bc.extras, bc.seed))
        t_timing = time.perf_counter()
        fns = {**steps, **torch_steps}
        fns = {k: fns[k] for k in sorted(fns, key=ORDER.index)}
        times, cpu = timing.interleave(fns, bc.steps, bc.warmup, bc.pause_s,
                                       min(3, bc.steps), deadline, log)
        timing_s = time.perf_counter() - t_timing
        accel_fig = ({"skipped": f"suite {bc.suite}"} if only
                     else accel.run(bc, pathlib.Path(tmp), log))
    fl = {k: flops.train_step_flops(mcfg, bc.batch_size, bc.seq_len, bc.max_predictions,
                                    base.task, True, k == "prune")["total"]
          for k in ("prune", "dense")}
    figs = figures(times, cpu, fl["prune"] / fl["dense"], base.sparsity.update_every)
    figs["accelerator"] = accel_fig
    figs["reference_kd_peak_memory_ratio"] = memory_figure(steps, "reference_kd",
                                                           "dense_full_vocab", 1.25)
    info["load_avg_end"] = list(os.getloadavg())
    warnings = busy_warnings(info)
    result = {"machine": info, "config": bc.to_dict(), "model_config": mcfg.to_dict(),
              "train_config": {"optim": base.optim.to_dict(), "task": base.task,
                               "sparsity": {k: base.sparsity[k] for k in (
                                   "target", "update_every", "method", "regrow")}},
              "torch": torch_info, "warnings": warnings, "figures": figs,
              "steps": _step_records(steps, torch_steps, times, cpu, mcfg, bc),
              "wall_s": {"total": time.perf_counter() - t_start, "timing": timing_s}}
    return _write(result, out_dir, log)


def _write(result: dict, out_dir: str, log) -> dict:
    return machine.write(out_dir, "bench.json", result, table(result),
                         result["wall_s"]["total"], log)


def busy_warnings(info: dict) -> list[str]:
    """Other jobs on the machine: JAX ratios hold up (see cpu_ratio), PyTorch's do not."""
    load, cores = info["load_avg_start"][0], info["cores"] or 1
    if load < 0.5 * cores:
        return []
    return [f"machine busy before the bench started (load {load:.1f} on {cores} cores): the "
            "PyTorch step (OpenMP threads wait for descheduled peers) slows down far more than "
            "the XLA step under contention, so the HF figures overstate our speed-up; rerun "
            "on an idle machine for them"]


def table(result: dict) -> str:
    """The figures as a plain-text table."""
    rows = [("figure", "value", "target", "met", "paired / min / cpu ratio")]
    for key, fig in result["figures"].items():
        if key == "accelerator":
            if "skipped" in fig:
                rows.append((key, "skipped: no accelerator", "", "", ""))
            else:
                for name in accel.STEPS:
                    p = fig[name]
                    met = str(fig["met"]) if name == "prune_ofa" else "-"
                    rows.append((f"{key} MFU {name}", f"{p['mfu'] or float('nan'):.3f}",
                                 ">= 0.45" if name == "prune_ofa" else "-", met,
                                 f"{p['samples_per_s']:.0f} samples/s"))
            continue
        if "skipped" in fig:
            rows.append((key, fig["skipped"], "", "", ""))
            continue
        target = f"{fig['direction']} {fig['target']}" if "target" in fig else "-"
        extra = (f"{fig['numerator_bytes'] / 2**20:.0f} / {fig['denominator_bytes'] / 2**20:.0f}"
                 " MiB" if "numerator_bytes" in fig else
                 f"{fig['paired_ratio']:.3f} / {fig['min_ratio']:.3f} / {fig['cpu_ratio']:.3f}")
        rows.append((key, f"{fig['value']:.3f}", target, str(fig.get("met", "-")), extra))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    steps = result["steps"]
    lines.extend(["WARNING: " + w for w in result.get("warnings", [])])
    lines.append("")
    lines.append("step medians (s): " + ", ".join(
        f"{k} {v['median_s']:.3f}" for k, v in steps.items()))
    return "\n".join(lines)
