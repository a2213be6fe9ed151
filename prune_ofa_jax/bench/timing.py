"""Interleaved timing: every variant runs once per round, so slow drifts of a shared, noisy
machine hit all variants alike; figures are ratios of medians.

Within a round the variants run in a fixed order that puts the two sides of each figure next
to each other, and every other round runs in reverse (A B B A ...), so no variant always
follows the same neighbour. Besides wall time, each call's process CPU time is recorded: on
a machine shared with other jobs it is a steadier measure of the work a JAX step does (not
of a PyTorch step, whose OpenMP threads spin while they wait for a descheduled peer).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Optional


def interleave(steps: dict[str, Callable[[], None]], rounds: int, warmup: int = 1,
               pause_s: float = 0.0, min_rounds: int = 3, deadline: Optional[float] = None,
               log=print) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(wall seconds, CPU seconds) per call of each step; each call must block until its
    result is ready. Stops early (after at least `min_rounds`) when another round would
    end after `deadline` (a time.perf_counter() value)."""
    names = list(steps)
    for i in range(warmup):
        for name in names:
            steps[name]()
        log(f"  warm-up round {i + 1}/{warmup} done")
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for r in range(rounds):
        t_round = time.perf_counter()
        for name in names if r % 2 == 0 else names[::-1]:
            if pause_s:
                time.sleep(pause_s)
            c0, t0 = time.process_time(), time.perf_counter()
            steps[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {wall[n][-1]:.3f}s" for n in names))
        now = time.perf_counter()
        if deadline is not None and r + 1 >= min_rounds and now + (now - t_round) > deadline:
            log(f"  stopping after {r + 1} rounds (time budget)")
            break
    return wall, cpu


def summary(ts: list[float]) -> dict:
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
            "times_s": [round(t, 6) for t in ts]}


def ratio(times: dict[str, list[float]], num: str, den: str,
          cpu: Optional[dict[str, list[float]]] = None) -> dict:
    """median(num) / median(den), plus the median of per-round ratios, min/min and the
    ratio of median CPU times."""
    a, b = times[num], times[den]
    out = {"ratio": statistics.median(a) / statistics.median(b),
           "paired_ratio": statistics.median(x / y for x, y in zip(a, b)),
           "min_ratio": min(a) / min(b), "numerator": num, "denominator": den}
    if cpu is not None:
        out["cpu_ratio"] = statistics.median(cpu[num]) / statistics.median(cpu[den])
    return out
