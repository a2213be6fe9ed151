#!/usr/bin/env bash
# Multi-GPU, one or many nodes. One process per node drives all of that node's GPUs.
#
# Single node (all local GPUs, no coordinator needed):
#   launch/multi_gpu.sh configs/prune_ofa_bert_base.py:90 runs/pofa90 --config.model.dtype=bfloat16
# Several nodes (run on every node; rank 0's address is the coordinator):
#   NUM_NODES=4 NODE_RANK=$i COORDINATOR=host0:1234 launch/multi_gpu.sh CONFIG WORKDIR [overrides]
# Under SLURM, `srun launch/multi_gpu.sh ...` works as is: jax.distributed.initialize()
# reads the SLURM environment.
set -euo pipefail
CONFIG=$1; WORKDIR=$2; shift 2
cd "$(dirname "$0")/.."
[[ -x .venv/bin/python ]] || ./setup.sh
.venv/bin/python -c "import jax; assert jax.devices()[0].platform == 'gpu'" 2>/dev/null \
  || .venv/bin/pip install -q "jax[cuda12]"
if [[ -n "${NUM_NODES:-}" && "${NUM_NODES}" -gt 1 ]]; then
  export JAX_COORDINATOR_ADDRESS=${COORDINATOR:?set COORDINATOR=host:port}
  export JAX_NUM_PROCESSES=${NUM_NODES} JAX_PROCESS_ID=${NODE_RANK:?set NODE_RANK}
fi
exec .venv/bin/python -m prune_ofa_jax.main --config "${CONFIG}" --workdir "${WORKDIR}" "$@"
