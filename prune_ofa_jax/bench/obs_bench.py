"""`--config.suite=obs`: what second-order pruning (OBS, sparsity/methods/second_order.py)
costs, measured side by side in one run on the bench model (the upstream recipe's masked
step, no teacher, one CPU device):

- obs_fisher_step_vs_train_step: the OBS run's compiled step inside a Fisher window (the
  step plus the accumulation of its gradient into the block Fisher) over the same compiled
  step outside a window (the step alone), interleaved;
- obs_idle_step_vs_gmp_step: that step outside a window over GMP's step (what carrying the
  Fisher in the state costs when it is not updated);
- obs_prune_s_per_1m_weights: one prune-and-update (saliency of every block, the exact
  selection, the OBS update of the kept weights) to `sparsity_target` from dense, seconds
  per million prunable weights;
- obs_fisher_bytes: the Fisher's bytes (float32 [blocks, B, B] per prunable kernel), in all
  and per device when split over 8 devices.
"""

from __future__ import annotations

import functools
import os
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections

from prune_ofa_jax.bench import machine, timing, variants
from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.sparsity import obs
from prune_ofa_jax.train import build as build_lib
from prune_ofa_jax.train import synthetic

FIGURES = ("obs_fisher_step_vs_train_step", "obs_idle_step_vs_gmp_step",
           "obs_prune_s_per_1m_weights", "obs_fisher_bytes")
FAR = 1_000_000  # the OBS schedule's first update step: no prune happens while timing


def obs_config(base, bc) -> tuple[ml_collections.ConfigDict, int]:
    """(the OBS variant of the masked step, its window length): one update step far ahead,
    the window long enough for every timed step (warm-up included)."""
    c = variants.variant_config(base, "masks_only", "")
    window = max(bc.obs.num_grads, bc.warmup + bc.steps + 1)
    c.sparsity.update(method="obs", begin_step=FAR, end_step=2 * FAR, update_every=FAR,
                      freeze_step=2 * FAR + 1)
    c.sparsity.obs.update(block_size=bc.obs.block_size, num_grads=window, damp=bc.obs.damp)
    return c, window


def _figure(times, cpu, num: str, den: str, note: str) -> dict:
    r = timing.ratio(times, num, den, cpu=cpu)
    return {"value": r["ratio"], **r, "note": note}


def run(bc, out_dir: str = "bench_results", log=print) -> dict:
    """The obs suite; writes `<out_dir>/bench.json` and returns its content."""
    t_start = time.perf_counter()
    info = machine.info()
    base = variants.base_config(bc.model, bc.overrides, bc.dtype, bc.batch_size, bc.seq_len,
                                bc.max_predictions, bc.sparsity_target, bc.seed)
    mcfg = variants.model_config_of(base)
    log(f"model {bc.model}: {mcfg}")
    mesh = mesh_lib.make_mesh(1, 1, 1, devices=jax.devices("cpu")[:1])
    local = synthetic.batch("pretraining", bc.batch_size, bc.seq_len, mcfg.vocab_size,
                            max_predictions=bc.max_predictions, seed=bc.seed, pad_fraction=0.5)
    batch = mesh_lib.global_batch(local, mesh, accum=1)
    options = variants.FAST_COMPILE if bc.fast_compile else None
    gmp = variants.JaxStep("gmp", build_lib.build(variants.variant_config(
        base, "masks_only", ""), mesh), batch).compile(options)
    c_obs, window = obs_config(base, bc)
    run_obs = build_lib.build(c_obs, mesh)
    start = jax.tree.map(jnp.copy, run_obs.state)  # own buffers: each state is donated
    start = start.replace(step=jax.device_put(jnp.int32(FAR - window), start.step.sharding))
    idle = variants.JaxStep("obs_idle", run_obs, batch).compile(options)
    run_obs.state = start
    inside = variants.JaxStep("obs_window", run_obs, batch)
    inside.compiled, inside.compile_s = idle.compiled, 0.0  # one program, two states
    log(f"  compiled gmp in {gmp.compile_s:.1f} s, obs in {idle.compile_s:.1f} s")
    times, cpu = timing.interleave({"gmp": gmp, "obs_idle": idle, "obs_window": inside},
                                   bc.steps, bc.warmup, bc.pause_s, min(3, bc.steps),
                                   t_start + bc.time_budget_s, log)
    count = int(inside.state.method_state.count)
    if count != bc.warmup + len(times["obs_window"]):  # every call accumulated one gradient
        raise RuntimeError(f"obs_window: {count} gradients in the Fisher after "
                           f"{bc.warmup + len(times['obs_window'])} steps")

    # the window state's weights after the timed steps, and the Fisher of their gradients
    params, masks, fisher = inside.state.params, inside.state.masks, inside.state.method_state
    prunable = sum(int(m.size) for m in jax.tree.leaves(masks))
    prune = jax.jit(functools.partial(obs.prune, damp=bc.obs.damp, distribution="uniform",
                                      mesh=mesh))
    t0 = time.perf_counter()
    jax.block_until_ready(prune(params, fisher, masks, bc.sparsity_target))
    compile_prune = time.perf_counter() - t0
    prune_s = []
    for _ in range(max(1, min(3, bc.steps))):
        t0 = time.perf_counter()
        jax.block_until_ready(prune(params, fisher, masks, bc.sparsity_target))
        prune_s.append(time.perf_counter() - t0)
    log(f"  prune-and-update: {', '.join(f'{t:.2f}' for t in prune_s)} s "
        f"({prunable / 1e6:.2f}M weights)")

    figures = {
        "obs_fisher_step_vs_train_step": _figure(
            times, cpu, "obs_window", "obs_idle",
            f"one step + the accumulation of its gradient into the block Fisher (B="
            f"{bc.obs.block_size}) over the same step outside a window"),
        "obs_idle_step_vs_gmp_step": _figure(
            times, cpu, "obs_idle", "gmp", "the OBS step outside a window over GMP's step"),
        "obs_prune_s_per_1m_weights": {
            "value": statistics.median(prune_s) / (prunable / 1e6), "prune_s": prune_s,
            "first_call_s": compile_prune, "prunable_weights": prunable,
            "sparsity": bc.sparsity_target, "block_size": bc.obs.block_size,
            "note": "saliency + exact selection + OBS update, from dense, one device"},
        "obs_fisher_bytes": {**obs.fisher_bytes(masks, bc.obs.block_size),
                             "per_device_of_8": obs.fisher_bytes(
                                 masks, bc.obs.block_size, 8)["per_device"],
                             "block_size": bc.obs.block_size},
    }
    info["load_avg_end"] = list(os.getloadavg())
    result = {"machine": info, "config": bc.to_dict(), "model_config": mcfg.to_dict(),
              "figures": figures, "warnings": [],
              "steps": {k: {**timing.summary(v), "cpu_median_s": statistics.median(cpu[k])}
                        for k, v in times.items()},
              "wall_s": {"total": time.perf_counter() - t_start}}
    return machine.write(out_dir, "bench.json", result, table(result), result["wall_s"]["total"],
                         log)


def table(result: dict) -> str:
    f = result["figures"]
    rows = []
    for key in ("obs_fisher_step_vs_train_step", "obs_idle_step_vs_gmp_step"):
        rows.append(f"{key}: {f[key]['value']:.3f} (paired {f[key]['paired_ratio']:.3f}, "
                    f"cpu {f[key]['cpu_ratio']:.3f})")
    p, b = f["obs_prune_s_per_1m_weights"], f["obs_fisher_bytes"]
    rows.append(f"obs_prune_s_per_1m_weights: {p['value']:.2f} s "
                f"({p['prunable_weights'] / 1e6:.2f}M weights, B={p['block_size']})")
    rows.append(f"obs_fisher_bytes: {b['total'] / 2**20:.0f} MiB in all, "
                f"{b['per_device_of_8'] / 2**20:.0f} MiB per device of 8")
    rows.append("step medians (s): " + ", ".join(
        f"{k} {v['median_s']:.3f}" for k, v in result["steps"].items()))
    return "\n".join(rows)
