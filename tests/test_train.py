"""The trainer: wall-clock budget, a clock that excludes evaluation, traces, summaries, no retraining.

Most tests share one real 3-second run through ``ngp_ohem.cli.main`` on a small procedural Blender
scene, with ``Trainer.train_step`` timed and ``Trainer.evaluate`` slowed down by one second per call.
Runs use one torch thread: on a loaded 2-core machine OpenMP oversubscription otherwise makes a single
step take seconds instead of tens of milliseconds.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from ngp_ohem import cli, io
from ngp_ohem.clock import TrainingClock, geometric_schedule
from ngp_ohem.config import build_config
from ngp_ohem.data import load_scene
from ngp_ohem.data.procedural import make_blender_scene, make_llff_scene
from ngp_ohem.names import TRACE_COLUMNS
from ngp_ohem.run.trainer import Trainer

# Filled in by hand after measuring (see test_lego_baseline_60s_psnr_floor).
# Measured: lego baseline, preset cpu, 2 threads on the 2-core machine: 23.3 dB at 56 s of training with
# the machine mostly idle (600 s validation run), 18.5 dB at 60 s with another training process sharing
# both cores. The floor sits below the contended value; an untrained model scores about 10 dB.
LEGO_60S_PSNR_FLOOR: float | None = 17.0

BUDGET = 3.0
EVAL_SLEEP = 1.0

DOCUMENTED_COLUMNS = [
    "dataset", "scene", "method", "seed", "backend", "device", "step", "train_seconds",
    "samples_total", "samples_in_graph", "psnr", "ssim", "peak_mem_bytes", "graph_bytes", "rss_bytes",
    "hard_fraction", "samples_per_step", "hard_samples_per_step", "rays_per_step", "tau_ema", "loss",
    "eval_views", "occupancy", "cpu_utilization", "other_cpu_share", "steal_share",
]  # fmt: skip

TINY = {
    "device": "cpu",
    "backend": "torch",
    "threads": 1,
    "field": {"log2_table_size": 12},
    "render": {"target_samples": 2048, "grid_resolution": 16, "max_steps": 256},
    "eval": {"subset_views": 1, "final_views": 2, "n_evals": 3},
}

TINY_CLI = [
    "--preset", "cpu", "--device", "cpu", "--backend", "torch", "--threads", "1", "--quiet",
    "--set", "field.log2_table_size=12", "--set", "render.target_samples=2048",
    "--set", "render.grid_resolution=16", "--set", "render.max_steps=256",
    "--set", "eval.subset_views=1", "--set", "eval.final_views=2", "--set", "eval.n_evals=3",
]  # fmt: skip


@pytest.fixture(scope="module")
def small_blender(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small procedural Blender scene (32 px, 8 train / 3 test views): cheap evaluations."""
    return make_blender_scene(tmp_path_factory.mktemp("scene") / "blob", seed=0, size=32, n_train=8, n_test=3, n_val=0)


def read_trace(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@dataclass
class TimedRun:
    args: list[str]
    out: Path
    rc: int
    wall: float
    step_times: list[float] = field(default_factory=list)
    eval_calls: list[bool] = field(default_factory=list)


@pytest.fixture(scope="module")
def timed_run(small_blender: Path, tmp_path_factory: pytest.TempPathFactory) -> TimedRun:
    out = tmp_path_factory.mktemp("runs") / "blob-baseline-0"
    args = ["train", "--data", str(small_blender), "--out", str(out), "--budget", str(BUDGET), *TINY_CLI]
    run = TimedRun(args, out, rc=-1, wall=0.0)
    train_step, evaluate = Trainer.train_step, Trainer.evaluate

    def timed_step(self: Trainer) -> None:
        start = time.perf_counter()
        train_step(self)
        run.step_times.append(time.perf_counter() - start)

    def slow_evaluate(self: Trainer, final: bool):
        run.eval_calls.append(final)
        time.sleep(EVAL_SLEEP)
        return evaluate(self, final)

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "train_step", timed_step)
        mp.setattr(Trainer, "evaluate", slow_evaluate)
        start = time.perf_counter()
        run.rc = cli.main(args)
        run.wall = time.perf_counter() - start
    torch.set_num_threads(threads)
    return run


def summary_of(run: TimedRun) -> dict:
    return json.loads((run.out / "summary.json").read_text())


# -- the budget and the clock -------------------------------------------------------------------
def test_run_stops_within_one_step_of_its_budget(timed_run: TimedRun) -> None:
    assert timed_run.rc == 0
    summary = summary_of(timed_run)
    steps = timed_run.step_times
    assert summary["steps"] == len(steps) > 3
    train_seconds = summary["train_seconds"]
    assert train_seconds >= BUDGET
    # The loop checks the clock before each step, so it overshoots by less than the last step.
    assert train_seconds - BUDGET < steps[-1] + 0.05
    assert train_seconds - BUDGET < max(steps) + 0.05


def test_clock_counts_steps_and_excludes_evaluation(timed_run: TimedRun) -> None:
    summary = summary_of(timed_run)
    rows = read_trace(timed_run.out / "trace.csv")
    train_seconds = summary["train_seconds"]
    # Every trace row is one evaluation, each slowed by EVAL_SLEEP seconds ...
    assert len(timed_run.eval_calls) == len(rows) >= 2
    assert timed_run.eval_calls[-1] is True and not any(timed_run.eval_calls[:-1])
    # ... which makes the wall time grow ...
    assert timed_run.wall >= train_seconds + len(rows) * EVAL_SLEEP
    # ... but not the training clock: it is the sum of the step times (and within budget + a step).
    assert abs(train_seconds - sum(timed_run.step_times)) < 0.05 + 0.002 * len(timed_run.step_times)
    assert train_seconds <= BUDGET + max(timed_run.step_times) + 0.05


def test_trace_and_summary(timed_run: TimedRun) -> None:
    out = timed_run.out
    with (out / "trace.csv").open(newline="") as fh:
        header = next(csv.reader(fh))
    assert header == DOCUMENTED_COLUMNS == list(TRACE_COLUMNS)
    rows = read_trace(out / "trace.csv")
    for key, kind in (("train_seconds", float), ("step", int), ("samples_total", int)):
        values = [kind(r[key]) for r in rows]
        assert values == sorted(values), f"{key} not monotone: {values}"
    assert all(r["method"] == "baseline" and r["dataset"] == "blender" and r["scene"] == "blob" for r in rows)
    assert all(r["backend"] == "torch" and r["device"] == "cpu" and r["seed"] == "0" for r in rows)
    assert [int(r["eval_views"]) for r in rows] == [1] * (len(rows) - 1) + [2]  # subset, then final views
    assert all(math.isfinite(float(r["psnr"])) and 0 < float(r["ssim"]) <= 1 for r in rows)
    last = rows[-1]
    assert float(last["train_seconds"]) >= BUDGET
    assert int(last["samples_total"]) > 0 and int(last["samples_in_graph"]) == int(last["samples_total"])

    summary = summary_of(timed_run)
    assert summary["status"] == "complete"
    assert summary["steps"] == int(last["step"])
    assert summary["final"]["psnr"] == pytest.approx(float(last["psnr"]))
    assert summary["final"]["samples_total"] == int(last["samples_total"])
    assert float(last["train_seconds"]) == pytest.approx(summary["train_seconds"], abs=1e-4)
    assert summary["config"]["budget_s"] == BUDGET and summary["config"]["render"]["max_steps"] == 256
    assert summary["resumed"] is False
    for name in ("checkpoint.pt", "render_test0.png", "gt_test0.png"):
        assert (out / name).is_file(), name
    assert temp_files(out) == []


def test_second_run_on_a_finished_folder_does_not_retrain(
    timed_run: TimedRun, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = ("summary.json", "trace.csv", "checkpoint.pt")
    before = {n: ((timed_run.out / n).read_bytes(), (timed_run.out / n).stat().st_mtime_ns) for n in files}

    def must_not_run(self: Trainer) -> None:
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(Trainer, "run", must_not_run)
    capsys.readouterr()
    assert cli.main(timed_run.args) == 0
    err = capsys.readouterr().err
    assert "already holds this finished run" in err and str(timed_run.out) in err
    after = {n: ((timed_run.out / n).read_bytes(), (timed_run.out / n).stat().st_mtime_ns) for n in files}
    assert after == before


# -- trace bookkeeping with instant fake steps --------------------------------------------------
def fake_trainer(scene_dir: Path, out: Path, monkeypatch: pytest.MonkeyPatch, step_seconds: float, **cfg) -> Trainer:
    """A Trainer whose steps only sleep (and count 100 samples) and whose evaluation is instant."""

    def fake_step(self: Trainer) -> None:
        time.sleep(step_seconds)
        self.step += 1
        self.samples_total += 100
        self.samples_in_graph += 100
        w = self.trace.window
        w.steps, w.samples, w.hard, w.rays, w.loss = w.steps + 1, w.samples + 100, w.hard + 100, w.rays + 10, 0.5

    monkeypatch.setattr(Trainer, "train_step", fake_step)
    monkeypatch.setattr(Trainer, "evaluate", lambda self, final: (20.0, 0.5, 2 if final else 1))
    config = build_config("cpu", TINY, cfg)
    return Trainer(config, load_scene(scene_dir), out, progress=False)


def test_each_trace_row_is_a_distinct_evaluation(
    small_blender: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Schedule 1/64, 1/16, 1/4, 1 s; the first 0.3 s step passes the first three evaluation times at once.
    trainer = fake_trainer(
        small_blender, tmp_path / "run", monkeypatch, 0.3, budget_s=1.0, eval={"n_evals": 4, "first_fraction": 1 / 64}
    )
    trainer.run()
    rows = read_trace(tmp_path / "run" / "trace.csv")
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(set(steps)), f"several trace rows describe the same training state: steps {steps}"
    assert all(float(r["samples_per_step"]) > 0 and float(r["rays_per_step"]) > 0 for r in rows), rows


def test_interrupted_trace_write_keeps_the_last_complete_trace(
    small_blender: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    trainer = fake_trainer(small_blender, out, monkeypatch, 0.1, budget_s=1.0, eval={"n_evals": 3})
    writes = []
    writerows = io.csv.DictWriter.writerows

    def fail_second_write(self, rows) -> None:
        rows = list(rows)
        writes.append(len(rows))
        if len(writes) == 2:
            self.writerow(rows[0])
            raise OSError("disk full")
        writerows(self, rows)

    monkeypatch.setattr(io.csv.DictWriter, "writerows", fail_second_write)
    with pytest.raises(OSError, match="disk full"):
        trainer.run()
    rows = read_trace(out / "trace.csv")
    assert len(rows) == writes[0] == 1 and list(rows[0]) == DOCUMENTED_COLUMNS
    assert temp_files(out) == []
    assert not (out / "summary.json").exists()


# -- real steps ---------------------------------------------------------------------------------
def test_ray_count_adapts_to_the_rays_that_fit(small_blender: Path, tmp_path: Path) -> None:
    """The marched ray count should settle near target_samples / samples-per-ray.

    With the untrained grid all occupied, one ray has ~150 samples, so ~14 rays fill 2048 samples;
    marching (say) 1000 rays to keep 14 wastes most of the step.
    """
    cfg = build_config("cpu", TINY, {"render": {"min_rays": 1}})
    trainer = Trainer(cfg, load_scene(small_blender), tmp_path / "run", progress=False)
    kept = []
    for _ in range(10):
        before = trainer.trace.window.rays
        trainer.train_step()
        kept.append(trainer.trace.window.rays - before)
    assert trainer.step == 10 and trainer.samples_total > 0
    assert trainer.n_rays <= 4 * max(kept), f"marching {trainer.n_rays:.0f} rays per step to keep {kept[-1]}"


def test_profiled_steps_split_the_whole_step_into_phases(small_blender: Path, tmp_path: Path) -> None:
    cfg = build_config("cpu", TINY, {"method": "hsm", "profile": True, "render": {"grid_update_every": 1}})
    trainer = Trainer(cfg, load_scene(small_blender), tmp_path / "run", progress=False)
    start = time.perf_counter()
    for _ in range(3):
        trainer.train_step()
    elapsed = time.perf_counter() - start
    phases = trainer.trace.window.phases
    expected = {
        "sample_and_march",
        "forward_all",
        "score",
        "select",
        "forward_hard",
        "backward",
        "optimizer",
        "grid_update",
    }
    assert set(phases) == expected and all(v > 0 for v in phases.values())
    # Disjoint spans that cover the step: a phase counted twice or a span left out breaks one bound.
    assert 0.8 * elapsed <= sum(phases.values()) <= elapsed


def test_unprofiled_steps_record_no_phases(small_blender: Path, tmp_path: Path) -> None:
    trainer = Trainer(build_config("cpu", TINY), load_scene(small_blender), tmp_path / "run", progress=False)
    trainer.train_step()
    assert trainer.trace.window.phases == {}


def test_llff_scene_trains_briefly(tmp_path: Path) -> None:
    scene_dir = make_llff_scene(tmp_path / "fwd", seed=0, width=32, height=24, n_images=8)
    cfg = build_config("cpu", TINY, {"budget_s": 2.0, "method": "hsm"})
    summary = Trainer(cfg, load_scene(scene_dir), tmp_path / "run", progress=False).run()
    assert summary["status"] == "complete" and summary["dataset"] == "llff"
    assert summary["steps"] > 0 and summary["train_seconds"] >= 2.0
    assert math.isfinite(summary["final"]["psnr"])
    rows = read_trace(tmp_path / "run" / "trace.csv")
    assert rows[-1]["method"] == "hsm" and int(rows[-1]["samples_in_graph"]) <= int(rows[-1]["samples_total"])


# -- the clock ----------------------------------------------------------------------------------
def test_training_clock_counts_only_running_blocks() -> None:
    clock = TrainingClock(torch.device("cpu"), seconds=1.0)
    with clock.running():
        time.sleep(0.05)
    time.sleep(0.3)  # paused: not counted
    with pytest.raises(RuntimeError), clock.running():
        time.sleep(0.05)
        raise RuntimeError  # a step that fails still counts
    assert 1.1 <= clock.seconds < 1.3


def test_geometric_schedule() -> None:
    assert geometric_schedule(60.0, 1, 0.5) == [60.0]
    times = geometric_schedule(64.0, 4, 1 / 64)
    assert times == pytest.approx([1.0, 4.0, 16.0, 64.0])


# -- real data ----------------------------------------------------------------------------------
@pytest.mark.realdata
def test_lego_baseline_60s_psnr_floor(real_scene, tmp_path: Path) -> None:
    lego = real_scene("nerf_synthetic/lego")
    if LEGO_60S_PSNR_FLOOR is None:
        pytest.skip("floor not measured yet")
    cfg = build_config(
        "cpu", {"method": "baseline", "budget_s": 60.0, "device": "cpu", "eval": {"final_views": 8, "n_evals": 2}}
    )
    summary = Trainer(cfg, load_scene(lego), tmp_path / "lego", progress=False).run()
    assert summary["status"] == "complete"
    assert read_trace(tmp_path / "lego" / "trace.csv")[-1]["eval_views"] == "8"
    if summary["clock_contended"] and summary["final"]["psnr"] < LEGO_60S_PSNR_FLOOR:
        # A floor on quality at equal seconds means nothing when other processes took the seconds.
        pytest.skip(f"clock contended ({summary['clock']['other_cpu_share']:.0%} of the cores taken)")
    assert summary["final"]["psnr"] >= LEGO_60S_PSNR_FLOOR, summary["final"]
