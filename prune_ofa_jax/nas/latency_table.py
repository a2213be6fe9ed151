"""Real latency of sub-models on this machine, in the runtime users deploy: the latency table
the predictor learns from.

`hf_torch` (default): the plain HF PyTorch `BertModel` that `extract` writes for the arch
(same config, so the same shapes and kernels; random weights, whose values do not change the
time), timed by the one latency function (runtime/latency.py: each model in its own worker
process, `threads` intra-op threads (theirs: 1), `warmup` untimed calls, then `repeats`
rounds alternating between the workers; the figure is the median, in milliseconds). The
archs are timed in groups of `group`, each beside the teacher, so every group carries its
own measure of the teacher (how far the machine drifted between groups).
`jax`: the exact sub-model (nas/elastic.py, no padding), jitted on one CPU device, in this
process (the median of `repeats` calls after `warmup`).
Inputs: all-ones attention mask, `seq_len` tokens, each batch size in `batch_sizes`.

`measure_table` appends one JSON line per arch to a file and skips archs already in it, so an
interrupted table resumes.
"""

from __future__ import annotations

import json
import logging
import pathlib
import statistics
import tempfile
import time
from typing import Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from prune_ofa_jax.models import bert
from prune_ofa_jax.nas import elastic
from prune_ofa_jax.nas import extract as extract_lib
from prune_ofa_jax.nas import space as space_lib
from prune_ofa_jax.runtime import latency

log = logging.getLogger(__name__)
RUNTIMES = ("hf_torch", "jax")
TEACHER = "teacher"


def settings(lat_cfg) -> latency.Settings:
    return latency.Settings(threads=lat_cfg.threads, warmup=lat_cfg.warmup,
                            repeats=lat_cfg.repeats, vocab_hi=20000)


def hf_config(teacher_cfg, arch: space_lib.Arch):
    """The transformers config `extract` writes for `arch`."""
    return extract_lib.hf_config_of(teacher_cfg, arch).to_hf(architectures=["BertModel"])


def _ms(res: dict, name: str) -> dict:
    return {b: round(per[name]["median_ms"], 4) for b, per in res["batches"].items()}


def torch_group(teacher_cfg, archs, lat_cfg, pool: latency.Pool) -> tuple:
    """({arch: {batch: ms}}, {batch: teacher ms}) for archs timed side by side with the
    teacher (random-weight HF BertModels from their configs)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        top = space_lib.Arch(teacher_cfg.num_layers, teacher_cfg.hidden_size,
                             teacher_cfg.intermediate_size, teacher_cfg.hidden_size)
        variants = [latency.torch_config_variant(TEACHER, hf_config(teacher_cfg, top),
                                                 tmp / TEACHER)]
        variants += [latency.torch_config_variant(a.key(), hf_config(teacher_cfg, a),
                                                  tmp / f"a{i}") for i, a in enumerate(archs)]
        res = latency.measure(variants, lat_cfg.batch_sizes, lat_cfg.seq_len,
                              settings(lat_cfg), log=lambda *_: None, pool=pool)
    return {a: _ms(res, a.key()) for a in archs}, _ms(res, TEACHER)


def _median_ms(call, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def jax_latency(teacher_cfg, arch, batch: int, seq_len: int, warmup: int, repeats: int) -> float:
    dev = jax.devices("cpu")[0]
    # Any weights of the right shapes (time does not depend on dense values): the
    # teacher-shaped tree, sliced to the arch.
    shaped = bert.abstract_params(bert.BertFamily(teacher_cfg, "base"))
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype, device=dev), shaped)
    sub = jax.device_put(elastic.slice_params(params, arch, teacher_cfg.num_heads), dev)
    fwd = jax.jit(lambda p, i, m: elastic.forward(p, i, m, cfg=teacher_cfg)["last_hidden_state"])
    ids = jax.device_put(jnp.full((batch, seq_len), 2023, jnp.int32), dev)
    mask = jnp.ones_like(ids)
    return _median_ms(lambda: fwd(sub, ids, mask).block_until_ready(), warmup + 1, repeats)


def _jax_row(teacher_cfg, arch, lat_cfg) -> dict:
    return {str(b): round(jax_latency(teacher_cfg, arch, int(b), lat_cfg.seq_len,
                                      lat_cfg.warmup, lat_cfg.repeats), 4)
            for b in lat_cfg.batch_sizes}


def read_table(path) -> dict:
    """arch -> {batch: ms} from a table file (missing file: empty)."""
    path = pathlib.Path(path)
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {space_lib.Arch.from_dict(r["arch"]): r["ms"] for r in rows}


def read_group_teacher(path) -> dict:
    """arch -> the teacher's {batch: ms} timed beside it (hf_torch tables)."""
    path = pathlib.Path(path)
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {space_lib.Arch.from_dict(r["arch"]): r["teacher_ms"] for r in rows
            if "teacher_ms" in r}


def read_teacher_ms(path) -> list:
    """The teacher's {batch: ms} of every group timed (hf_torch), in order."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return list({r["group"]: r["teacher_ms"] for r in rows if "teacher_ms" in r}.values())


def measure_table(teacher_cfg, archs: Iterable, lat_cfg, path, say=print,
                  pool: Optional[latency.Pool] = None) -> dict:
    """Measures every arch not yet in `path` (one JSON line each); returns the whole table.
    `pool`: worker processes to reuse (else its own, closed at the end)."""
    if lat_cfg.runtime not in RUNTIMES:
        raise ValueError(f"config.nas.latency.runtime: {lat_cfg.runtime!r} is not one of "
                         f"{RUNTIMES}")
    path = pathlib.Path(path)
    table = read_table(path)
    todo = [a for a in dict.fromkeys(archs) if a not in table]
    step = max(1, int(lat_cfg.group)) if lat_cfg.runtime == "hf_torch" else 1
    own = pool is None and lat_cfg.runtime == "hf_torch" and bool(todo)
    pool = latency.Pool(lat_cfg.threads) if own else pool
    try:
        for start in range(0, len(todo), step):
            group = todo[start:start + step]
            if lat_cfg.runtime == "hf_torch":
                rows, teacher_ms = torch_group(teacher_cfg, group, lat_cfg, pool)
            else:
                rows, teacher_ms = {a: _jax_row(teacher_cfg, a, lat_cfg) for a in group}, None
            gid = f"{time.time():.3f}"
            with path.open("a", encoding="utf-8") as f:
                for arch in group:
                    table[arch] = rows[arch]
                    f.write(json.dumps({"arch": arch.to_dict(), "ms": rows[arch],
                                        "runtime": lat_cfg.runtime, "group": gid,
                                        **({"teacher_ms": teacher_ms} if teacher_ms else {})})
                            + "\n")
            for i, arch in enumerate(group, start + 1):
                say(f"latency {i}/{len(todo)} {arch.key()}: "
                    + ", ".join(f"batch {b} {v:.2f} ms" for b, v in rows[arch].items()))
    finally:
        if own:
            pool.close()
    return table


def table_arrays(table: dict, batch_sizes) -> tuple:
    """(archs, features [N, 4], ms [N, len(batch_sizes)])."""
    archs = sorted(table)
    feats = np.stack([a.features() for a in archs])
    ms = np.array([[table[a][str(b)] for b in batch_sizes] for a in archs], np.float64)
    return archs, feats, ms
