"""Test setup: 8 fake CPU devices (set before jax is imported) so sharding is exercised."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA:CPU runs the fake devices' collectives as blocking tasks on one shared thread pool
# (8 threads by default on a 2-core machine). When a step issues independent collectives
# (the FSDP mask update does), 8 of them can fill the pool while waiting for a device that
# has no thread left: "Termination timeout ... Expected 8 threads to join the rendezvous".
# A repro (mask update every step, 8-way FSDP) aborted in 3 of 3 runs with the default
# pool and passed 3 of 3 x 80 steps with 32 threads, at the same test time.
# PJRT_NPROC is read by XLA's DefaultThreadPoolSize() when the CPU client is created.
os.environ.setdefault("PJRT_NPROC", "32")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(
    os.environ.get("PRUNE_OFA_DATA", REPO.parent / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set PRUNE_OFA_DATA")
    return SHARED_DATA
