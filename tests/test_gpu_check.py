"""scripts/gpu-check.sh: one line and exit 2 without CUDA; its whole path (two arms, the table) on the CPU."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ngp_ohem.precision import Precision

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
assert spec is not None and spec.loader is not None
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)
MIXED_ON_CPU = Precision("mixed", torch.device("cpu")).label  # bf16 where the CPU has it natively, else fp32


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_stops_at_once_with_one_line() -> None:
    result = subprocess.run(["bash", "scripts/gpu-check.sh"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "Traceback" not in result.stderr


def test_missing_prerequisites_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.missing_modules(("torch", "no_such_module_xyz")) == ["no_such_module_xyz"]
    assert gpu_check.main(["--device", "cpu", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Blender lego scene" in err[0] and str(tmp_path) in err[0]


def test_the_whole_check_runs_on_the_cpu(blender_scene_dir: Path, tmp_path: Path, capsys) -> None:
    """The same commands, summaries and table as on CUDA (paper preset, mixed precision: bf16 here where
    the CPU has native bf16, else fp32)."""
    small = ["field.log2_table_size=12", "render.grid_resolution=16", "render.target_samples=4096", "threads=1",
             "render.max_steps=256", "eval.subset_views=1", "eval.final_views=1"]  # fmt: skip
    args = ["--device", "cpu", "--budget", "1.5", "--data", str(blender_scene_dir), "--out", str(tmp_path)]
    rc = gpu_check.main(args + [x for s in small for x in ("--set", s)])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = [line for line in out.splitlines() if line.startswith("| torch ")]
    assert [r.split("|")[1].strip() for r in rows] == ["torch baseline", "torch hsm"]
    for r in rows:
        cells = [c.strip() for c in r.split("|")[2:-1]]
        assert int(cells[0]) > 0 and float(cells[1]) > 0 and float(cells[2]) > 5 and cells[-1] == MIXED_ON_CPU
    assert "ms / step" in out and "cpu (torch" in out


def test_tcnn_runs_in_its_own_lattice() -> None:
    command = gpu_check.train_command(Path("s"), Path("o"), "hsm", "tcnn", "cuda", 60.0, [])
    assert "field.grid_convention=tcnn" in command and "precision=mixed" in command
    assert "field.grid_convention=tcnn" not in gpu_check.train_command(
        Path("s"), Path("o"), "hsm", "torch", "cuda", 60, []
    )


def test_failed_arm_reports_its_last_line(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('boom: the reason', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(gpu_check.CheckError, match=r"exit 3.*boom: the reason"):
        gpu_check.run_arm(command, tmp_path / "arm")
