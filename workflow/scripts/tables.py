"""Snakemake script of rule tables: results/{runs,traces}.csv -> results/tables/*.{md,tex,html,csv}."""

import sys
from pathlib import Path

from ngp_ohem.report.tables import write_tables

smk = snakemake  # noqa: F821 (injected by Snakemake's script directive)

with open(smk.log[0], "w") as log:
    sys.stderr = log
    out_dir = Path(smk.output.quality_md).parent
    written = write_tables(smk.input.runs, smk.input.traces, out_dir, smk.params.fractions)
    expected = {Path(p) for p in smk.output}
    missing = expected - set(written)
    if missing:
        raise RuntimeError(f"tables not written: {sorted(map(str, missing))}")
    print("\n".join(map(str, written)), file=log)
