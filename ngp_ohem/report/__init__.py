"""Results of many runs -> tables and figures: pure functions of ``results/runs.csv`` and ``results/traces.csv``.

* :mod:`ngp_ohem.report.aggregate` — run folders (``summary.json`` + ``trace.csv``) -> the two CSVs;
* :mod:`ngp_ohem.report.tables` — quality at budget checkpoints, speed-up to equal PSNR, memory, b/B;
* :mod:`ngp_ohem.report.figures` — PSNR / memory / b/B against training time, and render comparisons.

No torch import anywhere in this package: the workflow's reporting jobs and their tests stay light.
"""

from __future__ import annotations

# The methods, their order, labels and colours: the strategy registry (ngp_ohem.strategies.names()).
DATASET_ORDER = ("blender", "llff", "mipnerf360")
#: Table files results/tables/<name>.{md,tex,html,csv} (see ngp_ohem.report.tables).
TABLE_NAMES = ("quality", "speedup", "memory", "hard_fraction")
#: CSV-derived figures figures/<name>.{png,pdf} (see ngp_ohem.report.figures).
FIGURE_NAMES = ("psnr_vs_time", "mean_psnr_vs_time", "memory_vs_time", "hard_fraction_vs_time")
