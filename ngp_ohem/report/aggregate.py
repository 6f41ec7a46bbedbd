"""Collect finished runs into ``runs.csv`` (one row per run) and ``traces.csv`` (every trace row).

A run folder holds ``summary.json`` (written last, ``status: complete``) and ``trace.csv`` (one row per
evaluation, the last one on the full test split). ``runs.csv`` carries each run's identity, final
metrics, memory maxima, hardware and its whole configuration flattened to ``cfg.<section>.<key>``
columns; ``traces.csv`` is the concatenation of the traces plus the run's ``budget_s``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ngp_ohem.names import RUN_KEY, TRACE_COLUMNS

RUN_COLUMNS = [
    *RUN_KEY,
    "budget_s", "train_seconds", "steps", "psnr", "ssim", "samples_total", "samples_in_graph",
    "graph_sample_fraction", "max_graph_bytes", "max_peak_mem_bytes", "max_rss_bytes", "eval_views",
    "n_evals", "device", "backend", "gpu", "cpu", "torch", "torch_threads", "resumed",
    "clock_contended", "cpu_utilization", "other_cpu_share", "steal_share", "cpus", "run_dir",
]  # fmt: skip


class RunError(ValueError):
    """A run folder that is missing files or is not finished."""


def flatten(config: dict[str, Any], prefix: str = "cfg.") -> dict[str, Any]:
    """``{"render": {"max_steps": 8}}`` -> ``{"cfg.render.max_steps": 8}``."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """The runs.csv row and the trace (with ``budget_s``) of one finished run folder."""
    folder = Path(run_dir)
    summary_path, trace_path = folder / "summary.json", folder / "trace.csv"
    for path in (summary_path, trace_path):
        if not path.is_file():
            raise RunError(f"{path} is missing")
    summary = json.loads(summary_path.read_text())
    if summary.get("status") != "complete":
        raise RunError(f"{summary_path}: status is {summary.get('status')!r}, not 'complete'")
    trace = pd.read_csv(trace_path)
    if trace.empty:
        raise RunError(f"{trace_path} has no rows")
    if tuple(trace.columns) != TRACE_COLUMNS:
        missing = [c for c in TRACE_COLUMNS if c not in trace.columns]
        extra = [c for c in trace.columns if c not in TRACE_COLUMNS]
        raise RunError(
            f"{trace_path}: columns differ from ngp_ohem.names.TRACE_COLUMNS "
            f"(missing {missing or 'none'}, unknown {extra or 'none'}, or out of order)"
        )
    config = summary.get("config", {})
    budget = float(config.get("budget_s", math.nan))
    final = trace.iloc[-1]
    env = summary.get("environment", {})
    clock = summary.get("clock", {})
    samples_total = int(final["samples_total"])
    row: dict[str, Any] = {
        "dataset": summary.get("dataset", final["dataset"]),
        "scene": summary.get("scene", final["scene"]),
        "method": final["method"],
        "seed": int(final["seed"]),
        "budget_s": budget,
        "train_seconds": float(summary.get("train_seconds", final["train_seconds"])),
        "steps": int(summary.get("steps", final["step"])),
        "psnr": float(final["psnr"]),
        "ssim": float(final["ssim"]),
        "samples_total": samples_total,
        "samples_in_graph": int(final["samples_in_graph"]),
        "graph_sample_fraction": int(final["samples_in_graph"]) / samples_total if samples_total else math.nan,
        "max_graph_bytes": int(trace["graph_bytes"].max()),
        "max_peak_mem_bytes": int(trace["peak_mem_bytes"].max()),
        "max_rss_bytes": int(trace["rss_bytes"].max()),
        "eval_views": int(final["eval_views"]),
        "n_evals": len(trace),
        "device": summary.get("device", final["device"]),
        "backend": summary.get("backend", final["backend"]),
        "gpu": env.get("gpu") or "",
        "cpu": env.get("cpu", ""),
        "torch": env.get("torch", ""),
        "torch_threads": env.get("torch_threads", ""),
        "resumed": bool(summary.get("resumed", False)),
        "clock_contended": bool(summary.get("clock_contended", False)),
        "cpu_utilization": float(clock.get("cpu_utilization", math.nan)),
        "other_cpu_share": float(clock.get("other_cpu_share", math.nan)),
        "steal_share": float(clock.get("steal_share", math.nan)),
        "cpus": " ".join(str(c) for c in clock.get("cpus", [])),
        "run_dir": str(folder),
    }
    row.update(flatten(config))
    trace = trace.copy()
    trace["budget_s"] = budget
    return row, trace


def aggregate_runs(run_dirs: Iterable[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, traces) of the given run folders, sorted by dataset, scene, method, seed."""
    rows, traces = [], []
    for folder in run_dirs:
        row, trace = load_run(folder)
        rows.append(row)
        traces.append(trace)
    if not rows:
        raise RunError("no runs to aggregate")
    runs = pd.DataFrame(rows)
    extra = sorted(c for c in runs.columns if c not in RUN_COLUMNS)
    runs = runs[RUN_COLUMNS + extra].sort_values(list(RUN_KEY), kind="stable").reset_index(drop=True)
    duplicated = runs.duplicated(list(RUN_KEY), keep=False)
    if duplicated.any():
        dup = runs.loc[duplicated, [*RUN_KEY, "run_dir"]].to_string(index=False)
        raise RunError(f"more than one run for the same (dataset, scene, method, seed):\n{dup}")
    all_traces = pd.concat(traces, ignore_index=True)
    all_traces = all_traces.sort_values([*RUN_KEY, "train_seconds"], kind="stable").reset_index(drop=True)
    return runs, all_traces


def write_aggregate(run_dirs: Iterable[str | Path], runs_csv: str | Path, traces_csv: str | Path) -> None:
    """Aggregate run folders and write the two CSVs."""
    runs, traces = aggregate_runs(run_dirs)
    for path, frame in ((runs_csv, runs), (traces_csv, traces)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)


def contended_runs(runs: pd.DataFrame) -> list[str]:
    """'scene/method/seed N (other processes X % of cores C)' for every run whose clock was contended."""
    if "clock_contended" not in runs.columns:
        return []
    bad = runs[runs["clock_contended"].astype(bool)]
    return [
        f"{r.scene}/{r.method}/seed {r.seed} (other processes {r.other_cpu_share:.0%}, steal {r.steal_share:.0%} "
        f"of cores {r.cpus})"
        for r in bad.itertuples()
    ]
