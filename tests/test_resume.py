"""Preemption-safe runs: kill -9 and SIGTERM mid-run, corrupt checkpoints, finished runs, divergence.

The signal tests run ``python -m ngp_ohem.cli train`` as real subprocesses on a 32-px procedural
scene with the tiny config of tests/test_train.py, checkpointing every 0.5 training seconds; the
others call ``ngp_ohem.cli.main`` in-process. A complete run is checked the same way everywhere: its
training time is the budget to within a step (time lost after the last checkpoint is not counted),
its trace rows are strictly increasing in step and training time, every scheduled evaluation time
is covered by exactly one row, and the last row is the final evaluation.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ngp_ohem import cli
from ngp_ohem.clock import geometric_schedule
from ngp_ohem.config import build_config
from ngp_ohem.data import load_scene
from ngp_ohem.data.procedural import make_blender_scene
from ngp_ohem.run import trainer as trainer_module
from ngp_ohem.run.trainer import Trainer

BUDGET = 3.0
N_EVALS = 4
FIRST_FRACTION = 0.125  # evaluations at 0.375, 0.75, 1.5 s and the final one at 3 s
CHECKPOINT_EVERY = 0.5
SUBSET_VIEWS, FINAL_VIEWS = 1, 2
# "Within one step" of the budget: a tiny step takes ~10 ms; allow for a step slowed down by a busy machine.
ONE_STEP = 0.3

TINY_CLI = [
    "--preset", "cpu", "--device", "cpu", "--backend", "torch", "--threads", "1", "--quiet",
    "--set", "field.log2_table_size=12", "--set", "render.target_samples=2048",
    "--set", "render.grid_resolution=16", "--set", "render.max_steps=256",
    "--set", f"eval.subset_views={SUBSET_VIEWS}", "--set", f"eval.final_views={FINAL_VIEWS}",
    "--set", f"eval.n_evals={N_EVALS}", "--set", f"eval.first_fraction={FIRST_FRACTION}",
    "--set", f"checkpoint_every_s={CHECKPOINT_EVERY}",
]  # fmt: skip


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_blender_scene(tmp_path_factory.mktemp("scene") / "blob", seed=0, size=32, n_train=8, n_test=3, n_val=0)


def train_args(scene: Path, out: Path, budget: float = BUDGET, *extra: str) -> list[str]:
    return ["train", "--data", str(scene), "--out", str(out), "--budget", str(budget), *TINY_CLI, *extra]


def start_training(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with log.open("wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "ngp_ohem.cli", *args], stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, env=env
        )


def wait_for_checkpoint(proc: subprocess.Popen, out: Path, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not (out / "checkpoint.pt").exists():
        assert proc.poll() is None, f"training exited ({proc.returncode}) before a checkpoint:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no checkpoint after {timeout} s:\n{log.read_text()}"
        time.sleep(0.05)


def finish_training(args: list[str], log: Path, timeout: float = 120.0) -> subprocess.CompletedProcess:
    proc = start_training(args, log)
    try:
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()
    return subprocess.CompletedProcess(proc.args, proc.returncode)


def read_trace(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def load_checkpoint(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)


def assert_complete_run(out: Path, budget: float, resumed: bool, n_evals: int = N_EVALS) -> list[dict[str, str]]:
    """Summary and trace of a finished run: budget within a step, no gaps or duplicates in the trace."""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["resumed"] is resumed
    overshoot = summary["train_seconds"] - budget
    assert 0 <= overshoot < ONE_STEP, f"trained {summary['train_seconds']:.3f} s for a {budget} s budget"

    rows = read_trace(out / "trace.csv")
    steps = [int(r["step"]) for r in rows]
    seconds = [float(r["train_seconds"]) for r in rows]
    samples = [int(r["samples_total"]) for r in rows]
    assert all(a < b for a, b in itertools.pairwise(steps)), f"steps not strictly increasing: {steps}"
    assert all(a < b for a, b in itertools.pairwise(seconds)), f"train_seconds not increasing: {seconds}"
    assert all(a < b for a, b in itertools.pairwise(samples)), f"samples not increasing: {samples}"
    assert [int(r["eval_views"]) for r in rows] == [SUBSET_VIEWS] * (len(rows) - 1) + [FINAL_VIEWS]
    assert steps[-1] == summary["steps"] and seconds[-1] == pytest.approx(summary["train_seconds"], abs=1e-4)

    # Each scheduled intermediate time is covered by exactly one row: the first row at or after it
    # (the trainer evaluates at the first step end at or past a scheduled time). Every row covers at
    # least one time; one row may cover several when a long step crossed them.
    scheduled = geometric_schedule(budget, n_evals, FIRST_FRACTION)[:-1]
    intermediate = seconds[:-1]
    half_ulp = 5e-5  # the trace rounds train_seconds to 4 decimals: a row at t may read t - 5e-5
    covering_row = {}
    for t in scheduled:
        at_or_after = [i for i, s in enumerate(intermediate) if s >= t - half_ulp]
        assert at_or_after, f"no trace row at or after the scheduled time {t:.4f} s: {seconds}"
        covering_row[t] = at_or_after[0]
    uncovered = sorted(set(range(len(intermediate))) - set(covering_row.values()))
    assert not uncovered, f"rows {uncovered} of {seconds} cover no scheduled time {scheduled}"
    assert not list(out.glob(".*.tmp")), "a temp file was left behind"
    return rows


# -- kill -9 and SIGTERM ------------------------------------------------------------------------------
def test_kill_9_then_restart_completes_the_run_once(
    scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, log = tmp_path / "run", tmp_path / "train.log"
    args = train_args(scene, out)
    proc = start_training(args, log)
    try:
        wait_for_checkpoint(proc, out, log)
        time.sleep(random.Random(7).uniform(0.1, 1.2))  # a seeded random point after the first checkpoint
        assert proc.poll() is None, f"the run finished before it could be killed:\n{log.read_text()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    saved = load_checkpoint(out)
    assert 0 < saved["clock_seconds"] < BUDGET

    finish_training(args, tmp_path / "resume.log")
    rows = assert_complete_run(out, BUDGET, resumed=True)
    # The rows of the checkpoint are kept as they were (the run resumed, it did not start again).
    before = [(str(r["step"]), f"{r['train_seconds']}") for r in saved["rows"]]
    assert [(r["step"], r["train_seconds"]) for r in rows[: len(before)]] == before
    assert int(rows[-1]["step"]) > saved["step"]

    # A finished run is never trained again: the same command is a no-op that leaves every file alone.
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if p.is_file()}

    def must_not_run(self: Trainer) -> None:
        raise AssertionError("a finished run was trained again")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "run", must_not_run)
        capsys.readouterr()
        assert cli.main(args) == 0
    assert "already holds this finished run" in capsys.readouterr().err
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if p.is_file()} == files


def test_sigterm_checkpoints_and_exits_143_then_restart_completes(scene: Path, tmp_path: Path) -> None:
    out, log = tmp_path / "run", tmp_path / "train.log"
    args = train_args(scene, out)
    proc = start_training(args, log)
    try:
        wait_for_checkpoint(proc, out, log)
        time.sleep(random.Random(15).uniform(0.1, 1.0))
        assert proc.poll() is None, f"the run finished before SIGTERM:\n{log.read_text()}"
        # Atomic saves replace the file: after the signal only the SIGTERM save can write it (the loop
        # stops before its next periodic save), so a new file means that save happened.
        periodic = (out / "checkpoint.pt").stat()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 128 + signal.SIGTERM, f"exit status {rc}:\n{log.read_text()}"
    final = (out / "checkpoint.pt").stat()
    assert (final.st_ino, final.st_mtime_ns) != (periodic.st_ino, periodic.st_mtime_ns), "no checkpoint on SIGTERM"
    saved = load_checkpoint(out)
    assert 0 < saved["clock_seconds"] < BUDGET and saved["step"] > 0
    assert not (out / "summary.json").exists()

    finish_training(args, tmp_path / "resume.log")
    assert_complete_run(out, BUDGET, resumed=True)


# -- in-process ----------------------------------------------------------------------------------------
def test_truncated_checkpoint_restarts_cleanly_from_step_0(
    scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = train_args(scene, out, 1.0)
    assert cli.main(args) == 0
    (out / "summary.json").unlink()
    data = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    (out / ".checkpoint.pt.x1y2.tmp").write_bytes(data[:100])  # an atomic write killed mid-way (SIGKILL)

    started_at: list[int] = []
    loop = Trainer._loop

    def spy(self: Trainer) -> None:
        started_at.append(self.step)  # after try_resume
        loop(self)

    with pytest.MonkeyPatch.context() as mp, pytest.warns(UserWarning, match="(?s)ignoring checkpoint.*from step 0"):
        mp.setattr(Trainer, "_loop", spy)
        assert cli.main(args) == 0
    assert started_at == [0]
    assert (out / "checkpoint.pt.corrupt").read_bytes() == data[: len(data) // 2]
    assert_complete_run(out, 1.0, resumed=False)


def test_a_checkpoint_that_fails_half_way_leaves_a_fresh_trainer(scene: Path, tmp_path: Path) -> None:
    """A checkpoint that loads but breaks while restoring (here: the grid) must not leave restored weights."""
    cfg = build_config("cpu", _tiny_config())
    trainer = Trainer(cfg, load_scene(scene), tmp_path / "run", progress=False)
    for _ in range(3):
        trainer.train_step()
    trainer.out.mkdir(parents=True)
    trainer.save_checkpoint()
    state = load_checkpoint(trainer.out)
    state["grid"] = {"density": "not a tensor"}
    torch.save(state, trainer.out / "checkpoint.pt")

    fresh = Trainer(cfg, load_scene(scene), tmp_path / "run", progress=False)
    before = {k: v.clone() for k, v in fresh.model.field.state_dict().items()}
    with pytest.warns(UserWarning, match="ignoring checkpoint"):
        assert fresh.resume() is False
    assert all(torch.equal(before[k], v) for k, v in fresh.model.field.state_dict().items())
    assert fresh.step == 0 and fresh.clock.seconds == 0 and not fresh.optimizer.state
    assert (trainer.out / "checkpoint.pt.corrupt").exists() and not (trainer.out / "checkpoint.pt").exists()


def test_sigterm_during_an_evaluation_redoes_it_after_the_restart(scene: Path, tmp_path: Path) -> None:
    """Preempted inside an intermediate evaluation: the restart records it, so no scheduled time is lost."""
    out = tmp_path / "run"
    budget = 1.5
    args = train_args(scene, out, budget)
    evaluate, record_due = Trainer.evaluate, Trainer.record_due
    calls: list[bool] = []
    clock_at_checks: list[float] = []  # the clock each time the loop looks for a due evaluation

    def spy(self: Trainer) -> None:
        clock_at_checks.append(self.clock.seconds)
        record_due(self)

    def interrupted(self: Trainer, final: bool):
        calls.append(final)
        if len(calls) == 2:  # the second intermediate evaluation
            self.stop.handle(signal.SIGTERM)
        return evaluate(self, final)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "record_due", spy)
        mp.setattr(Trainer, "evaluate", interrupted)
        with pytest.raises(SystemExit) as stop:
            cli.main(args)
        assert stop.value.code == 128 + signal.SIGTERM
        assert len(load_checkpoint(out)["rows"]) == 1
        mp.setattr(Trainer, "evaluate", evaluate)
        assert cli.main(args) == 0
    rows = assert_complete_run(out, budget, resumed=True)
    # Each scheduled time is evaluated at the first check after the step that crossed it - also the
    # one interrupted by SIGTERM, whose clock the checkpoint kept - and not some steps later.
    recorded = [float(r["train_seconds"]) for r in rows]
    for t in geometric_schedule(budget, N_EVALS, FIRST_FRACTION)[:-1]:
        first = min(c for c in clock_at_checks if c >= t)
        assert any(abs(first - r) < 1e-4 for r in recorded), f"{t} s: expected a row at {first:.4f} s, got {recorded}"


def test_a_crash_after_the_final_checkpoint_adds_no_second_final_row(scene: Path, tmp_path: Path) -> None:
    """Killed between the final checkpoint and summary.json: the restart writes the summary only."""
    out = tmp_path / "run"
    args = train_args(scene, out, 1.0)

    def crash(path: Path, data: object) -> None:
        raise OSError("killed before summary.json")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_module, "write_json", crash)
        assert cli.main(args) == 2  # an OSError ends in one line, not a traceback
    assert load_checkpoint(out)["final_recorded"] is True
    assert cli.main(args) == 0
    assert_complete_run(out, 1.0, resumed=True)


def _tiny_config() -> dict:
    return {
        "device": "cpu", "backend": "torch", "threads": 1, "field": {"log2_table_size": 12},
        "render": {"target_samples": 2048, "grid_resolution": 16, "max_steps": 256},
        "eval": {"subset_views": SUBSET_VIEWS, "final_views": FINAL_VIEWS, "n_evals": N_EVALS},
    }  # fmt: skip


# -- divergence ----------------------------------------------------------------------------------------
def test_nan_parameter_stops_with_a_one_line_error_and_keeps_the_trace(
    scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    step = Trainer.train_step
    poisoned: list[tuple[int, str]] = []

    def poison_after_first_evaluation(self: Trainer) -> None:
        step(self)
        if self.trace.rows and not poisoned:
            name, param = next(iter(self.model.field.named_parameters()))
            with torch.no_grad():
                param.view(-1)[:].fill_(float("nan"))
            poisoned.append((self.step, name))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "train_step", poison_after_first_evaluation)
        capsys.readouterr()
        assert cli.main(train_args(scene, out, 2.0)) == 2
    err = capsys.readouterr().err.strip()
    ((at, name),) = poisoned
    assert "\n" not in err and err.startswith("ngp-ohem: error: training diverged"), err
    assert f"at step {at + 1}" in err and "loss is nan" in err and name in err, err
    rows = read_trace(out / "trace.csv")
    assert len(rows) >= 1 and all(r["eval_views"] == str(SUBSET_VIEWS) for r in rows)
    assert all(int(r["step"]) <= at for r in rows)
    assert not (out / "summary.json").exists() and not list(out.glob(".*.tmp"))


def test_huge_learning_rate_stops_with_a_one_line_error(
    scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    capsys.readouterr()
    assert cli.main(train_args(scene, out, 2.0, "--set", "optim.lr=1e30")) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("ngp-ohem: error: training diverged at step"), err
    # Whichever comes first: the loss turns NaN, or a grid update finds no density left.
    assert re.search(r"\(lr [0-9.]+e\+(29|30)\)", err) and ("density collapsed" in err or "loss is nan" in err), err
    assert not (out / "summary.json").exists()
