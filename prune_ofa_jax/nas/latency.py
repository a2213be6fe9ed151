"""Real latency of sub-models on this machine, in the runtime users deploy.

`hf_torch` (default): the plain HF PyTorch `BertModel` that `extract` writes for the arch
(same config, so the same shapes and kernels; dense weights, whose values do not change the
time), under `torch.inference_mode`, with `threads` intra-op threads (theirs: 1).
`jax`: the exact sub-model (nas/elastic.py, no padding), jitted on one CPU device.
Inputs: all-ones attention mask, `seq_len` tokens, each batch size in `batch_sizes`. The
figure is the median of `repeats` timed calls after `warmup` untimed ones, in milliseconds.

`measure_table` appends one JSON line per arch to a file and skips archs already in it, so an
interrupted table resumes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pathlib
import statistics
import time
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from prune_ofa_jax.models import bert
from prune_ofa_jax.nas import elastic
from prune_ofa_jax.nas import extract as extract_lib
from prune_ofa_jax.nas import space as space_lib

log = logging.getLogger(__name__)
RUNTIMES = ("hf_torch", "jax")


def _median_ms(call: Callable, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


@contextlib.contextmanager
def torch_threads(n: int):
    import torch  # pylint: disable=import-outside-toplevel
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def hf_config(teacher_cfg, arch: space_lib.Arch):
    """The transformers config `extract` writes for `arch`."""
    return extract_lib.hf_config_of(teacher_cfg, arch).to_hf(architectures=["BertModel"])


def torch_model_latency(model, batch: int, seq_len: int, warmup: int, repeats: int) -> float:
    import torch  # pylint: disable=import-outside-toplevel
    ids = torch.full((batch, seq_len), 2023, dtype=torch.long)
    mask = torch.ones_like(ids)
    model.eval()
    with torch.inference_mode():
        return _median_ms(lambda: model(input_ids=ids, attention_mask=mask), warmup, repeats)


def hf_latency(teacher_cfg, arch, batch: int, seq_len: int, warmup: int, repeats: int) -> float:
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
    torch.manual_seed(0)
    model = transformers.BertModel(hf_config(teacher_cfg, arch))
    return torch_model_latency(model, batch, seq_len, warmup, repeats)


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


def measure(teacher_cfg, arch, lat_cfg) -> dict:
    """{batch size (str): median ms} for one arch."""
    if lat_cfg.runtime not in RUNTIMES:
        raise ValueError(f"config.nas.latency.runtime: {lat_cfg.runtime!r} is not one of "
                         f"{RUNTIMES}")
    fn = hf_latency if lat_cfg.runtime == "hf_torch" else jax_latency
    with torch_threads(lat_cfg.threads):
        return {str(b): round(fn(teacher_cfg, arch, int(b), lat_cfg.seq_len, lat_cfg.warmup,
                                 lat_cfg.repeats), 4)
                for b in lat_cfg.batch_sizes}


def read_table(path) -> dict:
    """arch -> {batch: ms} from a table file (missing file: empty)."""
    path = pathlib.Path(path)
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {space_lib.Arch.from_dict(r["arch"]): r["ms"] for r in rows}


def measure_table(teacher_cfg, archs: Iterable, lat_cfg, path, say=print) -> dict:
    """Measures every arch not yet in `path` (one JSON line each); returns the whole table."""
    path = pathlib.Path(path)
    table = read_table(path)
    todo = [a for a in dict.fromkeys(archs) if a not in table]
    for i, arch in enumerate(todo, 1):
        ms = measure(teacher_cfg, arch, lat_cfg)
        table[arch] = ms
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"arch": arch.to_dict(), "ms": ms,
                                "runtime": lat_cfg.runtime}) + "\n")
        say(f"latency {i}/{len(todo)} {arch.key()}: "
            + ", ".join(f"batch {b} {v:.2f} ms" for b, v in ms.items()))
    return table


def table_arrays(table: dict, batch_sizes) -> tuple:
    """(archs, features [N, 4], ms [N, len(batch_sizes)])."""
    archs = sorted(table)
    feats = np.stack([a.features() for a in archs])
    ms = np.array([[table[a][str(b)] for b in batch_sizes] for a in archs], np.float64)
    return archs, feats, ms
