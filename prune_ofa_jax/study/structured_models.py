"""The structured study's models beyond its training runs (study/structured_study.py): the
derived starting points (uniform layer dropping: the teacher's first k layers, head kept;
AutoTinyBERT's searched architectures cut from the teacher by nas/extract.py's command) and
the latency of every trained model as deployed (compact ONNX, int8 for a QAT model), timed
by runtime/latency.py side by side with the task's dense model. Everything is written once
into the workdir and read back on a rerun."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np

from prune_ofa_jax import jsonio
from prune_ofa_jax.convert import hf, params_ckpt, qat_ranges
from prune_ofa_jax.runtime import latency as latency_lib
from prune_ofa_jax.sparsity import groups

DENSE = "dense_s0"  # every latency group's reference


def arch_of(text: str) -> dict:
    """"L/H/FFN/qkv" -> the AutoTinyBERT arch as nas/extract.py's --arch takes it."""
    return dict(zip(("layers", "hidden", "ffn", "qkv"), (int(x) for x in text.split("/"))))


def _extract(model: pathlib.Path, arch: dict, out: pathlib.Path) -> None:
    """nas/extract.py's command (the nas package imports the studies', so not imported)."""
    cmd = [sys.executable, "-m", "prune_ofa_jax.nas.extract", "--supernet", str(model),
           "--arch", json.dumps(arch), "--workdir", str(out), "--overwrite"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): "
                           f"{done.stderr.strip()[-2000:]}")


def derived(p, root: pathlib.Path, task: str, teacher_dir, row: dict):
    """The starting point of a layer-drop or AutoTinyBERT row (written once), else None."""
    model = pathlib.Path(teacher_dir) / "model"
    if row["family"] == "layer_drop":
        out = root / f"{task}_drop{row['level']}_init"
        if not (out / "model.json").is_file():
            params, mcfg, task_name = params_ckpt.load_params(model)
            params = jax.device_get(params)
            enc = params["backbone"]["encoder"]
            params["backbone"]["encoder"] = {f"layer_{i}": enc[f"layer_{i}"]
                                             for i in range(row["level"])}
            params_ckpt.save_params(out, params, mcfg.replace(num_layers=row["level"]),
                                    task_name)
        return out
    if row["family"] == "autotinybert":
        out = root / f"{task}_atb_{row['level'].replace('/', '-')}_init"
        if not (out / "config.json").is_file():
            _extract(model, arch_of(row["level"]), out)
        return out
    return None


def _load(model_dir: pathlib.Path):
    params, mcfg, _ = params_ckpt.load_params(model_dir)
    return jax.device_get(params), mcfg, qat_ranges.load(model_dir)


def compact_size(model_dir: pathlib.Path) -> dict:
    """The run's compact encoder size (groups.compact_size)."""
    params, mcfg, _ = _load(model_dir)
    return groups.compact_size({k: np.asarray(x) for k, x in hf.flatten(params).items()}, mcfg)


def variant(root: pathlib.Path, name: str, model_dir: pathlib.Path) -> latency_lib.Variant:
    """The run's model as deployed: compact ONNX (int8 with its QAT ranges)."""
    params, mcfg, quant = _load(model_dir)
    return latency_lib.onnx_variant(name, params, mcfg, root / "onnx" / f"{name}.onnx",
                                    int8=quant is not None, quant=quant)


def timed_runs(runs: dict, task: str, every_seed: bool = True) -> list:
    """The run names timed for `task`: every seed of the structured rows when `every_seed`
    (their shapes differ by seed), the first seed of the others (one shape), the dense
    model first."""
    first: dict = {}  # row key -> its smallest seed
    for _, _, t, key, seed in runs.values():
        if t == task:
            first[key] = min(seed, first.get(key, seed))
    out = [name for name, (_, _, t, key, seed) in runs.items()
           if t == task and ((every_seed and key.startswith("st")) or seed == first[key])]
    dense = f"{task}_{DENSE}"
    return [dense] + [n for n in out if n != dense]


def latencies(p, root: pathlib.Path, runs: dict, say) -> dict:
    """{task: {"groups": [latency.measure results], "sizes": {run: compact_size}}}, cached
    in root/latency_<task>.json. Variants are timed in groups of `latency.group`, each with
    the task's dense model, so every ratio is paired within rounds."""
    lp, out = p.latency, {}
    settings = latency_lib.Settings(threads=lp.threads, warmup=lp.warmup, repeats=lp.repeats,
                                    budget_s=lp.budget_s, min_repeats=min(5, lp.repeats))
    for task in p.tasks:
        cache = root / f"latency_{task}.json"
        if cache.is_file():
            out[task] = json.loads(cache.read_text())
            say(f"latency {task}: done before, skipping")
            continue
        names = timed_runs(runs, task, lp.every_seed)
        sizes = {n: compact_size(v[1] / "model") for n, v in runs.items() if v[2] == task}
        dense, *rest = [variant(root, n[len(task) + 1:], runs[n][1] / "model") for n in names]
        size = max(1, lp.group - 1)
        res = []
        for i in range(0, len(rest), size):
            chunk = [dense] + rest[i:i + size]
            say(f"latency {task}: {', '.join(v.name for v in chunk)}")
            res.append(latency_lib.measure(chunk, tuple(lp.batch_sizes), lp.seq_len, settings,
                                           log=say))
        out[task] = {"groups": res, "sizes": sizes}
        cache.write_text(jsonio.dumps(out[task], indent=1))
    return out


def per_variant(task_latency: dict) -> dict:
    """{variant: {batch: {"ms", "speedup"}}} over a task's groups (the dense model: its
    mean over groups, speedup 1), each speedup against the dense model of its own group."""
    out: dict = {}
    for group in task_latency["groups"]:
        for b, res in group["batches"].items():
            for name, st in res.items():
                sp = 1.0 if name == DENSE else latency_lib.speedup(res, name, DENSE)["ratio"]
                out.setdefault(name, {}).setdefault(b, []).append((st["median_ms"], sp))
    return {n: {b: {"ms": float(np.mean([m for m, _ in v])),
                    "speedup": float(np.mean([s for _, s in v]))} for b, v in per.items()}
            for n, per in out.items()}
