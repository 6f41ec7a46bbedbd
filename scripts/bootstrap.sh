#!/usr/bin/env bash
# Create ./.venv (once) and install ngp-ohem with its workflow and test extras into it.
# Used by the README's two commands and by CI; safe to run again (a no-op when up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv || {
    echo "bootstrap: '$PYTHON -m venv' failed; on Debian/Ubuntu run: sudo apt-get install python3-venv" >&2
    exit 1
  }
fi
stamp=.venv/.ngp-ohem-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch is pinned in pyproject.toml (2.13.0): set PIP_EXTRA_INDEX_URL to a CPU wheel index to avoid
  # the multi-GB CUDA build on CPU-only machines that lack a local wheel.
  .venv/bin/python -m pip install --quiet -e ".[workflow,test]"
  touch "$stamp"
fi
