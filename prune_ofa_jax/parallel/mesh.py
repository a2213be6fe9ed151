"""One named Mesh, logical-axis rules, and the shardings of state and batches.

The model annotates params with logical axis names ("embed", "mlp", "heads", "vocab", ...);
the config's rules map those to mesh axes. Data parallelism shards the batch over
("data", "fsdp"); FSDP additionally shards the "embed" dimension of params and optimizer
state over "fsdp"; an optional "tensor" axis shards "mlp"/"heads". A rule whose mesh axes do
not divide a dimension falls back to replication for that dimension, so tiny test models
and odd vocab sizes still compile.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import jax
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axes. With fsdp=tensor=1 (plain data parallel) every param is replicated.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("length", None),
    ("labels", None),
)


def maybe_initialize_distributed() -> None:
    """Multi-host: jax.distributed.initialize() before any device is touched.

    Explicit: JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID (launch/multi_gpu.sh).
    Auto-detected by JAX: TPU pod workers, SLURM, Open MPI. Single host: nothing. Idempotent
    (a pipeline's second run finds it done).
    """
    env = os.environ
    if jax.distributed.is_initialized():
        return
    if "JAX_COORDINATOR_ADDRESS" in env and "JAX_NUM_PROCESSES" in env:
        if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in env:  # CPU collectives across
            jax.config.update("jax_cpu_collectives_implementation", "gloo")  # processes
        jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"],
                                   int(env["JAX_NUM_PROCESSES"]), int(env["JAX_PROCESS_ID"]))
    elif any(m in env for m in ("TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")):
        if int(env.get("SLURM_NTASKS", env.get("OMPI_COMM_WORLD_SIZE", "2"))) > 1:
            jax.distributed.initialize()


def sync_hosts(name: str, timeout_s: int = 1800) -> None:
    """All processes wait here (the coordination service's barrier, not a collective).

    Gloo sets up each group's connections on its first collective and gives the group 30 s
    to gather; a process that starts, imports or builds much later than the others (a busy
    host) would fail that. Aligning them before the first step keeps the skew small."""
    if jax.process_count() > 1:
        import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
        ocp.multihost.sync_global_processes(name, timeout=timeout_s)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """Mesh over all (or the given) devices; one of the sizes may be -1 (fill the rest)."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"config.mesh: at most one axis may be -1, got {dict(zip(AXES, sizes))}")
    known = math.prod(s for s in sizes if s != -1)
    if any(s == 0 or s < -1 for s in sizes) or len(devices) % known:
        raise ValueError(f"config.mesh: sizes {dict(zip(AXES, sizes))} do not fit "
                         f"{len(devices)} devices")
    sizes = [len(devices) // known if s == -1 else s for s in sizes]
    if math.prod(sizes) != len(devices):
        raise ValueError(f"config.mesh: {dict(zip(AXES, sizes))} uses {math.prod(sizes)} "
                         f"devices but {len(devices)} are present")
    auto = (jax.sharding.AxisType.Auto,) * len(AXES)
    if devices == list(jax.devices()):
        return jax.make_mesh(tuple(sizes), AXES, axis_types=auto)
    return jax.sharding.Mesh(np.asarray(devices).reshape(sizes), AXES, axis_types=auto)


def from_config(mesh_config) -> jax.sharding.Mesh:
    """The run's mesh (config.mesh): its axes over every device, or over the first
    `mesh.devices` of them (one process; validate checks it)."""
    n = mesh_config.get("devices", 0)
    return make_mesh(mesh_config.data, mesh_config.fsdp, mesh_config.tensor,
                     devices=jax.devices()[:n] if n else None)


def _axis_size(mesh, axes) -> int:
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    return math.prod(mesh.shape[a] for a in axes)


def logical_to_mesh_spec(logical: P | None, shape: Sequence[int], mesh, rules) -> P:
    """Translate one logical PartitionSpec, replicating dims the mesh axes don't divide."""
    if logical is None:
        return P()
    table = dict(rules)
    out, used = [], set()
    for name, dim in zip(tuple(logical) + (None,) * (len(shape) - len(logical)), shape):
        axes = table.get(name) if name is not None else None
        flat = (axes,) if isinstance(axes, str) else tuple(axes or ())
        flat = tuple(a for a in flat if a not in used and mesh.shape.get(a, 1) > 1)
        if not flat or dim % _axis_size(mesh, flat):
            out.append(None)
            continue
        used.update(flat)
        out.append(flat[0] if len(flat) == 1 else flat)
    return P(*out)


def param_shardings(abstract_params, logical_specs, mesh, rules=DEFAULT_RULES):
    """NamedShardings for a params-shaped tree from its logical specs."""
    return jax.tree.map(
        lambda x, spec: NamedSharding(mesh, logical_to_mesh_spec(spec, x.shape, mesh, rules)),
        abstract_params, logical_specs, is_leaf=lambda s: isinstance(s, P) or s is None)


def opt_state_shardings(tx: optax.GradientTransformation, abstract_opt_state, params_shard,
                        mesh):
    """Params-shaped parts of the optimizer state follow the params; the rest is replicated."""
    replicated = NamedSharding(mesh, P())
    return optax.tree_map_params(
        tx, lambda _, s: s, abstract_opt_state, params_shard,
        transform_non_params=lambda _: replicated)


def replicated(mesh, tree: Any):
    return jax.tree.map(lambda _: NamedSharding(mesh, P()), tree)


def batch_sharding(mesh, ndim: int = 2, accum: bool = True) -> NamedSharding:
    """Train batches are [accum, micro_batch, ...] (dim 1 over ("data", "fsdp")); eval
    batches are [batch, ...] (dim 0)."""
    lead = (None,) if accum else ()
    return NamedSharding(mesh, P(*lead, ("data", "fsdp"), *(None,) * (ndim - 1 - len(lead))))


def to_host(tree):
    """numpy copies of (possibly multi-host sharded) arrays: every process gets the whole."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def global_batch(local: dict, mesh, accum: int | None = 1) -> dict:
    """Host-local numpy rows [b, ...] -> global jax Arrays [accum, B / accum, ...] (or
    [B, ...] when accum is None); each process feeds its own rows (multi-host)."""
    out = {}
    for k, v in local.items():
        v = np.asarray(v)
        if accum is not None:
            if v.shape[0] % accum:
                raise ValueError(f"local batch of {v.shape[0]} rows is not divisible by "
                                 f"train.grad_accum={accum}")
            v = v.reshape((accum, v.shape[0] // accum) + v.shape[1:])
        out[k] = jax.make_array_from_process_local_data(
            batch_sharding(mesh, v.ndim, accum is not None), v)
    return out
