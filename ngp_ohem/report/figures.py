"""The benchmark's figures (PNG + PDF), as pure functions of ``runs.csv`` / ``traces.csv``, plus the render
comparison assembled from the runs' ``render_test0.png`` / ``gt_test0.png``.

Matplotlib's object API with :class:`matplotlib.figure.Figure` only (no pyplot, no global backend):
PNG through Agg, PDF through the PDF backend, safe in headless jobs. Each method's colour and label
come from the strategy registry (ngp_ohem/strategies), so an arm looks the same in every figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ngp_ohem import strategies
from ngp_ohem.names import DATASETS, FIGURE_NAMES
from ngp_ohem.report.tables import (
    MIB,
    iter_runs,
    mean_curve,
    methods_of,
    metric_curve,
    sample_level_arms,
    scene_order,
    window_curve,
)

PANEL_W, PANEL_H = 3.8, 2.9


def _color(method: str) -> str:
    return strategies.color(method)


def _label(method: str) -> str:
    return strategies.label(method)


def save(fig: Figure, stem: str | Path, dpi: int = 150) -> list[Path]:
    """Write stem.png and stem.pdf; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=dpi, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def _grid(n: int, max_cols: int = 4) -> tuple[Figure, list]:
    cols = max(1, min(max_cols, n))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(PANEL_W * cols, PANEL_H * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _legend(fig: Figure, axes: list) -> None:
    handles, labels = {}, {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles[lab], labels[lab] = h, lab
    if handles:
        fig.legend(
            list(handles.values()), list(labels.values()), loc="outside lower center", ncols=min(2, len(handles))
        )


def _runs_of(traces: pd.DataFrame, dataset: str, scene: str, method: str) -> list[pd.DataFrame]:
    return [g for key, g in iter_runs(traces) if key[:3] == (dataset, scene, method)]


def _time_axis(ax, log_x: bool) -> None:
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training time (s)")
    ax.grid(True, which="major", alpha=0.3)


def _marker(n_points: int) -> dict:
    """Markers on short curves, so a curve of one point is still visible."""
    return {"marker": "o", "ms": 3} if n_points < 12 else {}


# -- PSNR -----------------------------------------------------------------------------------------------
def psnr_vs_time(traces: pd.DataFrame, stem: str | Path, log_x: bool = True, metric: str = "psnr") -> list[Path]:
    """One panel per scene: each method's mean over seeds with the min–max band of the seeds."""
    pairs = scene_order(traces)
    fig, axes = _grid(len(pairs))
    for ax, (dataset, scene) in zip(axes, pairs):
        for method in methods_of(traces):
            runs = _runs_of(traces, dataset, scene, method)
            if not runs:
                continue
            mc = mean_curve([metric_curve(r, metric) for r in runs])
            ax.plot(mc.times, mc.mean, color=_color(method), lw=1.8, marker="o", ms=3,
                    label=f"{_label(method)}, mean of {mc.n} seed{'s' if mc.n > 1 else ''}")  # fmt: skip
            if mc.n > 1:
                ax.fill_between(mc.times, mc.lo, mc.hi, color=_color(method), alpha=0.2, lw=0,
                                label=f"{_label(method)}, min–max over seeds")  # fmt: skip
        ax.set_title(f"{scene} ({dataset})")
        ax.set_ylabel("PSNR (dB)" if metric == "psnr" else metric.upper())
        _time_axis(ax, log_x)
    fig.suptitle("Test PSNR against training time (evaluation excluded)")
    _legend(fig, axes)
    return save(fig, stem)


def mean_psnr_vs_time(traces: pd.DataFrame, stem: str | Path, log_x: bool = True, n_grid: int = 64) -> list[Path]:
    """One panel per dataset: per seed the mean over the dataset's scenes, then mean and min–max over seeds.

    The curves are read on a geometric grid between the latest first evaluation and the earliest final one
    among the dataset's runs (scenes of a dataset share the budget)."""
    datasets = [d for d in DATASETS if d in set(traces["dataset"])]
    datasets += sorted(set(traces["dataset"]) - set(datasets))
    fig, axes = _grid(len(datasets), max_cols=2)
    for ax, dataset in zip(axes, datasets):
        sub = traces[traces["dataset"] == dataset]
        curves = {key: metric_curve(g, "psnr") for key, g in iter_runs(sub)}
        n_scenes = sub["scene"].nunique()
        for method in methods_of(sub):
            own = [c for k, c in curves.items() if k[2] == method]
            start, end = max(t[0] for t, _ in own), min(t[-1] for t, _ in own)
            grid = np.geomspace(start, end, n_grid) if end > start > 0 else np.array([end])
            per_seed = []
            for seed in sorted({k[3] for k in curves if k[2] == method}):
                scene_curves = [np.interp(grid, *c) for k, c in curves.items() if k[2] == method and k[3] == seed]
                if len(scene_curves) == n_scenes:
                    per_seed.append((grid, np.mean(scene_curves, axis=0)))
            if not per_seed:
                continue
            mc = mean_curve(per_seed, grid=grid)
            ax.plot(mc.times, mc.mean, color=_color(method), lw=2, label=f"{_label(method)}, mean over seeds",
                    **_marker(len(mc.times)))  # fmt: skip
            if mc.n > 1:
                ax.fill_between(mc.times, mc.lo, mc.hi, color=_color(method), alpha=0.2, lw=0,
                                label=f"{_label(method)}, min–max over seeds")  # fmt: skip
        ax.set_title(f"{dataset}: mean over {n_scenes} scene{'s' if n_scenes > 1 else ''}")
        ax.set_ylabel("mean PSNR (dB)")
        _time_axis(ax, log_x)
    _legend(fig, axes)
    return save(fig, stem)


# -- memory ---------------------------------------------------------------------------------------------
def memory_vs_time(traces: pd.DataFrame, stem: str | Path, log_x: bool = True) -> list[Path]:
    """One panel per scene: largest autograd-graph bytes per step of each trace window (solid) and, for
    CUDA runs, the allocator peak minus static load (dashed); mean over seeds."""
    pairs = scene_order(traces)
    fig, axes = _grid(len(pairs))
    has_cuda = bool((traces["peak_mem_bytes"] > 0).any())
    for ax, (dataset, scene) in zip(axes, pairs):
        for method in methods_of(traces):
            runs = _runs_of(traces, dataset, scene, method)
            if not runs:
                continue
            specs = [("graph_bytes", "-", "autograd graph")]
            if has_cuda:
                specs.append(("peak_mem_bytes", "--", "CUDA peak"))
            for column, style, what in specs:
                curves = [window_curve(r, column) for r in runs]
                if not any((v > 0).any() for _, v in curves):
                    continue
                mc = mean_curve(curves, step=True)
                ax.plot(mc.times, mc.mean / MIB, style, color=_color(method), lw=1.6, drawstyle="steps-pre",
                        label=f"{_label(method)}: {what}", **_marker(len(mc.times)))  # fmt: skip
        ax.set_title(f"{scene} ({dataset})")
        ax.set_ylabel("memory per step (MiB)")
        ax.set_ylim(bottom=0)
        _time_axis(ax, log_x)
    fig.suptitle("Training memory per step (largest in each evaluation window)")
    _legend(fig, axes)
    return save(fig, stem)


# -- b/B ------------------------------------------------------------------------------------------------
def hard_fraction_vs_time(
    traces: pd.DataFrame,
    stem: str | Path,
    runs: pd.DataFrame | None = None,
    method: str | None = None,
    log_x: bool = True,
) -> list[Path]:
    """One panel per dataset and sample-level arm (default: every one present, else hsm): its b/B per
    window, one line per scene (mean over seeds); the baseline's b/B = 1 and the mining bounds from the
    runs' config (if given) as references."""
    datasets = [d for d in DATASETS if d in set(traces["dataset"])]
    datasets += sorted(set(traces["dataset"]) - set(datasets))
    arms = [method] if method is not None else (sample_level_arms(traces) or ["hsm"])
    panels = [(dataset, arm) for dataset in datasets for arm in arms]
    fig, axes = _grid(len(panels), max_cols=2)
    for ax, (dataset, method) in zip(axes, panels):
        sub = traces[(traces["dataset"] == dataset) & (traces["method"] == method)]
        for i, (_, scene) in enumerate(scene_order(sub)):
            curves = [window_curve(g, "hard_fraction") for g in _runs_of(sub, dataset, scene, method)]
            mc = mean_curve(curves, step=True)
            ax.plot(mc.times, mc.mean, drawstyle="steps-pre", lw=1.5, color=f"C{i % 10}", label=scene,
                    **_marker(len(mc.times)))  # fmt: skip
        ax.axhline(1.0, color=_color("baseline"), ls="--", lw=1.2, label="baseline (b/B = 1)")
        if runs is not None:
            for column, text in (("cfg.mining.min_fraction", "min"), ("cfg.mining.max_fraction", "max")):
                sel = runs[(runs["dataset"] == dataset) & (runs["method"] == method)]
                if column in sel and sel[column].notna().any():
                    ax.axhline(float(sel[column].iloc[0]), color="gray", ls=":", lw=1,
                               label=f"mining bound ({text})")  # fmt: skip
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{dataset}: {_label(method)}")
        ax.set_ylabel("hard batch fraction b/B")
        _time_axis(ax, log_x)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save(fig, stem)


def write_figures(runs_csv: str | Path, traces_csv: str | Path, out_dir: str | Path, log_x: bool = True) -> list[Path]:
    """Every CSV-derived figure (FIGURE_NAMES) as PNG and PDF under out_dir."""
    runs, traces = pd.read_csv(runs_csv), pd.read_csv(traces_csv)
    out = Path(out_dir)
    makers = {
        "psnr_vs_time": lambda stem: psnr_vs_time(traces, stem, log_x),
        "mean_psnr_vs_time": lambda stem: mean_psnr_vs_time(traces, stem, log_x),
        "memory_vs_time": lambda stem: memory_vs_time(traces, stem, log_x),
        "hard_fraction_vs_time": lambda stem: hard_fraction_vs_time(traces, stem, runs, log_x=log_x),
    }
    return [path for name in FIGURE_NAMES for path in makers[name](out / name)]


# -- render comparison -----------------------------------------------------------------------------------
def render_comparison(
    rows: Sequence[dict], stem: str | Path, title: str = "First test view at the end of the budget"
) -> list[Path]:
    """A grid with one row per scene and one column per image.

    rows: dicts with "scene" and "images", a list of (column title, PNG path, caption or "")."""
    from PIL import Image

    n_cols = max(len(r["images"]) for r in rows)
    first = Image.open(rows[0]["images"][0][1])
    aspect = first.height / first.width
    fig = Figure(figsize=(2.6 * n_cols, 2.6 * aspect * len(rows) + 0.9), layout="constrained")
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row["images"]):
                ax.set_visible(False)
                continue
            heading, path, caption = row["images"][c]
            with Image.open(path) as im:
                ax.imshow(np.asarray(im.convert("RGB")), interpolation="nearest")
            if r == 0:
                ax.set_title(heading, fontsize=10)
            if caption:
                ax.set_xlabel(caption, fontsize=8)
            if c == 0:
                ax.set_ylabel(row["scene"], fontsize=10)
    fig.suptitle(title)
    return save(fig, stem)


def render_rows(runs: pd.DataFrame, dataset: str, seed: int | None = None) -> list[dict]:
    """Rows for render_comparison from runs.csv: ground truth, then each method's final render of the
    first test view (``run_dir``/render_test0.png) of the given seed (default: the smallest)."""
    sub = runs[runs["dataset"] == dataset]
    if seed is None:
        seed = int(sub["seed"].min())
    rows = []
    for _, scene in scene_order(sub):
        images = []
        per_method = sub[(sub["scene"] == scene) & (sub["seed"] == seed)]
        methods = methods_of(per_method)
        if not methods:
            continue
        gt_dir = Path(per_method[per_method["method"] == methods[0]].iloc[0]["run_dir"])
        images.append(("ground truth", gt_dir / "gt_test0.png", ""))
        for method in methods:
            run = per_method[per_method["method"] == method].iloc[0]
            views = run.get("eval_views")
            which = f"{int(views)} test views" if views is not None and math.isfinite(views) else "final evaluation"
            caption = f"PSNR {run['psnr']:.2f} dB ({which}), {run['train_seconds']:.0f} s training"
            images.append((_label(method), Path(run["run_dir"]) / "render_test0.png", caption))
        rows.append({"scene": scene, "images": images})
    return rows
