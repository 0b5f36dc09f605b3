#!/usr/bin/env bash
# Create .venv and install grace with its test extras. torch is installed first, pinned to the
# CPU build that lies on this machine's disk (GPU users: install your CUDA build of torch first).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q "torch==2.13.0"
fi
python -m pip install -q -e ".[test]"
