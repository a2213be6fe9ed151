#!/usr/bin/env bash
# The accelerator figures on one GPU/TPU host (samples/s and MFU of the dense, fast-preset and
# reference-preset BERT-Base bf16 steps): a smoke run on a tiny model first, so an API break
# costs seconds, then the real section. Usage: launch/gpu_bench.sh [OUT_DIR]
# Needs jax with the accelerator plugin (e.g. `pip install "jax[cuda12]"`) and requirements.txt.
set -euo pipefail
out=${1:-bench_results/accel}
py=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd):${PYTHONPATH:-}"
$py -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
tiny="num_layers=1,hidden_size=64,num_heads=2,intermediate_size=128,vocab_size=512"
timeout 300 $py -m prune_ofa_jax.bench --config.accel_only=True --config.accel.model=bert-tiny \
  --config.accel.overrides="$tiny" --config.accel.batch_size=8 --config.accel.steps=2 \
  --workdir "$out/smoke"
timeout 600 $py -m prune_ofa_jax.bench --config.accel_only=True --workdir "$out"
