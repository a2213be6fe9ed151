"""What ran the bench: CPU, cores, whether its int8 kernels are exact (VNNI/AMX: int8
speed-ups differ with them), load, accelerator and package versions; and where its result
goes (`write`)."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import pathlib
import platform
import subprocess

import jax

from prune_ofa_jax import jsonio
from prune_ofa_jax.runtime import ort

PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "transformers")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True,
                              cwd=os.path.dirname(__file__)).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def info() -> dict:
    dev = jax.devices()[0]
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "int8_exact": ort.int8_exact(),
            "platform": platform.platform(),
            "jax_backend": dev.platform, "device_kind": dev.device_kind,
            "device_count": jax.device_count(), "load_avg_start": list(os.getloadavg()),
            "versions": versions(), "git_commit": git_commit(),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def write(out_dir, name: str, result: dict, text: str, wall_s: float, log) -> dict:
    """OUT_DIR/name as strict JSON (jsonio: NaN/inf -> null), `text` and the file's path
    logged; returns the result."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(jsonio.dumps(result, indent=2, default=str) + "\n")
    log(text)
    log(f"wrote {out / name} ({wall_s:.0f} s)")
    return result
