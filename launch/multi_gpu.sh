#!/usr/bin/env bash
# Multi-GPU, one or many nodes. One process per node drives all of that node's GPUs.
#
# Single node (all local GPUs, no coordinator needed):
#   launch/multi_gpu.sh configs/prune_ofa_bert_base.py:90 runs/pofa90 --config.model.dtype=bfloat16
# Several nodes (run on every node; rank 0's address is the coordinator):
#   NUM_NODES=4 NODE_RANK=$i COORDINATOR=host0:1234 COMMIT=$SHA launch/multi_gpu.sh CONFIG WORKDIR [overrides]
# Under SLURM, `srun launch/multi_gpu.sh ...` works as is: jax.distributed.initialize()
# reads the SLURM environment.
#
# COMMIT (a sha, e.g. `git rev-parse HEAD` where you submit): this checkout is moved to it
# first (git fetch + checkout --detach; one node at a time on a shared filesystem), so every
# node runs the same code. The training command runs under launch/retry.sh: exit 143
# (preempted, checkpoint saved) reruns it, which resumes; any other failure stops.
# MAX_RESTARTS, RETRY_BACKOFF_S, RETRY_BACKOFF_MAX_S and RETRY_LOG_DIR (default
# ~/prune_ofa_jax_logs, attempts.log) are retry.sh's.
set -euo pipefail

pin_commit() {  # checks out $COMMIT unless HEAD is it already; a lock serialises the nodes
  [[ -n "${COMMIT:-}" ]] || return 0
  if command -v flock >/dev/null; then
    exec 9>"$(git rev-parse --git-dir)/prune_ofa_jax_launch.lock"
    flock 9
  fi
  if [[ "$(git rev-parse HEAD)" != "$(git rev-parse -q --verify "${COMMIT}^{commit}" || true)" ]]; then
    git fetch -q origin || true
    git checkout -q --detach "${COMMIT}" || {
      echo "error: COMMIT=${COMMIT} cannot be checked out here: push it, or commit/stash local changes" >&2
      exit 2
    }
  fi
  exec 9>&-
}

main() {
  local config=$1 workdir=$2
  shift 2
  pin_commit
  [[ -x .venv/bin/python ]] || ./setup.sh
  .venv/bin/python -c "import jax; assert jax.devices()[0].platform == 'gpu'" 2>/dev/null \
    || .venv/bin/pip install -q "jax[cuda12]"
  if [[ -n "${NUM_NODES:-}" && "${NUM_NODES}" -gt 1 ]]; then
    export JAX_COORDINATOR_ADDRESS=${COORDINATOR:?set COORDINATOR=host:port}
    export JAX_NUM_PROCESSES=${NUM_NODES} JAX_PROCESS_ID=${NODE_RANK:?set NODE_RANK}
  fi
  echo "multi_gpu.sh: $(hostname) at commit $(git rev-parse HEAD)" >&2
  exec launch/retry.sh .venv/bin/python -m prune_ofa_jax.main --config "${config}" \
    --workdir "${workdir}" "$@"
}

if [[ $# -lt 2 ]]; then
  sed -n '2,16p' "$0" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
main "$@"  # the whole script is read before it runs: the checkout may rewrite this file
exit
