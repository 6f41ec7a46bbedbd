"""Snakemake script of rule aggregate: run folders -> results/runs.csv and results/traces.csv."""

import sys
from pathlib import Path

from ngp_ohem.report.aggregate import write_aggregate

smk = snakemake  # noqa: F821 (injected by Snakemake's script directive)

with open(smk.log[0], "w") as log:
    sys.stderr = log
    run_dirs = [Path(p).parent for p in smk.input.summaries]
    write_aggregate(run_dirs, smk.output.runs, smk.output.traces)
    print(f"aggregated {len(run_dirs)} runs", file=log)
