"""The run-record vocabulary, in one torch-free place: what the trainer writes and the report reads.

Datasets, the files that mark a complete dataset scene, the key that names one run, the
columns of a run's ``trace.csv``, and the table and figure files the report makes. The config, the
trainer, the report, the workflow (``workflow/rules/common.smk``) and ``.ci/run`` all read these
names from here, so a new column or table is added once. ``python -m ngp_ohem.names KEY`` prints one
of them, space-separated, for shell scripts.
"""

from __future__ import annotations

import sys

# The training strategies (methods) and their order, labels and colours live in the strategy registry,
# ngp_ohem.strategies.names(), which arms (and tests) extend. These two are the paper's comparison: the
# arms the regression references and the speed benchmarks measure.
PAPER_METHODS: tuple[str, ...] = ("baseline", "hsm")

#: Numeric precision modes of the network calls (see ngp_ohem.precision).
PRECISIONS: tuple[str, ...] = ("fp32", "mixed")

#: Benchmark datasets, in report order.
DATASETS: tuple[str, ...] = ("blender", "llff", "mipnerf360")

#: A file whose presence marks a scene folder of the dataset as complete (downloaded and extracted).
DATASET_MARKERS: dict[str, str] = {
    "blender": "transforms_train.json",
    "llff": "poses_bounds.npy",
    "mipnerf360": "sparse/0/cameras.bin",
}

#: The columns that name one run: one (dataset, scene, method, seed) is one run folder.
RUN_KEY: tuple[str, ...] = ("dataset", "scene", "method", "seed")

#: Columns of a run's trace.csv, one row per evaluation, in file order.
TRACE_COLUMNS: tuple[str, ...] = (
    *RUN_KEY, "backend", "device", "step", "train_seconds",
    "samples_total", "samples_in_graph", "psnr", "ssim", "peak_mem_bytes", "graph_bytes", "rss_bytes",
    "hard_fraction", "samples_per_step", "hard_samples_per_step", "rays_per_step", "tau_ema", "loss",
    "eval_views", "occupancy", "cpu_utilization", "other_cpu_share", "steal_share",
)  # fmt: skip

#: Table files results/tables/<name>.{md,tex,html,csv} (see ngp_ohem.report.tables).
TABLE_NAMES: tuple[str, ...] = ("quality", "speedup", "memory", "hard_fraction")
TABLE_FORMATS: tuple[str, ...] = ("md", "tex", "html", "csv")

#: CSV-derived figures figures/<name>.{png,pdf} (see ngp_ohem.report.figures).
FIGURE_NAMES: tuple[str, ...] = ("psnr_vs_time", "mean_psnr_vs_time", "memory_vs_time", "hard_fraction_vs_time")
FIGURE_FORMATS: tuple[str, ...] = ("png", "pdf")

PRINTABLE = {
    "paper_methods": PAPER_METHODS,
    "precisions": PRECISIONS,
    "datasets": DATASETS,
    "run_key": RUN_KEY,
    "trace_columns": TRACE_COLUMNS,
    "table_names": TABLE_NAMES,
    "table_formats": TABLE_FORMATS,
    "figure_names": FIGURE_NAMES,
    "figure_formats": FIGURE_FORMATS,
}


def main(argv: list[str] | None = None) -> int:
    """Print one list space-separated (``python -m ngp_ohem.names table_names``)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in PRINTABLE:
        print(f"usage: python -m ngp_ohem.names {{{','.join(PRINTABLE)}}}", file=sys.stderr)
        return 2
    print(" ".join(PRINTABLE[args[0]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
