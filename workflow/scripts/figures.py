"""Snakemake script of rule figures: results/{runs,traces}.csv -> figures/*.{png,pdf}."""

import sys
from pathlib import Path

from ngp_ohem.report.figures import write_figures

smk = snakemake  # noqa: F821 (injected by Snakemake's script directive)

with open(smk.log[0], "w") as log:
    sys.stderr = log
    out_dir = Path(smk.output.psnr).parent
    written = write_figures(smk.input.runs, smk.input.traces, out_dir, log_x=smk.params.log_x)
    missing = {Path(p) for p in smk.output} - set(written)
    if missing:
        raise RuntimeError(f"figures not written: {sorted(map(str, missing))}")
    print("\n".join(map(str, written)), file=log)
