"""Aggregation, tables and figures on small synthetic runs (no training, no torch)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ngp_ohem.names import FIGURE_NAMES, TABLE_NAMES, TRACE_COLUMNS
from ngp_ohem.report import readme
from ngp_ohem.report.aggregate import RunError, aggregate_runs, flatten, load_run, write_aggregate
from ngp_ohem.report.figures import render_comparison, render_rows, write_figures
from ngp_ohem.report.tables import (
    build_tables,
    hard_fraction_table,
    mean_curve,
    memory_table,
    metric_curve,
    quality_table,
    saving_percent,
    speedup_table,
    time_to_reach,
    to_latex,
    to_markdown,
    values_at_fractions,
    window_at,
    write_tables,
)

MIB = 1 << 20


def trace(
    dataset: str,
    scene: str,
    method: str,
    seed: int,
    times: list[float],
    psnr: list[float],
    budget: float | None = None,
    **columns: list[float] | float,
) -> pd.DataFrame:
    """A trace in the trainer's format: every trace column (those the report does not read are 0)."""
    n = len(times)
    frame = pd.DataFrame(
        {
            "dataset": dataset,
            "scene": scene,
            "method": method,
            "seed": seed,
            "backend": "torch",
            "device": "cpu",
            "step": np.arange(1, n + 1) * 10,
            "train_seconds": times,
            "samples_total": np.arange(1, n + 1) * 1000,
            "samples_in_graph": np.arange(1, n + 1) * (1000 if method == "baseline" else 400),
            "psnr": psnr,
            "ssim": [p / 40 for p in psnr],
            "peak_mem_bytes": 0,
            "graph_bytes": 100 * MIB if method == "baseline" else 40 * MIB,
            "rss_bytes": 500 * MIB,
            "hard_fraction": 1.0 if method == "baseline" else 0.4,
            "samples_per_step": 100.0,
            "eval_views": 2,
        }
    )
    for key, value in columns.items():
        frame[key] = value
    frame = frame.reindex(columns=list(TRACE_COLUMNS), fill_value=0)
    frame["budget_s"] = budget if budget is not None else times[-1]
    return frame


def runs_from(traces: pd.DataFrame) -> pd.DataFrame:
    """The runs.csv rows the aggregator would write for these traces (columns the tables read)."""
    rows = []
    for (dataset, scene, method, seed), g in traces.groupby(["dataset", "scene", "method", "seed"]):
        last = g.iloc[-1]
        rows.append({
            "dataset": dataset, "scene": scene, "method": method, "seed": seed, "psnr": last["psnr"],
            "ssim": last["ssim"], "train_seconds": last["train_seconds"], "budget_s": last["budget_s"],
            "max_graph_bytes": g["graph_bytes"].max(), "max_peak_mem_bytes": g["peak_mem_bytes"].max(),
            "graph_sample_fraction": last["samples_in_graph"] / last["samples_total"],
            "cfg.mining.min_fraction": 0.05, "cfg.mining.max_fraction": 0.5,
        })  # fmt: skip
    return pd.DataFrame(rows)


# -- curves -------------------------------------------------------------------------------------------
def test_metric_curve_keeps_last_row_of_a_repeated_time() -> None:
    t = trace("blender", "a", "hsm", 0, [1.0, 1.0, 2.0, 2.0], [10.0, 11.0, 12.0, 13.0])
    times, values = metric_curve(t)
    assert times.tolist() == [1.0, 2.0]
    assert values.tolist() == [11.0, 13.0]


def test_window_at_reads_the_window_that_contains_the_time() -> None:
    t_rows, v_rows = np.array([1.0, 2.0, 4.0]), np.array([0.5, 0.3, 0.1])
    # row k covers (t[k-1], t[k]]; before the first row its window, past the end the last one
    assert window_at([0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 9.0], t_rows, v_rows).tolist() == [
        0.5, 0.5, 0.3, 0.3, 0.1, 0.1, 0.1,
    ]  # fmt: skip


def test_time_to_reach_interpolates_linearly() -> None:
    times, values = np.array([1.0, 2.0, 4.0]), np.array([10.0, 20.0, 30.0])
    assert time_to_reach(times, values, 25.0) == (3.0, "reached")
    assert time_to_reach(times, values, 20.0) == (2.0, "reached")
    assert time_to_reach(times, values, 5.0) == (1.0, "first evaluation")
    t, status = time_to_reach(times, values, 31.0)
    assert math.isnan(t) and status == "not reached"


def test_mean_curve_on_union_of_times_within_the_common_range() -> None:
    a = (np.array([1.0, 3.0, 5.0]), np.array([0.0, 2.0, 4.0]))
    b = (np.array([2.0, 4.0, 6.0]), np.array([1.0, 3.0, 5.0]))
    mc = mean_curve([a, b])
    assert mc.times.tolist() == [2.0, 3.0, 4.0, 5.0]
    # a(t) = t - 1, b(t) = t - 1 on [2, 5]: identical curves
    np.testing.assert_allclose(mc.mean, [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(mc.std, 0.0)
    assert mc.n == 2


# -- (a) quality ----------------------------------------------------------------------------------------
def test_values_at_fractions_interpolates_each_seed() -> None:
    t = trace("blender", "a", "baseline", 0, [1.0, 2.0, 4.0, 8.0], [10.0, 12.0, 16.0, 20.0], budget=8.0)
    out = values_at_fractions(t, "psnr", [0.125, 0.375, 1.0])
    assert out["time_s"].tolist() == [1.0, 3.0, 8.0]
    assert out["value"].tolist() == [10.0, 14.0, 20.0]


def test_no_metric_before_the_first_evaluation() -> None:
    times = [3.0, 8.0]  # one slow first step: the first evaluation comes after budget / 8
    traces = pd.concat([
        trace("blender", "a", "baseline", 0, times, [10.0, 20.0], budget=8.0),
        trace("blender", "b", "baseline", 0, [1.0, 8.0], [10.0, 20.0], budget=8.0),
    ])  # fmt: skip
    out = values_at_fractions(traces, "psnr", [0.125, 0.5])
    assert np.isnan(out.loc[(out["scene"] == "a") & (out["fraction"] == 0.125), "value"]).all()
    assert out.loc[(out["scene"] == "a") & (out["fraction"] == 0.5), "value"].item() == pytest.approx(12.0)
    table = quality_table(traces, [0.125, 0.5])
    shown = table.display.set_index(["scene", "budget fraction"])
    assert shown.loc[("a", "1/8"), "PSNR (dB) baseline"] == "—"
    assert shown.loc[("mean", "1/8"), "PSNR (dB) baseline"] == "—"  # undefined for one scene: no mean
    assert shown.loc[("b", "1/8"), "PSNR (dB) baseline"] == "10.00"


def test_a_first_evaluation_one_step_late_still_counts_at_its_checkpoint() -> None:
    # Evaluated at the first step end past budget/8 = 1.0 s: 1.04 s after 10 steps of ~0.1 s each.
    late = trace("blender", "a", "baseline", 0, [1.04, 8.0], [10.0, 20.0], budget=8.0)
    out = values_at_fractions(late, "psnr", [0.125])
    assert out["value"].tolist() == [10.0]
    too_late = trace("blender", "a", "baseline", 0, [1.5, 8.0], [10.0, 20.0], budget=8.0)  # 5 steps late
    assert np.isnan(values_at_fractions(too_late, "psnr", [0.125])["value"]).all()


def test_quality_table_mean_std_and_delta() -> None:
    times = [1.0, 2.0, 4.0, 8.0]
    traces = pd.concat([
        trace("blender", "a", "baseline", 0, times, [10.0, 12.0, 16.0, 20.0]),
        trace("blender", "a", "baseline", 1, times, [12.0, 14.0, 18.0, 22.0]),
        trace("blender", "a", "hsm", 0, times, [11.0, 14.0, 19.0, 23.0]),
        trace("blender", "a", "hsm", 1, times, [13.0, 16.0, 21.0, 25.0]),
    ])  # fmt: skip
    table = quality_table(traces, [0.25, 1.0])
    row = table.numeric[(table.numeric["scene"] == "a") & (table.numeric["fraction"] == 0.25)].iloc[0]
    assert row["time_s"] == 2.0
    assert row["psnr_baseline_mean"] == pytest.approx(13.0)
    assert row["psnr_baseline_std"] == pytest.approx(math.sqrt(2.0))
    assert row["psnr_hsm_mean"] == pytest.approx(15.0)
    assert row["psnr_delta"] == pytest.approx(2.0)
    final = table.numeric[(table.numeric["scene"] == "a") & (table.numeric["fraction"] == 1.0)].iloc[0]
    assert final["psnr_delta"] == pytest.approx(3.0)
    assert final["ssim_delta"] == pytest.approx(3.0 / 40)
    shown = table.display.iloc[0]
    assert shown["PSNR (dB) baseline"] == "13.00 ± 1.41"
    assert shown["ΔPSNR hsm − baseline"] == "+2.00"


def test_quality_mean_rows_average_scenes_per_seed_then_over_seeds() -> None:
    times = [1.0, 2.0]
    traces = pd.concat([
        trace("blender", "a", "baseline", 0, times, [10.0, 20.0]),
        trace("blender", "b", "baseline", 0, times, [10.0, 30.0]),
        trace("blender", "a", "baseline", 1, times, [10.0, 22.0]),
        trace("blender", "b", "baseline", 1, times, [10.0, 32.0]),
        trace("llff", "c", "baseline", 0, times, [10.0, 10.0]),
    ])  # fmt: skip
    table = quality_table(traces, [1.0])
    num = table.numeric.set_index(["dataset", "scene"])
    # per seed: (20 + 30) / 2 = 25, (22 + 32) / 2 = 27 -> 26 ± sqrt(2)
    assert num.loc[("blender", "mean"), "psnr_baseline_mean"] == pytest.approx(26.0)
    assert num.loc[("blender", "mean"), "psnr_baseline_std"] == pytest.approx(math.sqrt(2.0))
    assert ("all", "mean") in num.index
    assert list(table.display["scene"]) == ["a", "b", "mean", "c", "mean", "mean"]


# -- (b) speed-up ---------------------------------------------------------------------------------------
def test_speedup_interpolates_on_the_mean_trace() -> None:
    traces = pd.concat([
        trace("blender", "a", "baseline", 0, [1.0, 5.0, 10.0], [10.0, 15.0, 20.0]),
        trace("blender", "a", "baseline", 1, [1.0, 5.0, 10.0], [12.0, 17.0, 22.0]),
        trace("blender", "a", "hsm", 0, [1.0, 5.0, 10.0], [10.0, 20.0, 30.0]),
        trace("blender", "a", "hsm", 1, [1.0, 5.0, 10.0], [12.0, 22.0, 32.0]),
    ])  # fmt: skip
    table = speedup_table(runs_from(traces), traces)
    row = table.numeric.iloc[0]
    # target = mean final baseline PSNR = 21; hsm mean trace (11, 21, 31) reaches 21 at t = 5
    assert row["target_psnr"] == pytest.approx(21.0)
    assert row["time_to_target_s"] == pytest.approx(5.0)
    assert row["speedup"] == pytest.approx(2.0)
    assert row["status"] == "reached"
    assert table.display.iloc[0]["speed-up"] == "2.00×"


def test_speedup_between_evaluations_and_geometric_mean_and_not_reached() -> None:
    times = [1.0, 2.0, 4.0, 8.0]
    traces = pd.concat([
        # scene a: target 20, hsm passes 20 between t=2 (16) and t=4 (24) -> t=3, speed-up 8/3
        trace("blender", "a", "baseline", 0, times, [5.0, 10.0, 15.0, 20.0]),
        trace("blender", "a", "hsm", 0, times, [8.0, 16.0, 24.0, 26.0]),
        # scene b: target 20 reached at t=1 -> 8/1 (upper bound on the time)
        trace("blender", "b", "baseline", 0, times, [5.0, 10.0, 15.0, 20.0]),
        trace("blender", "b", "hsm", 0, times, [20.0, 21.0, 22.0, 23.0]),
        # scene c: never reached
        trace("blender", "c", "baseline", 0, times, [5.0, 10.0, 15.0, 20.0]),
        trace("blender", "c", "hsm", 0, times, [5.0, 6.0, 7.0, 19.0]),
    ])  # fmt: skip
    table = speedup_table(runs_from(traces), traces)
    num = table.numeric.set_index("scene")
    assert num.loc["a", "time_to_target_s"] == pytest.approx(3.0)
    assert num.loc["a", "speedup"] == pytest.approx(8.0 / 3.0)
    assert num.loc["b", "status"] == "first evaluation"
    assert num.loc["c", "status"] == "not reached"
    assert math.isnan(num.loc["c", "speedup"])
    assert num.loc["geometric mean", "speedup"] == pytest.approx(math.sqrt(8.0 / 3.0 * 8.0))
    assert num.loc["geometric mean", "status"] == "2/3"
    shown = table.display.set_index("scene")
    assert shown.loc["c", "hsm time to reach it (s)"] == "not reached"
    assert shown.loc["b", "hsm time to reach it (s)"] == "≤ 1.0"
    assert "(2/3 scenes reached)" in shown.loc["geometric mean", "speed-up"]


# -- (c) memory -----------------------------------------------------------------------------------------
def test_saving_percent() -> None:
    assert saving_percent(100.0, 40.0) == pytest.approx(60.0)
    assert saving_percent(100.0, 125.0) == pytest.approx(-25.0)
    assert math.isnan(saving_percent(0.0, 10.0))


def test_memory_table_cpu_and_cuda() -> None:
    times = [1.0, 2.0]
    traces = pd.concat([
        trace("blender", "a", "baseline", 0, times, [1.0, 2.0]),
        trace("blender", "a", "hsm", 0, times, [1.0, 2.0]),
        trace("llff", "c", "baseline", 0, times, [1.0, 2.0], peak_mem_bytes=[150 * MIB, 200 * MIB],
              graph_bytes=[100 * MIB, 80 * MIB]),
        trace("llff", "c", "hsm", 0, times, [1.0, 2.0], peak_mem_bytes=[120 * MIB, 150 * MIB],
              graph_bytes=[30 * MIB, 25 * MIB]),
    ])  # fmt: skip
    table = memory_table(runs_from(traces))
    num = table.numeric.set_index(["dataset", "scene"])
    assert num.loc[("blender", "a"), "graph_baseline_mib"] == pytest.approx(100.0)
    assert num.loc[("blender", "a"), "graph_hsm_mib"] == pytest.approx(40.0)
    assert num.loc[("blender", "a"), "graph_saving_pct"] == pytest.approx(60.0)
    assert math.isnan(num.loc[("blender", "a"), "cuda_saving_pct"])  # CPU: no CUDA peak
    assert num.loc[("llff", "c"), "cuda_baseline_mib"] == pytest.approx(200.0)
    assert num.loc[("llff", "c"), "cuda_saving_pct"] == pytest.approx(25.0)
    assert num.loc[("llff", "c"), "graph_saving_pct"] == pytest.approx(70.0)
    assert num.loc[("all", "mean"), "graph_saving_pct"] == pytest.approx(65.0)
    shown = table.display.set_index(["dataset", "scene"])
    assert shown.loc[("blender", "a"), "CUDA peak saving (%)"] == "—"
    assert shown.loc[("llff", "c"), "CUDA peak saving (%)"] == "25.0"


# -- (d) b/B --------------------------------------------------------------------------------------------
def test_hard_fraction_table_reads_windows_and_skips_empty_ones() -> None:
    t = trace("blender", "a", "hsm", 0, [1.0, 1.0, 2.0, 4.0, 8.0], [1.0] * 5, budget=8.0,
              hard_fraction=[0.5, 1.0, 0.3, 0.2, 0.1], samples_per_step=[100, 0, 100, 100, 100])  # fmt: skip
    runs = runs_from(t)
    table = hard_fraction_table(runs, t, [0.125, 0.25, 0.5, 1.0])
    row = table.numeric.iloc[0]
    # the repeated row at t=1 has an empty window (its 1.0 is not a measurement) and is skipped
    assert row["b_over_B_0.125_mean"] == pytest.approx(0.5)
    assert row["b_over_B_0.25_mean"] == pytest.approx(0.3)
    assert row["b_over_B_0.5_mean"] == pytest.approx(0.2)
    assert row["b_over_B_1_mean"] == pytest.approx(0.1)
    assert row["b_over_B_run_mean"] == pytest.approx(0.4)


# -- writers --------------------------------------------------------------------------------------------
def synthetic_traces() -> pd.DataFrame:
    parts = []
    for dataset, scene in (("blender", "a"), ("llff", "c")):
        for method, gain in (("baseline", 1.0), ("hsm", 1.3)):
            for seed in (0, 1):
                times = [0.5, 1.0, 2.0, 4.0, 8.0, 8.2]
                psnr = [10 + gain * np.log2(1 + t) + 0.2 * seed for t in times]
                parts.append(trace(dataset, scene, method, seed, times, psnr, budget=8.0))
    return pd.concat(parts, ignore_index=True)


def test_writers_produce_every_format(tmp_path: Path) -> None:
    traces = synthetic_traces()
    runs = runs_from(traces)
    tables = build_tables(runs, traces)
    assert tuple(tables) == TABLE_NAMES
    md = to_markdown(tables["quality"])
    assert md.splitlines()[2].startswith("| dataset | scene |")
    tex = to_latex(tables["memory"])
    assert r"\begin{tabular}" in tex and r"saving (\%)" in tex and "±" not in to_latex(tables["quality"])
    runs.to_csv(tmp_path / "runs.csv", index=False)
    traces.to_csv(tmp_path / "traces.csv", index=False)
    paths = write_tables(tmp_path / "runs.csv", tmp_path / "traces.csv", tmp_path / "tables")
    assert {p.name for p in paths} == {f"{n}.{e}" for n in TABLE_NAMES for e in ("md", "tex", "html", "csv")}
    assert all(p.stat().st_size > 0 for p in paths)


def test_figures_are_written(tmp_path: Path) -> None:
    traces = synthetic_traces()
    runs_from(traces).to_csv(tmp_path / "runs.csv", index=False)
    traces.to_csv(tmp_path / "traces.csv", index=False)
    paths = write_figures(tmp_path / "runs.csv", tmp_path / "traces.csv", tmp_path / "figures")
    assert {p.name for p in paths} == {f"{n}.{e}" for n in FIGURE_NAMES for e in ("png", "pdf")}
    for p in paths:
        assert p.stat().st_size > 1000
    with Image.open(tmp_path / "figures" / "psnr_vs_time.png") as im:
        assert im.width > 500 and im.height > 300


def test_render_comparison(tmp_path: Path) -> None:
    rows = []
    for seed in (0, 1):
        for method in ("baseline", "hsm"):
            run_dir = tmp_path / method / f"seed{seed}"
            run_dir.mkdir(parents=True)
            Image.new("RGB", (20, 15), (200, 10, 10)).save(run_dir / "render_test0.png")
            Image.new("RGB", (20, 15), (10, 200, 10)).save(run_dir / "gt_test0.png")
            rows.append({"dataset": "llff", "scene": "c", "method": method, "seed": seed, "psnr": 20.0 + seed,
                         "train_seconds": 8.0, "run_dir": str(run_dir)})  # fmt: skip
    panels = render_rows(pd.DataFrame(rows), "llff")
    assert [heading for heading, _, _ in panels[0]["images"]] == [
        "ground truth", "Instant-NGP (baseline)", "Instant-NGP + HSM",
    ]  # fmt: skip
    assert all("seed0" in str(path) for _, path, _ in panels[0]["images"])  # smallest seed
    paths = render_comparison(panels, tmp_path / "renders")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 0 for p in paths)


# -- aggregation ----------------------------------------------------------------------------------------
def write_run(folder: Path, frame: pd.DataFrame, status: str = "complete") -> Path:
    folder.mkdir(parents=True)
    frame.drop(columns="budget_s").to_csv(folder / "trace.csv", index=False)
    last = frame.iloc[-1]
    summary = {
        "status": status, "dataset": last["dataset"], "scene": last["scene"], "device": "cpu",
        "backend": "torch", "steps": int(last["step"]), "train_seconds": float(last["train_seconds"]),
        "resumed": False, "environment": {"cpu": "test cpu", "torch": "2.13.0", "torch_threads": 2},
        "config": {"method": last["method"], "seed": int(last["seed"]), "budget_s": 8.0,
                   "eval": {"n_evals": 4}, "mining": {"min_fraction": 0.05}},
    }  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_aggregate_two_runs(tmp_path: Path) -> None:
    t_base = trace("blender", "a", "baseline", 0, [1.0, 8.1], [10.0, 20.0], graph_bytes=[5, 7])
    t_hsm = trace("blender", "a", "hsm", 0, [1.0, 8.2], [11.0, 21.0])
    dirs = [write_run(tmp_path / "hsm", t_hsm), write_run(tmp_path / "base", t_base)]
    runs, traces = aggregate_runs(dirs)
    assert runs["method"].tolist() == ["baseline", "hsm"]  # sorted
    base = runs.iloc[0]
    assert base["psnr"] == 20.0 and base["train_seconds"] == 8.1 and base["budget_s"] == 8.0
    assert base["max_graph_bytes"] == 7
    assert base["graph_sample_fraction"] == 1.0
    assert runs.iloc[1]["graph_sample_fraction"] == pytest.approx(0.4)
    assert base["cfg.eval.n_evals"] == 4 and base["cfg.mining.min_fraction"] == 0.05
    assert len(traces) == 4 and (traces["budget_s"] == 8.0).all()
    write_aggregate(dirs, tmp_path / "runs.csv", tmp_path / "traces.csv")
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 2


def test_aggregate_rejects_unfinished_and_duplicate_runs(tmp_path: Path) -> None:
    t = trace("blender", "a", "baseline", 0, [1.0, 8.0], [10.0, 20.0])
    with pytest.raises(RunError, match="not 'complete'"):
        load_run(write_run(tmp_path / "partial", t, status="running"))
    with pytest.raises(RunError, match="missing"):
        load_run(tmp_path / "nowhere")
    with pytest.raises(RunError, match="more than one run"):
        aggregate_runs([write_run(tmp_path / "x", t), write_run(tmp_path / "y", t)])


def test_flatten() -> None:
    assert flatten({"a": 1, "b": {"c": 2, "d": {"e": 3}}}) == {"cfg.a": 1, "cfg.b.c": 2, "cfg.b.d.e": 3}


def finished_workflow(tmp_path: Path) -> tuple[Path, Path]:
    """results/ (runs.csv, traces.csv, tables) and figures/ as the workflow leaves them."""
    traces = synthetic_traces()
    runs = runs_from(traces).assign(device="cpu", gpu=np.nan, cpu="Test CPU", torch_threads=2, torch="2.13.0+cpu")
    keys = ["scene", "method", "seed"]
    runs = runs.merge(traces.groupby(keys, as_index=False)["step"].max().rename(columns={"step": "steps"}), on=keys)
    results = tmp_path / "results"
    results.mkdir()
    runs.to_csv(results / "runs.csv", index=False)
    traces.to_csv(results / "traces.csv", index=False)
    write_tables(results / "runs.csv", results / "traces.csv", results / "tables")
    write_figures(results / "runs.csv", results / "traces.csv", tmp_path / "figures")
    return results, tmp_path / "figures"


def test_readme_section_is_regenerated_between_markers(tmp_path: Path) -> None:
    results, figures = finished_workflow(tmp_path)
    page = tmp_path / "README.md"
    page.write_text(f"# title\n\n{readme.START}\nstale text\n{readme.END}\n\n## after\n")
    for _ in range(2):  # idempotent: a second update replaces the section, never appends
        readme.update_readme(results, figures, page, tmp_path / "docs" / "results")
    text = page.read_text()
    assert text.startswith("# title\n") and text.endswith("## after\n") and "stale text" not in text
    assert text.count(readme.START) == 1 and "### Speed-up of hsm" in text and "8 runs" in text
    assert "Test CPU, 2 torch threads" in text and "](docs/results/mean_psnr_vs_time.png)" in text
    assert (tmp_path / "docs" / "results" / "mean_psnr_vs_time.png").stat().st_size > 1000
    runs = pd.read_csv(results / "runs.csv")
    shows = next(line for line in text.splitlines() if line.startswith("What it shows: "))
    for scene in runs["scene"].unique():
        assert f"{scene}: hsm ends at b/B " in shows, shows


def test_readme_update_refuses_a_page_without_markers(tmp_path: Path) -> None:
    results, figures = finished_workflow(tmp_path)
    page = tmp_path / "README.md"
    page.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        readme.update_readme(results, figures, page, tmp_path / "assets")
    assert page.read_text() == "# no markers\n"
