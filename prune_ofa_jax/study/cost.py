"""What a study cost: wall and CPU time summed over every run it trained (each run's
report.json records its own), and the sentence each study's table ends with."""

from __future__ import annotations

import json
import pathlib


def cost(reports) -> dict:
    """The summary's cost fields from every run's report: wall and CPU time summed over the
    runs (a resumed study's last invocation alone would understate it)."""
    reports = list(reports)
    cpu = [r["cpu_time_s"] for r in reports if "cpu_time_s" in r]  # (older reports lack it)
    return {"run_wall_time_s": round(sum(r["wall_time_s"] for r in reports), 1),
            "run_cpu_time_s": round(sum(cpu), 1), "runs_with_cpu_time": len(cpu),
            "runs": len(reports)}


def cost_of_runs_under(root: pathlib.Path) -> dict:
    """cost() over every run (report.json) below `root`, for studies that keep no list."""
    return cost(json.loads(f.read_text()) for f in sorted(pathlib.Path(root).rglob("report.json")))


def cost_line(summary: dict) -> str:
    """The sentence the studies' tables end with, from cost()'s fields."""
    text = f"Whole study: {summary.get('run_wall_time_s', 0) / 60:.1f} min of run wall time"
    n, runs = summary.get("runs_with_cpu_time", 0), summary.get("runs", 0)
    if n:
        text += (f", {summary['run_cpu_time_s'] / 60:.1f} min of CPU time"
                 + (f" ({n} of its {runs} runs record it)" if n < runs else ""))
    return text + "."
