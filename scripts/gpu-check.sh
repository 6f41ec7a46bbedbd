#!/usr/bin/env bash
# The GPU check in one call: a 60 s lego pair (baseline, hsm), paper preset, mixed precision, on CUDA;
# prints one markdown table. Stops with one line when there is no CUDA device or something is missing.
# Options: --data DIR (the lego scene), --budget S, --out DIR (see benchmarks/gpu_check.py --help).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=${PYTHON:-python3}; fi
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "gpu-check: $PY cannot import torch (install PyTorch with CUDA first)" >&2
  exit 2
fi
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" benchmarks/gpu_check.py "$@"
