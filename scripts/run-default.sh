#!/usr/bin/env bash
# The main job: install (once), then run the embedded default benchmark workflow on this machine.
# Extra arguments go to snakemake, e.g. `bash scripts/run-default.sh --configfile config/ci.yaml`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/snakemake --cores all "$@"
