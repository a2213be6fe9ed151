"""Test setup: 8 fake CPU devices (set before jax is imported) so sharding is exercised, and
a persistent compilation cache so the many tiny steps the suite builds compile once."""

import os
import subprocess
import sys

# XLA's backend at -O0 without its expensive LLVM passes: the suite's steps are tiny, so
# compiling them dominates its time, and the codegen stays correct (only slower to run).
# Tests check behaviour, never speed (speed is the bench's job, which compiles normally).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
# XLA:CPU's elemental emitters and one codegen module instead of its MLIR fusion emitters and
# a split for parallel codegen: measured on three end-to-end tests with a cold cache, 2 rounds
# (user CPU 72 s and 68 s against 84 s and 100 s). Older emitters, same semantics. An XLA that
# no longer knows a flag aborts on it, so they are tried once (controller) in a subprocess.
CHEAPER_CODEGEN = "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1"


def _xla_accepts(flags: str) -> bool:
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    probe = [sys.executable, "-c", "import jax; jax.jit(lambda x: x + 1)(1)"]
    return subprocess.run(probe, env=env, capture_output=True, check=False).returncode == 0


if "POFA_TEST_XLA_FLAGS" not in os.environ:  # the controller; xdist workers inherit it
    os.environ["POFA_TEST_XLA_FLAGS"] = (
        f"{FAST_COMPILE} {CHEAPER_CODEGEN}" if _xla_accepts(CHEAPER_CODEGEN) else FAST_COMPILE)
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8 "
    + os.environ["POFA_TEST_XLA_FLAGS"]).strip()
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
import shutil  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(
    os.environ.get("PRUNE_OFA_DATA", REPO.parent / "shared" / "data")
)
# Many tests build the same step (one recipe on several meshes, a run and its resume, the
# demo's two fine-tunes, a CLI run in a subprocess): identical programs compile once. Set
# through the environment so subprocesses share it. The cache lives in the (ignored)
# checkout, so a fresh clone starts cold, as CI does.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# No size limit inside JAX: with one, every write lists and stats the whole cache to pick
# what to evict (quadratic over the suite: ~0.1 s per compile once it holds ~1,000 programs).
# The bound is kept once per session instead (pytest_configure below).
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", "-1")
CACHE_LIMIT_BYTES = 2 * 2**30


def pytest_configure(config):
    """Registers the `slow` marker; empties the compilation cache once it is over
    CACHE_LIMIT_BYTES (controller only)."""
    config.addinivalue_line("markers", "slow: takes a minute or more; scheduled first")
    cache = pathlib.Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    if hasattr(config, "workerinput") or not cache.is_dir():
        return
    if sum(f.stat().st_size for f in cache.iterdir()) > CACHE_LIMIT_BYTES:
        shutil.rmtree(cache, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` run first (the order is otherwise kept). With `worksteal` the long
    ones then start while short ones are still queued to balance them against; a long test
    started last would leave the other core idle for its whole length (the end-to-end tests
    take minutes on CI's 2 cores)."""
    del config
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core, at most 4 (each holds 8 fake devices and ~3 GB)."""
    del config
    return max(1, min(4, len(os.sched_getaffinity(0))))


@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory) -> dict:
    """Tiny random checkpoints (real 30522 vocab) shared by the training tests: the same
    shapes everywhere, so their steps compile once (see the cache above)."""
    import train_helpers  # pylint: disable=import-outside-toplevel
    root = tmp_path_factory.mktemp("tiny_ckpts")
    return {"bert": train_helpers.save_tiny(root / "bert"),
            "distilbert": train_helpers.save_tiny(root / "distil", "distilbert-base-uncased",
                                                  "mlm")}


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set PRUNE_OFA_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def prepared_corpus(tmp_path_factory, shared_data) -> pathlib.Path:
    """WikiText-2 valid prepared for seq_len 32 (the :test recipes' length) with Beam's
    in-process runner: the input the streaming and multi-host tests train on."""
    from prune_ofa_jax.data import prepare  # pylint: disable=import-outside-toplevel
    out = tmp_path_factory.mktemp("prepared") / "wiki_32"
    args, beam_args = prepare.parse([
        "--source", "text:wikitext2/valid.txt", "--workdir", str(out), "--seq_len", "32",
        "--root", str(shared_data), "--runner=DirectRunner",
        "--direct_running_mode=in_memory", "--direct_num_workers=1"])
    prepare.run(args, beam_args)
    return out
