#!/usr/bin/env bash
# Run a recipe on every worker of a TPU VM pod slice (same command on all hosts; JAX finds
# the other workers through the TPU metadata and jax.distributed.initialize()).
#
#   launch/tpu_pod.sh TPU_NAME ZONE configs/prune_ofa_bert_base.py:90 gs://bucket/runs/pofa90 \
#       --config.data.prepared=gs://bucket/prepared/wiki_128 \
#       --config.init.path=gs://bucket/teacher --config.teacher.path=gs://bucket/teacher
#
# Every host runs one commit: COMMIT (default: this checkout's HEAD, which must be pushed to
# REPO_URL, default this checkout's origin); each host clones the repository once and checks
# that commit out before every launch, so a replaced host runs the same code as the others.
# Each host runs the training command under launch/retry.sh: exit 143 (preempted, checkpoint
# saved) reruns it, which resumes; any other failure stops. MAX_RESTARTS, RETRY_BACKOFF_S and
# RETRY_BACKOFF_MAX_S are passed on; every attempt is logged to ~/prune_ofa_jax_logs/attempts.log
# on each host. Running this script again resumes the run from its last checkpoint.
#
# Each host streams its own rows of every global batch from the prepared shards (Grain;
# `python -m prune_ofa_jax.data.prepare`, README "Pre-training at scale"); workdir, init,
# teacher and prepared paths may be gs:// (etils.epath); checkpoints go to the shared workdir.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  sed -n '2,19p' "$0" >&2
  exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
here="$(cd "$(dirname "$0")/.." && pwd)"
REPO_URL=${REPO_URL:-$(git -C "$here" config --get remote.origin.url || true)}
# A sha, so that every host runs the same code even when COMMIT names a branch or tag.
COMMIT=$(git -C "$here" rev-parse -q --verify "${COMMIT:-HEAD}^{commit}" || echo "${COMMIT:-}")
[[ -n "$COMMIT" ]] || { echo "error: no COMMIT: set COMMIT=<sha>, or run from a checkout" >&2; exit 2; }
if [[ -n "$(git -C "$here" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  echo "warning: uncommitted changes in $here do not reach the TPU hosts: they run ${COMMIT}" >&2
fi
args=$(printf ' %q' --config "$CONFIG" --workdir "$WORKDIR" --config.train.progress=False "$@")
CMD="set -euo pipefail
[[ -d ~/prune_ofa_jax/.git ]] || git clone -q $(printf %q "$REPO_URL") ~/prune_ofa_jax
cd ~/prune_ofa_jax
git fetch -q origin
git checkout -q --detach ${COMMIT} || {
  echo \"error: COMMIT=${COMMIT} is not in \$(git config --get remote.origin.url): push it\" >&2; exit 2; }
./setup.sh
.venv/bin/pip install -q 'jax[tpu]'
export TPU_WORKER_HOSTNAMES=\${TPU_WORKER_HOSTNAMES:-tpu}
export MAX_RESTARTS=${MAX_RESTARTS:-20} RETRY_BACKOFF_S=${RETRY_BACKOFF_S:-30}
export RETRY_BACKOFF_MAX_S=${RETRY_BACKOFF_MAX_S:-600}
launch/retry.sh .venv/bin/python -m prune_ofa_jax.main${args}"
echo "tpu_pod.sh: ${TPU_NAME} (${ZONE}), every worker at commit ${COMMIT}" >&2
gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone "${ZONE}" --worker=all --command "${CMD}"
