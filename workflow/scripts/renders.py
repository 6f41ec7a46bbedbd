"""Snakemake script of rule renders: ground truth and each method's final render of the first test view
(seed params.seed) side by side, one row per scene of a dataset -> figures/renders_<dataset>.{png,pdf}."""

import sys
from pathlib import Path

import pandas as pd

from ngp_ohem.report.figures import render_comparison, render_rows

smk = snakemake  # noqa: F821 (injected by Snakemake's script directive)

with open(smk.log[0], "w") as log:
    sys.stderr = log
    runs = pd.read_csv(smk.input.runs)
    rows = render_rows(runs, smk.wildcards.dataset, seed=smk.params.seed)
    declared = {str(Path(p)) for p in [*smk.input.renders, *smk.input.gts]}
    used = {str(path) for row in rows for _, path, _ in row["images"]}
    if not used <= declared:
        raise RuntimeError(f"runs.csv points at images that are not inputs of this job: {sorted(used - declared)}")
    title = f"{smk.wildcards.dataset}: first test view at the end of the training budget (seed {smk.params.seed})"
    render_comparison(rows, Path(smk.output.png).with_suffix(""), title=title)
