"""The run record end to end: what a toy run writes is what the report reads, and ``ngp-ohem eval``
re-scores a finished run from its checkpoint alone (no optimizer, no ray sampler)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from ngp_ohem import cli, rays
from ngp_ohem.data.procedural import make_blender_scene
from ngp_ohem.names import PAPER_METHODS, TABLE_NAMES, TRACE_COLUMNS
from ngp_ohem.report.aggregate import aggregate_runs
from ngp_ohem.report.tables import build_tables
from ngp_ohem.run.records import Progress, WindowStats, trace_row

TINY_CLI = [
    "--preset", "cpu", "--device", "cpu", "--backend", "torch", "--threads", "1", "--quiet", "--budget", "60",
    "--set", "field.log2_table_size=12", "--set", "render.target_samples=2048",
    "--set", "render.grid_resolution=16", "--set", "render.max_steps=256", "--set", "step_limit=6",
    "--set", "eval.subset_views=1", "--set", "eval.final_views=2", "--set", "eval.n_evals=3",
]  # fmt: skip


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One six-step run per method on a 32 px procedural Blender scene."""
    root = tmp_path_factory.mktemp("records")
    scene = make_blender_scene(root / "blob", seed=0, size=32, n_train=8, n_test=3, n_val=0)
    threads = torch.get_num_threads()
    runs = {}
    for method in PAPER_METHODS:
        out = root / "runs" / method
        assert cli.main(["train", "--data", str(scene), "--out", str(out), "--method", method, *TINY_CLI]) == 0
        runs[method] = out
    torch.set_num_threads(threads)
    return runs


def test_the_trace_header_is_the_vocabulary(toy_runs: dict[str, Path]) -> None:
    for out in toy_runs.values():
        with (out / "trace.csv").open(newline="") as fh:
            assert tuple(next(csv.reader(fh))) == TRACE_COLUMNS


def test_a_trace_row_has_every_column_and_no_other() -> None:
    row = trace_row({"dataset": "blender", "scene": "s", "method": "hsm", "seed": 0, "backend": "torch",
                     "device": "cpu"}, Progress(1, 1.0, 10, 5), (20.0, 0.5, 1), WindowStats(), 1.0, 0.5,
                    {"cpu_utilization": 1.0, "other_cpu_share": 0.0, "steal_share": 0.0})  # fmt: skip
    assert tuple(row) == TRACE_COLUMNS


def test_the_report_reads_what_the_trainer_writes(toy_runs: dict[str, Path]) -> None:
    runs, traces = aggregate_runs(toy_runs.values())
    assert runs["method"].tolist() == list(PAPER_METHODS) and (runs["steps"] == 6).all()
    assert tuple(traces.columns) == (*TRACE_COLUMNS, "budget_s")
    tables = build_tables(runs, traces)
    assert tuple(tables) == TABLE_NAMES


def test_the_report_rejects_a_trace_with_other_columns(toy_runs: dict[str, Path], tmp_path: Path) -> None:
    from ngp_ohem.report.aggregate import RunError, load_run

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text((toy_runs["hsm"] / "summary.json").read_text())
    lines = (toy_runs["hsm"] / "trace.csv").read_text().splitlines()
    (bad / "trace.csv").write_text("\n".join([lines[0].replace("tau_ema", "tau"), *lines[1:]]) + "\n")
    with pytest.raises(RunError, match=r"missing \['tau_ema'\], unknown \['tau'\]"):
        load_run(bad)


def test_eval_rescores_a_finished_run_without_training_parts(
    toy_runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("ngp-ohem eval built a training part")

    monkeypatch.setattr(torch.optim, "Adam", forbidden)
    monkeypatch.setattr(rays.RaySampler, "__init__", forbidden)
    out = toy_runs["hsm"]
    summary = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    assert cli.main(["eval", "--run", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "eval.json").read_text())
    # The same weights and views as the final evaluation of training: the same scores.
    assert printed["views"] == 2 and printed["step"] == summary["steps"] == 6
    assert printed["psnr"] == pytest.approx(summary["final"]["psnr"], abs=1e-4)
    assert printed["ssim"] == pytest.approx(summary["final"]["ssim"], abs=1e-5)
    assert printed["train_seconds"] == pytest.approx(summary["train_seconds"])


def test_eval_of_a_folder_without_a_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eval", "--run", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith("is not a run folder (needs summary.json and checkpoint.pt)")
