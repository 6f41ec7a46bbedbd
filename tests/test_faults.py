"""Faults and bad input a long benchmark meets: each ends in one line (or a clean rerun), never a traceback
or a silent wrong result. Runs use the tiny config and 32-px scene of tests/test_resume.py."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from test_cli import one_line_error
from test_resume import TINY_CLI, assert_complete_run, read_trace
from test_resume import scene as scene

from ngp_ohem import cli
from ngp_ohem import io as ngp_io
from ngp_ohem.data.procedural import make_blender_scene


def args_for(scene: Path, out: Path, budget: str = "1.0", *extra: str) -> list[str]:
    return ["train", "--data", str(scene), "--out", str(out), "--budget", budget, *TINY_CLI, *extra]


# -- Ctrl-C in the workflow ----------------------------------------------------------------------------
def test_finished_checkpoint_reemits_every_output(scene: Path, tmp_path: Path) -> None:
    """Snakemake deletes a job's declared outputs on rerun after Ctrl-C, but checkpoint.pt (undeclared)
    survives with the final step: the rerun must write trace, summary and both PNGs again."""
    out = tmp_path / "run"
    assert cli.main(args_for(scene, out)) == 0
    rows_before = read_trace(out / "trace.csv")
    render_before = (out / "render_test0.png").read_bytes()
    for name in ("summary.json", "trace.csv", "render_test0.png", "gt_test0.png"):
        (out / name).unlink()
    assert cli.main(args_for(scene, out)) == 0
    assert read_trace(out / "trace.csv") == rows_before
    assert (out / "render_test0.png").read_bytes() == render_before  # the same weights, the same view
    assert (out / "gt_test0.png").is_file()
    assert_complete_run(out, 1.0, resumed=True)


# -- values the schema alone lets through --------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "culprit"),
    [
        (["--budget", "nan"], "'budget_s': must be a finite number"),
        (["--budget", "inf"], "'budget_s': must be a finite number"),
        (["--set", "optim.lr=.nan"], "'optim.lr': must be a finite number"),
        (["--seed", str(2**64)], "'seed'"),
        (["--set", "mining.max_fraction=0.7", "--set", "mining.min_fraction=0.8"],
         "'mining.min_fraction': 0.8 is above mining.max_fraction 0.7"),
    ],
)  # fmt: skip
def test_bad_numbers_are_rejected_by_name(
    scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], culprit: str
) -> None:
    assert cli.main([*args_for(scene, tmp_path / "run"), *extra]) == 2
    assert culprit in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "run" / "summary.json").exists()


# -- the output folder ---------------------------------------------------------------------------------
def test_min_fraction_may_be_raised_with_max_fraction(scene: Path, tmp_path: Path) -> None:
    """The cross-key check judges the merged config, not each override against the defaults."""
    extra = ["--set", "mining.max_fraction=0.8", "--set", "mining.min_fraction=0.6", "--method", "hsm"]
    assert cli.main([*args_for(scene, tmp_path / "run", "0.3"), *extra]) == 0


def test_a_second_run_on_a_busy_folder_is_refused(scene: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    holder = ngp_io.lock_run_folder(out)  # another live run
    try:
        (out / ".trace.csv.abc.tmp").write_text("a live writer's temp file")
        assert cli.main(args_for(scene, out)) == 2
        line = one_line_error(capsys.readouterr().err)
        assert "in use by another ngp-ohem run" in line and f"pid {os.getpid()}" in line
        assert (out / ".trace.csv.abc.tmp").exists()  # not swept away by a resume
    finally:
        holder.release()
    assert cli.main(args_for(scene, out)) == 0


def test_out_that_is_a_file(scene: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "results.txt"
    target.write_text("x")
    assert cli.main(args_for(scene, target)) == 2
    assert "exists and is not a folder" in one_line_error(capsys.readouterr().err)


def test_unwritable_out_fails_before_loading_data(tmp_path: Path, capsys, monkeypatch) -> None:
    import ngp_ohem.data as data

    monkeypatch.setattr(data, "load_scene", lambda *a, **k: pytest.fail("loaded the data first"))
    assert cli.main(args_for(tmp_path / "no_scene_needed", Path("/proc/ngp-ohem-run"))) == 2  # /proc: read-only
    assert "cannot write into --out /proc/ngp-ohem-run" in one_line_error(capsys.readouterr().err)


def test_disk_full_is_one_line(scene: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ngp_io.os, "fsync", full)
    assert cli.main(args_for(scene, tmp_path / "run")) == 2
    assert "disk full (or quota exceeded) while writing" in one_line_error(capsys.readouterr().err)
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_truncated_summary_is_named_and_the_run_is_rewritten(scene: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert cli.main(args_for(scene, out)) == 0
    text = (out / "summary.json").read_text()
    (out / "summary.json").write_text(text[: len(text) // 2])
    capsys.readouterr()
    assert cli.main(args_for(scene, out)) == 0
    assert f"ignoring unreadable {out / 'summary.json'}" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"


def test_output_files_follow_the_umask(scene: Path, tmp_path: Path, monkeypatch) -> None:
    """mkstemp makes 0600 files; results must be readable like any other file (umask 022: 0644)."""
    monkeypatch.setattr(ngp_io, "UMASK", 0o022)
    out = tmp_path / "run"
    assert cli.main(args_for(scene, out)) == 0
    for name in ("summary.json", "trace.csv", "checkpoint.pt", "render_test0.png"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


# -- scenes that cannot be benchmarked -----------------------------------------------------------------
def test_images_too_small_for_ssim_are_rejected_up_front(tmp_path: Path, capsys, monkeypatch) -> None:
    tiny = make_blender_scene(tmp_path / "tiny", seed=0, size=4, n_train=2, n_test=1, n_val=0)
    from ngp_ohem.run.trainer import Trainer

    monkeypatch.setattr(Trainer, "train_step", lambda self: pytest.fail("trained before rejecting"))
    assert cli.main(args_for(tiny, tmp_path / "run")) == 2
    assert "images are 4x4; SSIM needs at least 11x11 pixels" in one_line_error(capsys.readouterr().err)


def test_blender_without_alpha_warns_and_is_recorded(tmp_path: Path) -> None:
    folder = make_blender_scene(tmp_path / "opaque", seed=0, size=32, n_train=4, n_test=2, n_val=0)
    for png in folder.glob("*/r_*.png"):
        with Image.open(png) as im:
            im.convert("RGB").save(png)
    run = subprocess.run(  # a real process: pytest would record the warning instead of printing it
        [sys.executable, "-m", "ngp_ohem.cli", *args_for(folder, tmp_path / "run", "0.5")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    warning = [line for line in run.stderr.splitlines() if line.startswith("ngp-ohem: warning:")]
    assert len(warning) == 1 and "no training image has transparency" in warning[0], run.stderr
    assert "Traceback" not in run.stderr and "UserWarning" not in run.stderr
    notes = json.loads((tmp_path / "run" / "summary.json").read_text())["data_notes"]
    assert len(notes) == 1 and "random training background" in notes[0]


def test_sigterm_says_what_happened(scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", (
            "import os, signal, sys; from ngp_ohem import cli; from ngp_ohem.run.trainer import Trainer\n"
            "step = Trainer.train_step\n"
            "def once(self):\n    step(self)\n    os.kill(os.getpid(), signal.SIGTERM)\n"
            "Trainer.train_step = once\nsys.exit(cli.main(sys.argv[1:]))"
        ), *args_for(scene, out, "30")],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "stopped by signal 15 at step 1" in err and "rerun the same command to resume" in err
    assert not (out / "summary.json").exists() and (out / "checkpoint.pt").exists()
