"""Mixed precision (the authors' -O): autocast around network calls, fp32 outputs, a loss scaler for fp16.

The CUDA path (fp16 + GradScaler) is exercised here on the CPU, where autocast supports fp16 too:
the same code runs, only the device differs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ngp_ohem.config import build_config
from ngp_ohem.data import load_scene
from ngp_ohem.field.hashgrid import HashGridSpec
from ngp_ohem.field.ngp import FieldSpec, NGPField
from ngp_ohem.precision import AutocastField, Precision, cpu_bf16_is_native, network
from ngp_ohem.run.trainer import Trainer

CPU = torch.device("cpu")
TINY = {
    "device": "cpu", "backend": "torch", "threads": 1,
    "field": {"log2_table_size": 12},
    "render": {"target_samples": 2048, "grid_resolution": 16, "max_steps": 256},
    "eval": {"subset_views": 1, "final_views": 1, "n_evals": 2},
}  # fmt: skip


def small_field() -> NGPField:
    torch.manual_seed(0)
    field = NGPField(FieldSpec(HashGridSpec(n_levels=4, log2_table_size=12, max_resolution=64)), bound=1.0)
    with torch.no_grad():
        field.encoding.table.uniform_(-1.0, 1.0)  # features of trained magnitude, not 1e-4 noise
    return field


def test_fp32_leaves_the_field_untouched() -> None:
    field = small_field()
    precision = Precision("fp32", CPU)
    assert network(field, precision) is field and precision.scaler is None
    assert precision.scale(t := torch.ones(2)) is t


def test_mixed_on_cpu_is_bf16_without_a_scaler_and_cuda_would_be_fp16_with_one() -> None:
    native = Precision("mixed", CPU, native_bf16=True)
    assert native.label == "bfloat16" and native.scaler is None and native.note is None
    fp16 = Precision("mixed", CPU, dtype=torch.float16)  # what a CUDA device gets
    assert fp16.label == "float16" and fp16.scaler is not None
    with pytest.raises(ValueError, match="precision"):
        Precision("half", CPU)


@pytest.mark.parametrize(("dtype", "bound"), [(torch.bfloat16, 0.08), (torch.float16, 0.01)])
def test_autocast_outputs_are_fp32_and_close_to_fp32(dtype: torch.dtype, bound: float) -> None:
    """The error bound the reduced-precision pass is allowed: raw outputs within ``bound`` of fp32
    (bf16 keeps 8 mantissa bits, fp16 11), relative to the outputs' spread."""
    field = small_field()
    x = torch.rand(4096, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(4096, 3), dim=-1)
    with torch.no_grad():
        exact = field(x, d)
        mixed = AutocastField(field, Precision("mixed", CPU, dtype))(x, d)
        density = AutocastField(field, Precision("mixed", CPU, dtype)).density_raw(x)
    assert mixed.dtype == torch.float32 and density.dtype == torch.float32
    spread = exact.std(0)
    assert float(((mixed - exact).abs().max(0).values / spread).max()) < bound
    assert float((mixed - exact).abs().max()) > 0  # autocast really ran in reduced precision
    assert torch.allclose(density, mixed[:, 0])


def test_scaler_skips_an_overflowing_step_and_lowers_its_scale() -> None:
    precision = Precision("mixed", CPU, dtype=torch.float16)
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1)
    scale = precision.scaler.get_scale()
    precision.scale(p.sum()).backward()
    p.grad[0] = float("inf")
    precision.step(opt)
    assert torch.equal(p.detach(), torch.ones(3)) and precision.scaler.get_scale() < scale
    opt.zero_grad()
    precision.scale(p.sum()).backward()
    assert torch.allclose(p.grad, torch.full((3,), precision.scaler.get_scale()))  # scaled loss
    precision.step(opt)
    assert not torch.equal(p.detach(), torch.ones(3))


@pytest.mark.parametrize("method", ["baseline", "hsm"])
def test_trainer_steps_in_fp16_with_a_scaler_as_on_cuda(blender_scene_dir: Path, tmp_path: Path, method: str) -> None:
    """Both strategies train through the scaler (the authors' scaler.scale(output).backward(gradient)
    for HSM), and the scaler's state survives a checkpoint."""
    cfg = build_config("paper", TINY, {"method": method, "eval": {"ema_decay": 0.0}})
    trainer = Trainer(cfg, load_scene(blender_scene_dir), tmp_path / "run", progress=False)
    trainer.model.precision = Precision("mixed", CPU, dtype=torch.float16)
    trainer.model.network = network(trainer.model.field, trainer.model.precision)
    before = [p.detach().clone() for p in trainer.model.field.parameters()]
    for _ in range(4):
        trainer.train_step()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.field.parameters(), strict=True))
    assert trainer.model.precision.state_dict()["scale"] > 0
    assert trainer.trace.window.loss > 0


def test_mixed_on_a_cpu_without_native_bf16_runs_fp32_and_says_why() -> None:
    """Emulated bf16 costs a multiple of fp32 per step: mixed must not slow such a CPU down."""
    emulated = Precision("mixed", CPU, native_bf16=False)
    assert emulated.dtype is None and emulated.label == "fp32" and emulated.scaler is None
    assert "no native bf16" in emulated.note and Precision("fp32", CPU, native_bf16=False).note is None
    assert Precision("mixed", CPU).label == ("bfloat16" if cpu_bf16_is_native() else "fp32")


def test_paper_preset_runs_mixed_and_says_so(blender_scene_dir: Path, tmp_path: Path) -> None:
    cfg = build_config("paper", TINY, {"method": "hsm", "step_limit": 3})
    summary = Trainer(cfg, load_scene(blender_scene_dir), tmp_path / "run", progress=False).run()
    assert summary["precision"] == Precision("mixed", CPU).label and summary["preset"] == "paper"
    assert (summary["precision_note"] is None) == cpu_bf16_is_native()
    assert build_config("cpu").precision == "mixed"  # measured: bf16 costs nothing per step (recipe.py)
