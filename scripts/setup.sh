#!/usr/bin/env bash
# Create .venv (if missing) and install tcdcn with its test extras.
# Torch is installed first where it is missing, pinned to a CPU build (a bare `torch` requirement would
# pull a multi-GB CUDA build); override with TCDCN_TORCH_SPEC, e.g. TCDCN_TORCH_SPEC="torch" for CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PY=.venv/bin/python
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install -q "${TCDCN_TORCH_SPEC:-torch==2.13.0}"
fi
"$PY" -m pip install -q -e ".[test]"
