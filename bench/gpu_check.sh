#!/usr/bin/env bash
# One accelerator check, under 8 minutes on one H200: bash bench/gpu_check.sh [--cpu-smoke] [--json F]
# Uses .venv when present; on a GPU machine without a CUDA jax in it, installs jax[cuda12] into .venv
# first (needs the package index or a wheel cache). Prints one table (bench/gpu_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
if [[ " $* " != *" --cpu-smoke "* ]] && command -v nvidia-smi >/dev/null 2>&1; then
  if ! "$PY" -c "import jax, sys; sys.exit(jax.devices()[0].platform != 'gpu')" 2>/dev/null; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    PY=.venv/bin/python
    "$PY" -m pip install -q -e . "jax[cuda12]==$("$PY" -c 'import jax; print(jax.__version__)' 2>/dev/null || echo 0.10.2)"
  fi
  export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
fi
exec "$PY" bench/gpu_check.py "$@"
