"""One JAX process of the 2-process tests (tests/test_multihost.py): runs a plan of training
runs in turn under jax.distributed (the env names the coordinator, process count and id).

argv: a JSON plan, a list of runs, each
  {"workdir": DIR, "cli": [ARGV...]}                      `python -m prune_ofa_jax.main ARGV`,
                                                          run as `python -m` runs it (runpy)
  {"workdir": DIR, "recipe": NAME, "arg": ARG, "overrides": {...}, "pause_at": K}
                                                          loop.run of configs/NAME.py:ARG
pause_at (optional): before its K-th pull from the input iterator, this process writes
`DIR.ready<process index>` and waits for `DIR.sent` (the test SIGTERMs the process group in
between), so the signal lands mid-run on both hosts, and the next batch must still come from
the (signalled) Grain workers.
The process exits with the first non-zero status (loop.Preempted: 143, as the CLI)."""

import json
import pathlib
import runpy
import sys
import time

import jax
import train_helpers
from jax._src import cache_key

from prune_ofa_jax.parallel import mesh as mesh_lib
from prune_ofa_jax.train import feed, loop


def _share_compiles() -> None:
    """One compile per program for both processes. JAX keys the persistent compilation cache
    with the CPU topology's fingerprint, which differs between the processes of one job, and
    only process 0 writes the cache: process 1 would compile every program anew, every launch.
    Keyed instead by the global devices (the same on every process, and apart from a
    single-process program's), process 1 reads process 0's entries, and with
    jax_share_binary_between_hosts takes process 0's fresh compiles from the coordinator."""
    def global_devices(hash_obj, devices):
        for d in devices.flat:
            cache_key._hash_string(hash_obj, f"{d.device_kind}/{d.id}/{d.process_index}")
    cache_key._hash_accelerator_config = global_devices
    jax.config.update("jax_share_binary_between_hosts", True)
    jax.config.update("jax_share_binary_between_hosts_timeout_ms", 300_000)  # not 20 min


def _pause_at(workdir: str, k: int) -> None:
    """Before the k-th pull from the input iterator (so at least one batch must come from
    the Grain workers after the signal)."""
    prefetch, pulls = feed.Feed.prefetch, [0]

    def pausing_prefetch(self):
        if self._next is None:
            pulls[0] += 1
            if pulls[0] == k:
                pathlib.Path(f"{workdir}.ready{jax.process_index()}").touch()
                sent, deadline = pathlib.Path(f"{workdir}.sent"), time.time() + 120
                while not sent.exists() and time.time() < deadline:
                    time.sleep(0.05)
                time.sleep(1.0)  # the notice reaches the coordination service
        return prefetch(self)
    feed.Feed.prefetch = pausing_prefetch


def _cli(argv: list) -> int:
    sys.argv = ["prune_ofa_jax.main", *argv]
    try:
        runpy.run_module("prune_ofa_jax.main", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def _run(spec: dict) -> int:
    c = train_helpers.recipe(spec["recipe"], spec.get("arg", "test"), resolve=False)
    c.update_from_flattened_dict(spec.get("overrides", {}))
    if spec.get("pause_at"):
        _pause_at(spec["workdir"], spec["pause_at"])
    try:
        loop.run(c, spec["workdir"])
    except loop.Preempted:
        return 143
    return 0


def main():
    mesh_lib.maybe_initialize_distributed()
    _share_compiles()
    for spec in json.loads(sys.argv[1]):
        t = time.time()
        code = _cli(spec["cli"]) if "cli" in spec else _run(spec)
        print(f"run {spec['workdir']}: exit {code} in {time.time() - t:.1f} s", flush=True)
        if code:
            sys.exit(code)


if __name__ == "__main__":
    main()
