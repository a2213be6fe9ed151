#!/usr/bin/env bash
# Run a recipe on every worker of a TPU VM pod slice (same command on all hosts; JAX finds
# the other workers through the TPU metadata and jax.distributed.initialize()).
#
#   launch/tpu_pod.sh TPU_NAME ZONE configs/prune_ofa_bert_base.py:90 gs://bucket/runs/pofa90 \
#       --config.data.prepared=gs://bucket/prepared/wiki_128 \
#       --config.init.path=gs://bucket/teacher --config.teacher.path=gs://bucket/teacher
#
# Each host streams its own rows of every global batch from the prepared shards (Grain;
# `python -m prune_ofa_jax.data.prepare`, README "Pre-training at scale"); workdir, init,
# teacher and prepared paths may be gs:// (etils.epath); checkpoints go to the shared workdir.
set -euo pipefail
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
REPO_URL=${REPO_URL:-$(git config --get remote.origin.url || true)}
CMD="cd ~/prune_ofa_jax 2>/dev/null || git clone ${REPO_URL} ~/prune_ofa_jax && cd ~/prune_ofa_jax; \
./setup.sh && .venv/bin/pip install -q 'jax[tpu]' && \
TPU_WORKER_HOSTNAMES=\${TPU_WORKER_HOSTNAMES:-tpu} .venv/bin/python -m prune_ofa_jax.main \
--config ${CONFIG} --workdir ${WORKDIR} --config.train.progress=False $*"
gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone "${ZONE}" --worker=all --command "${CMD}"
