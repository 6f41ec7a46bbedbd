"""The benchmark's tables, as pure functions of ``runs.csv`` and ``traces.csv``.

Four tables, each with a numeric frame (written as CSV) and a display frame (Markdown, LaTeX, HTML):

``quality``
    PSNR and SSIM of each method at budget checkpoints ``f * budget`` (default f = 1/8, 1/4, 1/2, 1):
    each seed's trace is linearly interpolated at the checkpoint, then mean ± std (ddof 1) over
    seeds, and the difference arm − baseline of the means for every arm (at the full budget: the final
    evaluation, on ``eval.final_views`` test views, all by default). "mean" rows average the scenes of a
    dataset per seed first, then take mean ± std over seeds. With two arms or more, a "ranking" row
    per dataset ranks the methods by the mean at the full budget.
``speedup``
    Training time each arm needs to reach the baseline's final PSNR (mean over seeds), found by linear
    interpolation on the arm's mean trace (mean over seeds of the seeds' linear interpolants, on the
    union of their evaluation times); speed-up = baseline's mean training time / that time.
    "not reached" when the mean trace stays below; the mean row is the geometric mean over the
    scenes where it was reached; with two arms or more, per-arm columns and a "ranking" row per dataset
    (by that geometric mean).
``memory``
    Per run the largest autograd-graph bytes of a step and the largest CUDA allocator peak (minus
    static load) over the run, mean over seeds; saving = 100 · (1 − arm / baseline) for every arm. CUDA columns
    read "—" where the runs were on the CPU (peak 0). The mean row averages the scenes' MiB and the
    scenes' savings.
``hard_fraction``
    b/B of each sample-level arm (hsm, hsm_unbiased; a "method" column when there are several): samples
    that entered the graph / samples marched, of the trace window containing
    each checkpoint (a trace row holds the mean b/B since the previous row), mean ± std over seeds,
    and over the whole run (samples_in_graph / samples_total at the end).

Trace rows produced when one training step crossed several evaluation times repeat that step;
for PSNR/SSIM the last such row is used (the final one evaluates the full test split), for window
statistics (b/B, memory) only rows whose window holds steps (``samples_per_step > 0``).

The arms, their order and which are sample-level come from the strategy registry (ngp_ohem/strategies);
the reference of every difference is the baseline. With only baseline and hsm the tables are the
two-method tables of before, cell for cell.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

from ngp_ohem import strategies
from ngp_ohem.names import DATASETS, RUN_KEY, TABLE_NAMES

DEFAULT_FRACTIONS = (0.125, 0.25, 0.5, 1.0)
REFERENCE = "baseline"
RANK = "ranking"
MIB = float(1 << 20)


# -- traces -------------------------------------------------------------------------------------------
def iter_runs(traces: pd.DataFrame) -> Iterator[tuple[tuple[str, str, str, int], pd.DataFrame]]:
    """(dataset, scene, method, seed), trace rows of that run in recorded order."""
    for key, frame in traces.groupby(list(RUN_KEY), sort=True):
        yield (str(key[0]), str(key[1]), str(key[2]), int(key[3])), frame


def metric_curve(trace: pd.DataFrame, column: str = "psnr") -> tuple[np.ndarray, np.ndarray]:
    """(times, values) of an evaluation metric: one point per distinct training time, the last row wins."""
    frame = trace.sort_values("train_seconds", kind="stable").drop_duplicates("train_seconds", keep="last")
    return frame["train_seconds"].to_numpy(float), frame[column].to_numpy(float)


def window_curve(trace: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(times, values) of a per-window statistic, skipping rows whose window holds no step."""
    frame = trace.sort_values("train_seconds", kind="stable")
    if "samples_per_step" in frame:
        nonempty = frame[frame["samples_per_step"] > 0]
        frame = nonempty if not nonempty.empty else frame.iloc[:1]
    return frame["train_seconds"].to_numpy(float), frame[column].to_numpy(float)


def window_at(times: np.ndarray | Sequence[float], t_rows: np.ndarray, v_rows: np.ndarray) -> np.ndarray:
    """Value of the window containing each time: row k covers (t[k-1], t[k]]; past the end, the last row."""
    idx = np.searchsorted(t_rows, np.asarray(times, float), side="left")
    return v_rows[np.clip(idx, 0, len(v_rows) - 1)]


@dataclass(frozen=True)
class MeanCurve:
    """Pointwise statistics over several curves on a common time grid."""

    times: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: int


def mean_curve(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], grid: np.ndarray | None = None, step: bool = False
) -> MeanCurve:
    """Mean, std (ddof 1), min and max of curves, each interpolated on ``grid``.

    Default grid: the union of the curves' times within the range all of them cover, so the mean of
    linear interpolants is itself exact there. ``step=True`` reads window statistics (see window_at).
    """
    if not curves:
        raise ValueError("no curves")
    if grid is None:
        start = max(t[0] for t, _ in curves)
        end = min(t[-1] for t, _ in curves)
        union = np.unique(np.concatenate([t for t, _ in curves]))
        grid = union[(union >= start) & (union <= end)]
        if grid.size == 0:
            grid = np.array([end])
    values = np.stack([window_at(grid, t, v) if step else np.interp(grid, t, v) for t, v in curves])
    std = values.std(axis=0, ddof=1) if len(curves) > 1 else np.full(grid.shape, np.nan)
    return MeanCurve(grid, values.mean(axis=0), std, values.min(axis=0), values.max(axis=0), len(curves))


def time_to_reach(times: np.ndarray, values: np.ndarray, target: float) -> tuple[float, str]:
    """First time a piecewise-linear curve reaches ``target``: (time, "reached" | "first evaluation" | "not
    reached"); "first evaluation" means it was already there at the first point (the time is an upper bound)."""
    above = np.nonzero(np.asarray(values) >= target)[0]
    if above.size == 0:
        return math.nan, "not reached"
    i = int(above[0])
    if i == 0:
        return float(times[0]), "first evaluation"
    t0, t1, v0, v1 = times[i - 1], times[i], values[i - 1], values[i]
    return float(t0 + (target - v0) * (t1 - t0) / (v1 - v0)), "reached"


def first_step_seconds(trace: pd.DataFrame) -> float:
    """Mean step duration up to a run's first evaluation (0 when the trace has no step counts)."""
    if "step" not in trace:
        return 0.0
    first = trace.sort_values("train_seconds", kind="stable").iloc[0]
    return float(first["train_seconds"]) / max(int(first["step"]), 1)


def values_at_fractions(
    traces: pd.DataFrame, column: str, fractions: Sequence[float], window: bool = False
) -> pd.DataFrame:
    """Long frame (dataset, scene, method, seed, fraction, time_s, value): each run's ``column`` at
    ``fraction * budget_s``, linearly interpolated (metrics) or from the containing window (``window``).

    Evaluations happen at the first step end at or after each scheduled time, so the first one lands up
    to a step after budget/8: a time within one (mean) step before the first evaluation reads that
    evaluation. Earlier it is NaN (no extrapolation: on a slow device one step can outlast budget/8);
    past the last evaluation it is the last one (the run ends at the budget)."""
    rows = []
    for (dataset, scene, method, seed), trace in iter_runs(traces):
        budget = float(trace["budget_s"].iloc[0])
        t, v = window_curve(trace, column) if window else metric_curve(trace, column)
        times = np.array([f * budget for f in fractions])
        if window:
            vals = window_at(times, t, v)
        else:
            vals = np.where(times < t[0] - first_step_seconds(trace), np.nan, np.interp(times, t, v))
        for f, time, val in zip(fractions, times, vals):
            rows.append((dataset, scene, method, seed, f, time, float(val)))
    return pd.DataFrame(rows, columns=[*RUN_KEY, "fraction", "time_s", "value"])


# -- ordering and statistics -------------------------------------------------------------------------
def _order(values: Sequence[str], preferred: Sequence[str]) -> list[str]:
    present = list(dict.fromkeys(values))
    return [v for v in preferred if v in present] + sorted(v for v in present if v not in preferred)


def scene_order(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(dataset, scene) pairs: datasets in benchmark order, scenes alphabetical."""
    pairs = frame[["dataset", "scene"]].drop_duplicates()
    out = []
    for dataset in _order(pairs["dataset"].tolist(), DATASETS):
        out.extend((dataset, s) for s in sorted(pairs.loc[pairs["dataset"] == dataset, "scene"]))
    return out


def methods_of(frame: pd.DataFrame) -> list[str]:
    """The methods present, in registry order (unknown names last, alphabetical)."""
    return _order(frame["method"].tolist(), strategies.names())


def arms_of(frame: pd.DataFrame) -> list[str]:
    """The methods compared with the reference: every present one but the baseline."""
    return [m for m in methods_of(frame) if m != REFERENCE]


def sample_level_arms(frame: pd.DataFrame) -> list[str]:
    """Present arms that choose which samples enter the graph (b/B below 1): hsm-like."""
    return [m for m in arms_of(frame) if m in strategies.names() and strategies.get(m).level == "sample"]


def ranks(values: dict[str, float]) -> dict[str, int]:
    """1 for the largest finite value, 2 for the next...; NaN values get no rank."""
    finite = sorted((v, i, m) for i, (m, v) in enumerate(values.items()) if math.isfinite(v))
    ordered = sorted(finite, key=lambda x: (-x[0], x[1]))
    return {m: k + 1 for k, (_, _, m) in enumerate(ordered)}


def _mean_std(values: pd.Series) -> tuple[float, float, int]:
    v = values.dropna().to_numpy(float)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size)


def seed_stats(long: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """mean, std, n of ``value`` over seeds for each group ``by`` (which must not include seed)."""
    rows = []
    for key, g in long.groupby(by, sort=False):
        m, s, n = _mean_std(g["value"])
        rows.append((*key, m, s, n))
    return pd.DataFrame(rows, columns=[*by, "mean", "std", "n"])


def _mean_or_nan(values: pd.Series) -> float:
    """Mean that is NaN when any value is (a scene without a value makes the scene mean undefined)."""
    return float(np.mean(values.to_numpy(float)))


def _with_means(long: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    """``long`` plus rows with scene = "mean" per dataset (and dataset = "all" when several), where each
    seed's value is first averaged over the scenes."""
    keys = ["dataset", "method", "seed", *extra]
    per_dataset = long.groupby(keys, sort=False, as_index=False)["value"].agg(_mean_or_nan)
    per_dataset["scene"] = "mean"
    parts = [long, per_dataset]
    if long["dataset"].nunique() > 1:
        overall = long.groupby(["method", "seed", *extra], sort=False, as_index=False)["value"].agg(_mean_or_nan)
        overall["dataset"], overall["scene"] = "all", "mean"
        parts.append(overall)
    return pd.concat(parts, ignore_index=True)


def _row_order(frame: pd.DataFrame) -> list[tuple[str, str]]:
    pairs = scene_order(frame[frame["scene"] != "mean"])
    out = []
    for dataset in dict.fromkeys(d for d, _ in pairs):
        out.extend(p for p in pairs if p[0] == dataset)
        out.append((dataset, "mean"))
    if (frame["dataset"] == "all").any():
        out.append(("all", "mean"))
    return out


def _sort_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in _row_order (datasets in benchmark order, scenes alphabetical, then their mean rows)."""
    rank = {pair: i for i, pair in enumerate(_row_order(frame))}
    keys = [rank[(d, s)] for d, s in zip(frame["dataset"], frame["scene"])]
    return frame.assign(_rank=keys).sort_values("_rank", kind="stable").drop(columns="_rank").reset_index(drop=True)


# -- formatting --------------------------------------------------------------------------------------
def fmt_num(value: float, digits: int) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def fmt_pm(mean: float, std: float, digits: int) -> str:
    if mean is None or not math.isfinite(mean):
        return "—"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_delta(value: float, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value + 0.0 if round(value, digits) != 0 else 0.0:+.{digits}f}"


def fraction_label(f: float) -> str:
    frac = Fraction(f).limit_denominator(1000)
    return str(frac.numerator) if frac.denominator == 1 else f"{frac.numerator}/{frac.denominator}"


@dataclass
class Table:
    """One table: numeric values (CSV), display strings (Markdown / LaTeX / HTML), title and a note."""

    name: str
    title: str
    note: str
    numeric: pd.DataFrame
    display: pd.DataFrame


# -- (a) quality at checkpoints -----------------------------------------------------------------------
def quality_table(traces: pd.DataFrame, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Table:
    methods = methods_of(traces)
    arms = arms_of(traces) or ["hsm"]  # no arm: the empty Δ columns of the two-method table
    ranked = len(arms) > 1
    final = max(fractions)
    numeric_parts = []
    for metric in ("psnr", "ssim"):
        long = _with_means(values_at_fractions(traces, metric, fractions).drop(columns="time_s"), ["fraction"])
        stats = seed_stats(long, ["dataset", "scene", "method", "fraction"])
        stats["metric"] = metric
        numeric_parts.append(stats)
    stats = pd.concat(numeric_parts, ignore_index=True)
    times = values_at_fractions(traces, "psnr", fractions).groupby(["dataset", "fraction"])["time_s"].mean()

    rows, display = [], []
    rank_num: dict[str, dict] = {}
    rank_shown: dict[str, dict] = {}
    for dataset, scene in _row_order(stats):
        for f in fractions:
            time_s = times.get((dataset, f), math.nan) if dataset != "all" else math.nan
            num = {"dataset": dataset, "scene": scene, "fraction": f, "time_s": time_s}
            shown = {
                "dataset": dataset, "scene": scene, "budget fraction": fraction_label(f),
                "time (s)": fmt_num(time_s, 1),
            }  # fmt: skip
            for metric, label, digits in (("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 4)):
                means = {}
                for method in methods:
                    sel = stats[
                        (stats["metric"] == metric) & (stats["dataset"] == dataset) & (stats["scene"] == scene)
                        & (stats["method"] == method) & np.isclose(stats["fraction"], f)
                    ]  # fmt: skip
                    m, s, n = (sel.iloc[0]["mean"], sel.iloc[0]["std"], sel.iloc[0]["n"]) if len(sel) else (
                        math.nan, math.nan, 0)  # fmt: skip
                    means[method] = m
                    num[f"{metric}_{method}_mean"], num[f"{metric}_{method}_std"] = m, s
                    num[f"n_seeds_{method}"] = n
                    shown[f"{label} {method}"] = fmt_pm(m, s, digits)
                for arm in arms:
                    delta = means.get(arm, math.nan) - means.get(REFERENCE, math.nan)
                    num[f"{metric}_delta" if len(arms) == 1 else f"{metric}_delta_{arm}"] = delta
                    shown[f"Δ{label.split(' ')[0]} {arm} − {REFERENCE}"] = fmt_delta(delta, digits)
                if ranked and scene == "mean" and f == final:
                    rank_num.setdefault(dataset, {"dataset": dataset, "scene": RANK, "fraction": f})
                    rank_shown.setdefault(dataset, {"dataset": dataset, "scene": RANK, "budget fraction": "1"})
                    for method, k in ranks(means).items():
                        rank_num[dataset][f"{metric}_{method}_rank"] = k
                        rank_shown[dataset][f"{label} {method}"] = f"#{k}"
            rows.append(num)
            display.append(shown)
        if dataset in rank_num and scene == "mean":
            rows.append(rank_num[dataset])
            display.append(rank_shown[dataset])
    note = (
        "Mean ± std over seeds of each run's trace, linearly interpolated at fraction × budget of training "
        "time (evaluation excluded); at the full budget this is the final evaluation (on eval.final_views test views, "
        "all by default; earlier ones use eval.subset_views). "
        "'—' where a checkpoint comes more than a step before a run's first evaluation (no extrapolation). "
        f"'mean' rows average the scenes per seed first. Δ = {arms[0] if len(arms) == 1 else 'arm'} − {REFERENCE} "
        "of the means."
    )
    if ranked:
        note += " 'ranking' rows: each method's rank (#1 best) by the dataset's mean at the full budget."
    shown = pd.DataFrame(display).fillna("") if ranked else pd.DataFrame(display)
    return Table("quality", "PSNR and SSIM at equal training time", note, pd.DataFrame(rows), shown)


# -- (b) speed-up -------------------------------------------------------------------------------------
def _merge_arms(tables: dict[str, Table], renames: dict[str, str], name: str, title: str, note: str) -> Table:
    """One table from per-arm tables of the same rows: shared columns once, each arm's columns side by side,
    a column ``c`` of ``renames`` becoming ``renames[c].format(arm=arm)`` in every arm's part."""
    shared_num, shared_shown = [], []
    numeric, display = None, None
    for arm, table in tables.items():
        num = table.numeric.rename(columns={c: r.format(arm=arm) for c, r in renames.items()})
        shown = table.display.rename(columns={c: r.format(arm=arm) for c, r in renames.items()})
        if numeric is None:
            numeric, display = num, shown
            shared_num, shared_shown = list(num.columns), list(shown.columns)
            continue
        numeric = numeric.join(num[[c for c in num.columns if c not in shared_num]])
        display = display.join(shown[[c for c in shown.columns if c not in shared_shown]])
        shared_num, shared_shown = list(numeric.columns), list(display.columns)
    return Table(name, title, note, numeric, display.fillna(""))


def speedup_table(
    runs: pd.DataFrame, traces: pd.DataFrame, fast: str | None = None, reference: str = REFERENCE
) -> Table:
    """Speed-up of ``fast`` (default: every arm present, side by side, with a ranking row per dataset)."""
    arms = [fast] if fast is not None else (arms_of(runs) or ["hsm"])
    if len(arms) == 1:
        return _speedup_one(runs, traces, arms[0], reference)
    tables = {arm: _speedup_one(runs, traces, arm, reference) for arm in arms}
    renames = {
        "fast_final_psnr": "{arm}_final_psnr", "time_to_target_s": "{arm}_time_to_target_s",
        "speedup": "{arm}_speedup", "status": "{arm}_status", "speed-up": "{arm} speed-up",
    }  # fmt: skip
    note = (
        f"Training time each arm needs to reach {reference}'s final PSNR (mean over seeds), by linear "
        f"interpolation on the arm's mean trace; speed-up = {reference}'s mean training time / that time. "
        "'≤' marks a target already met at the first evaluation (the time is an upper bound). "
        "Geometric means over the scenes where the target was reached; 'ranking' rows order the arms by the "
        "scenes reached, then by that mean (#1 fastest)."
    )
    table = _merge_arms(tables, renames, "speedup", f"Speed-up of each arm to {reference}'s final PSNR", note)
    return _with_speedup_ranking(table, arms)


def _with_speedup_ranking(table: Table, arms: list[str]) -> Table:
    """A 'ranking' row after each dataset's geometric-mean row: the arms by their geometric-mean speed-up."""
    numeric, display = [], []
    for (_, num), (_, shown) in zip(table.numeric.iterrows(), table.display.iterrows(), strict=True):
        numeric.append(num.to_dict())
        display.append(shown.to_dict())
        if num["scene"] == "geometric mean":
            # More scenes reached first, then the larger geometric mean (over different scenes otherwise).
            key = {arm: (int(str(num[f"{arm}_status"]).split("/")[0]), float(num[f"{arm}_speedup"])) for arm in arms}
            ranked = sorted((a for a in arms if key[a][0] > 0), key=lambda a: (-key[a][0], -key[a][1]))
            order = {arm: k + 1 for k, arm in enumerate(ranked)}
            numeric.append({"dataset": num["dataset"], "scene": RANK, **{f"{a}_rank": k for a, k in order.items()}})
            display.append({"dataset": shown["dataset"], "scene": RANK,
                            **{f"{a} speed-up": f"#{k}" for a, k in order.items()}})  # fmt: skip
    return Table(table.name, table.title, table.note, pd.DataFrame(numeric), pd.DataFrame(display).fillna(""))


def _speedup_one(runs: pd.DataFrame, traces: pd.DataFrame, fast: str, reference: str) -> Table:
    rows, display = [], []
    by_dataset: dict[str, list[float]] = {}
    counts: dict[str, list[int]] = {}
    for dataset, scene in scene_order(runs):
        base = runs[(runs["dataset"] == dataset) & (runs["scene"] == scene) & (runs["method"] == reference)]
        target = float(base["psnr"].mean()) if len(base) else math.nan
        base_time = float(base["train_seconds"].mean()) if len(base) else math.nan
        sel = traces[(traces["dataset"] == dataset) & (traces["scene"] == scene) & (traces["method"] == fast)]
        curves = [metric_curve(g, "psnr") for _, g in sel.groupby("seed")]
        t_reach, status = math.nan, "no runs"
        fast_final = math.nan
        if curves and math.isfinite(target):
            mc = mean_curve(curves)
            t_reach, status = time_to_reach(mc.times, mc.mean, target)
            fast_final = float(mc.mean[-1])
        elif curves:
            status = f"no {reference} runs"
        speedup = base_time / t_reach if math.isfinite(t_reach) and t_reach > 0 else math.nan
        counts.setdefault(dataset, [0, 0])
        counts[dataset][1] += 1
        if math.isfinite(speedup):
            counts[dataset][0] += 1
            by_dataset.setdefault(dataset, []).append(speedup)
        rows.append({
            "dataset": dataset, "scene": scene, "target_psnr": target, "reference_seconds": base_time,
            "fast_final_psnr": fast_final, "time_to_target_s": t_reach, "speedup": speedup, "status": status,
        })  # fmt: skip
        shown_time = {"reached": fmt_num(t_reach, 1), "first evaluation": f"≤ {fmt_num(t_reach, 1)}"}
        display.append({
            "dataset": dataset, "scene": scene,
            f"{reference} final PSNR (dB)": fmt_num(target, 2),
            f"{reference} time (s)": fmt_num(base_time, 1),
            f"{fast} final PSNR (dB)": fmt_num(fast_final, 2),
            f"{fast} time to reach it (s)": shown_time.get(status, status),
            "speed-up": f"{'≥ ' if status == 'first evaluation' else ''}{speedup:.2f}×"
            if math.isfinite(speedup) else "—",
        })  # fmt: skip
    all_speedups = []
    for dataset in _order(list(counts), DATASETS):
        values = by_dataset.get(dataset, [])
        all_speedups.extend(values)
        geo = float(np.exp(np.mean(np.log(values)))) if values else math.nan
        reached, total = counts[dataset]
        rows.append({"dataset": dataset, "scene": "geometric mean", "speedup": geo, "status": f"{reached}/{total}"})
        display.append({
            "dataset": dataset, "scene": "geometric mean",
            "speed-up": (f"{geo:.2f}×" if math.isfinite(geo) else "—") + f" ({reached}/{total} scenes reached)",
        })  # fmt: skip
    if len(counts) > 1:
        geo = float(np.exp(np.mean(np.log(all_speedups)))) if all_speedups else math.nan
        reached, total = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
        rows.append({"dataset": "all", "scene": "geometric mean", "speedup": geo, "status": f"{reached}/{total}"})
        display.append({
            "dataset": "all", "scene": "geometric mean",
            "speed-up": (f"{geo:.2f}×" if math.isfinite(geo) else "—") + f" ({reached}/{total} scenes reached)",
        })  # fmt: skip
    note = (
        f"Training time {fast} needs to reach {reference}'s final PSNR (mean over seeds), by linear "
        f"interpolation on {fast}'s mean trace; speed-up = {reference}'s mean training time / that time. "
        "'≤' marks a target already met at the first evaluation (the time is an upper bound). "
        "Geometric means over the scenes where the target was reached."
    )
    numeric = pd.DataFrame(rows)
    shown = pd.DataFrame(display).fillna("")
    return Table("speedup", f"Speed-up of {fast} to {reference}'s final PSNR", note, numeric, shown)


# -- (c) memory ---------------------------------------------------------------------------------------
def saving_percent(reference: float, other: float) -> float:
    """100 · (1 − other / reference); NaN where the reference is 0 or missing."""
    if not (math.isfinite(reference) and math.isfinite(other)) or reference <= 0:
        return math.nan
    return 100.0 * (1.0 - other / reference)


def memory_table(runs: pd.DataFrame, fast: str | None = None, reference: str = REFERENCE) -> Table:
    """Memory of ``reference`` and ``fast`` (default: every arm present, side by side)."""
    arms = [fast] if fast is not None else (arms_of(runs) or ["hsm"])
    if len(arms) == 1:
        return _memory_one(runs, arms[0], reference)
    tables = {arm: _memory_one(runs, arm, reference) for arm in arms}
    renames = {f"{k}_saving_pct": f"{k}_saving_pct_{{arm}}" for k in ("graph", "cuda")}
    renames |= {f"{label} saving (%)": f"{label} saving {{arm}} (%)" for label in ("autograd graph", "CUDA peak")}
    note = tables[arms[0]].note.replace(f"{arms[0]} / {reference}", f"arm / {reference}")
    return _merge_arms(tables, renames, "memory", "Peak training memory", note)


def _memory_one(runs: pd.DataFrame, fast: str, reference: str) -> Table:
    columns = (("graph", "max_graph_bytes", "autograd graph"), ("cuda", "max_peak_mem_bytes", "CUDA peak"))
    rows, display = [], []
    for dataset, scene in scene_order(runs):
        num = {"dataset": dataset, "scene": scene}
        for key, column, _ in columns:
            for method in (reference, fast):
                sel = runs[(runs["dataset"] == dataset) & (runs["scene"] == scene) & (runs["method"] == method)]
                value = float(sel[column].mean()) / MIB if len(sel) else math.nan
                num[f"{key}_{method}_mib"] = value if key == "graph" or value > 0 else math.nan
            num[f"{key}_saving_pct"] = saving_percent(num[f"{key}_{reference}_mib"], num[f"{key}_{fast}_mib"])
        rows.append(num)
    numeric = pd.DataFrame(rows)
    value_cols = [c for c in numeric.columns if c not in ("dataset", "scene")]
    means = []
    for dataset in _order(numeric["dataset"].tolist(), DATASETS):
        sub = numeric[numeric["dataset"] == dataset]
        means.append({"dataset": dataset, "scene": "mean", **{c: sub[c].mean() for c in value_cols}})
    if numeric["dataset"].nunique() > 1:
        means.append({"dataset": "all", "scene": "mean", **{c: numeric[c].mean() for c in value_cols}})
    numeric = pd.concat([numeric, pd.DataFrame(means)], ignore_index=True)
    numeric = _sort_rows(numeric)
    for _, r in numeric.iterrows():
        shown = {"dataset": r["dataset"], "scene": r["scene"]}
        for key, _, label in columns:
            shown[f"{label} {reference} (MiB)"] = fmt_num(r[f"{key}_{reference}_mib"], 1)
            shown[f"{label} {fast} (MiB)"] = fmt_num(r[f"{key}_{fast}_mib"], 1)
            shown[f"{label} saving (%)"] = fmt_num(r[f"{key}_saving_pct"], 1)
        display.append(shown)
    note = (
        "Largest per-step value over each run, mean over seeds. Autograd graph: bytes saved by the "
        "autograd graph in one training step (measured on every device). CUDA peak: allocator peak of a "
        "step minus its static load, '—' for CPU runs. Saving = 100 · (1 − "
        f"{fast} / {reference}); 'mean' rows average the scenes' MiB and the scenes' savings."
    )
    return Table("memory", "Peak training memory", note, numeric, pd.DataFrame(display))


# -- (d) hard batch fraction --------------------------------------------------------------------------
def hard_fraction_table(
    runs: pd.DataFrame,
    traces: pd.DataFrame,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    method: str | None = None,
) -> Table:
    """b/B of ``method`` (default: every sample-level arm present; a "method" column when several)."""
    arms = [method] if method is not None else (sample_level_arms(traces) or ["hsm"])
    if len(arms) == 1:
        return _hard_fraction_one(runs, traces, fractions, arms[0])
    parts = [_hard_fraction_one(runs, traces, fractions, arm) for arm in arms]
    numeric = pd.concat([p.numeric.assign(method=arm) for p, arm in zip(parts, arms)], ignore_index=True)
    display = pd.concat([p.display.assign(method=arm) for p, arm in zip(parts, arms)], ignore_index=True)
    numeric = _sort_rows(numeric)[["dataset", "scene", "method", *parts[0].numeric.columns[2:]]]
    display = _sort_rows(display)[["dataset", "scene", "method", *parts[0].display.columns[2:]]]
    note = parts[0].note.replace(f"that {arms[0]} put", "that each arm put")
    return Table("hard_fraction", "Hard batch fraction b/B of the sample-level arms", note, numeric, display)


def _hard_fraction_one(runs: pd.DataFrame, traces: pd.DataFrame, fractions: Sequence[float], method: str) -> Table:
    sel = traces[traces["method"] == method]
    if sel.empty:
        empty = pd.DataFrame(columns=["dataset", "scene"])
        return Table("hard_fraction", f"Hard batch fraction b/B of {method}", f"No {method} runs.", empty, empty)
    long = values_at_fractions(sel, "hard_fraction", fractions, window=True).drop(columns="time_s")
    stats = seed_stats(_with_means(long, ["fraction"]), ["dataset", "scene", "method", "fraction"])
    overall_long = runs[runs["method"] == method][["dataset", "scene", "method", "seed"]].copy()
    overall_long["value"] = runs.loc[runs["method"] == method, "graph_sample_fraction"].to_numpy(float)
    overall = seed_stats(_with_means(overall_long, []), ["dataset", "scene", "method"])
    rows, display = [], []
    for dataset, scene in _row_order(stats):
        num = {"dataset": dataset, "scene": scene}
        shown = {"dataset": dataset, "scene": scene}
        for f in fractions:
            s = stats[(stats["dataset"] == dataset) & (stats["scene"] == scene) & np.isclose(stats["fraction"], f)]
            m, sd = (s.iloc[0]["mean"], s.iloc[0]["std"]) if len(s) else (math.nan, math.nan)
            num[f"b_over_B_{f:g}_mean"], num[f"b_over_B_{f:g}_std"] = m, sd
            shown[f"b/B at {fraction_label(f)} budget"] = fmt_pm(m, sd, 3)
        o = overall[(overall["dataset"] == dataset) & (overall["scene"] == scene)]
        m, sd = (o.iloc[0]["mean"], o.iloc[0]["std"]) if len(o) else (math.nan, math.nan)
        num["b_over_B_run_mean"], num["b_over_B_run_std"] = m, sd
        shown["b/B over the run"] = fmt_pm(m, sd, 3)
        rows.append(num)
        display.append(shown)
    note = (
        f"Fraction of the marched samples that {method} put into the autograd graph (b/B): mean over the "
        "trace window containing fraction × budget, and samples_in_graph / samples_total over the whole "
        "run; mean ± std over seeds. The baseline's b/B is 1 by construction."
    )
    return Table("hard_fraction", f"Hard batch fraction b/B of {method}", note, pd.DataFrame(rows),
                 pd.DataFrame(display))  # fmt: skip


def build_tables(
    runs: pd.DataFrame, traces: pd.DataFrame, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> dict[str, Table]:
    """All four tables, keyed by name (see TABLE_NAMES)."""
    fractions = sorted(float(f) for f in fractions)
    tables = (
        quality_table(traces, fractions),
        speedup_table(runs, traces),
        memory_table(runs),
        hard_fraction_table(runs, traces, fractions),
    )
    return {name: mark_contended(table, runs) for name, table in zip(TABLE_NAMES, tables, strict=True)}


CONTENDED_MARK = "†"


def mark_contended(table: Table, runs: pd.DataFrame) -> Table:
    """Mark with † the scene (and its dataset's mean rows) of every row built from a run whose training
    clock other processes shared (``clock_contended`` in runs.csv), and count those runs in the note."""
    if "clock_contended" not in runs.columns or not runs["clock_contended"].astype(bool).any():
        return table
    bad = runs[runs["clock_contended"].astype(bool)]
    scenes = set(zip(bad["dataset"], bad["scene"], strict=True))
    datasets = {d for d, _ in scenes}
    display = table.display.copy()
    for i, row in display.iterrows():
        dataset, scene = str(row["dataset"]), str(row["scene"])
        hit = (dataset, scene) in scenes or (
            scene not in set(runs["scene"]) and (dataset in datasets or dataset == "all")
        )
        if hit:
            display.at[i, "scene"] = f"{scene} {CONTENDED_MARK}"
    note = (
        f"{table.note} {CONTENDED_MARK} {len(bad)} of {len(runs)} runs had a contended training clock (other "
        f"processes or steal took more than the threshold of their cores, see summary.json 'clock'): "
        + ", ".join(f"{r.scene}/{r.method}/seed {r.seed}" for r in bad.itertuples())
        + "."
    )
    return Table(table.name, table.title, note, table.numeric, display)


# -- writers ------------------------------------------------------------------------------------------
def to_markdown(table: Table) -> str:
    frame = table.display
    header = [str(c) for c in frame.columns]
    cells = [[str(v).replace("|", "\\|") for v in row] for row in frame.itertuples(index=False)]
    numeric_col = [all(_looks_numeric(row[i]) for row in cells) and cells for i in range(len(header))]
    lines = [f"## {table.title}", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---:" if numeric_col[i] else "---" for i in range(len(header))) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in cells)
    lines.extend(["", table.note, ""])
    return "\n".join(lines)


def _looks_numeric(text: str) -> bool:
    head = text.replace("≤ ", "").replace("≥ ", "").split(" ")[0].rstrip("×")
    try:
        float(head)
    except ValueError:
        return text in ("—", "")
    return True


_LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$", "Δ": r"$\Delta$", "−": "--",
    "×": r"$\times$", "—": "--", "≤": r"$\leq$", "≥": r"$\geq$", "·": r"$\cdot$",
}  # fmt: skip


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def to_latex(table: Table) -> str:
    """A booktabs table (needs \\usepackage{booktabs})."""
    frame = table.display
    cells = [[str(v) for v in row] for row in frame.itertuples(index=False)]
    align = "".join("r" if cells and all(_looks_numeric(r[i]) for r in cells) else "l" for i in range(frame.shape[1]))
    lines = [
        r"\begin{table}[t]", r"\centering", r"\small",
        rf"\caption{{{latex_escape(table.title)}. {latex_escape(table.note)}}}",
        rf"\label{{tab:{table.name.replace('_', '-')}}}",
        rf"\begin{{tabular}}{{{align}}}", r"\toprule",
        " & ".join(latex_escape(c) for c in frame.columns) + r" \\", r"\midrule",
    ]  # fmt: skip
    previous = None
    for row in cells:
        if previous is not None and row[0] != previous:
            lines.append(r"\midrule")
        previous = row[0]
        lines.append(" & ".join(latex_escape(v) for v in row) + r" \\")
    lines.extend([r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])
    return "\n".join(lines)


def to_html(table: Table) -> str:
    body = table.display.to_html(index=False, border=0, classes="table", na_rep="—", escape=True)
    style = (
        "<style>body{font-family:sans-serif;font-size:14px} table{border-collapse:collapse} "
        "th,td{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right} "
        "td:first-child,td:nth-child(2),th{text-align:left}</style>"
    )
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{table.title}</title>{style}</head>"
        f"<body><h3>{table.title}</h3>\n{body}\n<p>{table.note}</p></body></html>\n"
    )


def write_table(table: Table, out_dir: str | Path) -> list[Path]:
    """Write <name>.md, .tex, .html (display) and .csv (numeric) into out_dir; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"{table.name}.{ext}" for ext in ("md", "tex", "html", "csv")}
    paths["md"].write_text(to_markdown(table), encoding="utf-8")
    paths["tex"].write_text(to_latex(table), encoding="utf-8")
    paths["html"].write_text(to_html(table), encoding="utf-8")
    table.numeric.to_csv(paths["csv"], index=False)
    return list(paths.values())


def write_tables(
    runs_csv: str | Path, traces_csv: str | Path, out_dir: str | Path, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> list[Path]:
    """Read the two CSVs, build every table and write all formats."""
    runs, traces = pd.read_csv(runs_csv), pd.read_csv(traces_csv)
    paths: list[Path] = []
    for table in build_tables(runs, traces, fractions).values():
        paths.extend(write_table(table, out_dir))
    return paths
