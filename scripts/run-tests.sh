#!/usr/bin/env bash
# The test suite: install (once), then lint and run the unit and regression tests.
# Extra arguments go to pytest, e.g. `bash scripts/run-tests.sh -m slow` for the long validations.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
