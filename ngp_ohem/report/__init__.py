"""Results of many runs -> tables and figures: pure functions of ``results/runs.csv`` and ``results/traces.csv``.

* :mod:`ngp_ohem.report.aggregate` — run folders (``summary.json`` + ``trace.csv``) -> the two CSVs;
* :mod:`ngp_ohem.report.tables` — quality at budget checkpoints, speed-up to equal PSNR, memory, b/B;
* :mod:`ngp_ohem.report.figures` — PSNR / memory / b/B against training time, and render comparisons.

No torch import anywhere in this package: the workflow's reporting jobs and their tests stay light.
The names of methods, datasets, trace columns, tables and figures come from :mod:`ngp_ohem.names`.
"""

from __future__ import annotations
