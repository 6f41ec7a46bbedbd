"""The command line: user errors end in one line on stderr and exit status 2; every --help works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ngp_ohem.cli import main

SUBCOMMANDS = ("train", "eval", "make-scene", "download")


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ngp-ohem: error: ")
    assert "Traceback" not in err
    return lines[0]


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--device", "cpu", "--quiet", *extra]


def test_missing_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no_such_scene"
    assert main(train_args(missing, tmp_path / "run")) == 2
    captured = capsys.readouterr()
    line = one_line_error(captured.err)
    assert str(missing) in line and "does not exist" in line
    assert captured.out == ""


def test_data_folder_that_is_not_a_scene(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(train_args(tmp_path / "empty", tmp_path / "run")) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "transforms_train.json" in line and "poses_bounds.npy" in line


def test_unknown_method(blender_scene_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(train_args(blender_scene_dir, tmp_path / "run", "--method", "dropout")) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "'method'" in line and "dropout" in line
    assert not (tmp_path / "run" / "summary.json").exists()


def test_negative_budget(blender_scene_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(train_args(blender_scene_dir, tmp_path / "run", "--budget", "-5")) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "'budget_s'" in line


def test_bad_set_override(blender_scene_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(train_args(blender_scene_dir, tmp_path / "run", "--set", "render.no_such_key=3")) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "render" in line and "no_such_key" in line
    assert main(train_args(blender_scene_dir, tmp_path / "run", "--set", "render.max_steps")) == 2
    assert "key=value" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("how", "key", "suggestion"),
    [
        (("--set", "render.target_sampels=1024"), "render.target_sampels", "render.target_samples"),
        (("--set", "budget_sec=30"), "budget_sec", "budget_s"),
        (("--config", "render:\n  grid_resolutoin: 32\n"), "render.grid_resolutoin", "render.grid_resolution"),
        (("--config", "chekpoint_every_s: 5\n"), "chekpoint_every_s", "checkpoint_every_s"),
    ],
)
def test_a_typo_in_a_key_is_one_line_naming_it(
    how: tuple[str, str], key: str, suggestion: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flag, value = how
    if flag == "--config":
        (tmp_path / "typo.yaml").write_text(value)
        value = str(tmp_path / "typo.yaml")
    # Rejected before the data folder is looked at (it does not exist) and before the run folder is made.
    assert main(train_args(tmp_path / "scene", tmp_path / "run", "--preset", "cpu", flag, value)) == 2
    line = one_line_error(capsys.readouterr().err)
    assert f"unknown config key '{key}' (did you mean '{suggestion}'?)" in line
    assert not (tmp_path / "run").exists()


def test_unreadable_config_file(blender_scene_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(train_args(blender_scene_dir, tmp_path / "run", "--config", str(tmp_path / "nope.yaml"))) == 2
    assert "nope.yaml" in one_line_error(capsys.readouterr().err)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    assert main(train_args(blender_scene_dir, tmp_path / "run", "--config", str(listed))) == 2
    assert "mapping" in one_line_error(capsys.readouterr().err)


def test_errors_in_a_real_process_print_no_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_scene"
    proc = subprocess.run(
        [sys.executable, "-m", "ngp_ohem.cli", *train_args(missing, tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    line = one_line_error(proc.stderr)
    assert str(missing) in line
    assert proc.stdout == ""


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ngp-ohem" + ("" if command is None else f" {command}"))
    if command is None:
        assert all(name in out for name in SUBCOMMANDS) and "examples:" in out
    if command == "train":
        for flag in ("--data", "--method", "--budget", "--out", "--set", "--preset", "--force"):
            assert flag in out


def test_missing_required_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--out", "x"])
    assert info.value.code == 2
    assert "--data" in capsys.readouterr().err


def test_make_scene_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["make-scene", "--kind", "blender", "--out", str(tmp_path / "s"), "--size", "8"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "s")
    assert (tmp_path / "s" / "transforms_train.json").is_file()
    assert main(["make-scene", "--kind", "blender", "--out", str(tmp_path / "t"), "--size", "1"]) == 2
    assert "size" in one_line_error(capsys.readouterr().err)
