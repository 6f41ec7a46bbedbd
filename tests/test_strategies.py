"""The strategy registry and the mechanics of the pixel-level arms (soft mining, error map) and hsm_unbiased."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
import torch

from benchmarks import bench
from ngp_ohem import strategies
from ngp_ohem.cli import build_parser
from ngp_ohem.config import build_config, schema
from ngp_ohem.data import load_scene
from ngp_ohem.errors import ConfigError
from ngp_ohem.field.ngp import activate
from ngp_ohem.mining import FullBatch, HardSampleMining
from ngp_ohem.rays import RaySampler, pixel_rays
from ngp_ohem.render.composite import composite
from ngp_ohem.render.march import PackedSamples
from ngp_ohem.report.tables import quality_table
from ngp_ohem.run.build import build_strategy
from ngp_ohem.run.trainer import Trainer
from ngp_ohem.strategies import ErrorMapSettings, SoftMiningSettings
from ngp_ohem.strategies.error_map import ErrorMap, ErrorMapSampling
from ngp_ohem.strategies.soft_mining import Chains, EdgeSampler, SoftMining, sobel_edges, soft_weights

REPO = Path(__file__).resolve().parents[1]
# chi-square quantiles at p = 0.001
CHI2_P001 = {63: 103.4, 127: 181.99}
TINY = {
    "device": "cpu", "backend": "torch", "threads": 1, "field": {"log2_table_size": 12},
    "render": {"target_samples": 2048, "grid_resolution": 16, "max_steps": 256},
    "eval": {"subset_views": 1, "final_views": 2, "n_evals": 2},
}  # fmt: skip


def chi_square(counts: torch.Tensor, expected: torch.Tensor) -> float:
    return float(((counts - expected) ** 2 / expected).sum())


# -- the registry ---------------------------------------------------------------------------------------------
def test_registry_config_and_report_never_import_torch() -> None:
    code = (
        "import sys, ngp_ohem.strategies, ngp_ohem.config, ngp_ohem.report.tables, ngp_ohem.report.figures; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


class ToyStrategy(FullBatch):
    name = "toy"


@dataclass(frozen=True)
class ToySettings(strategies.Settings):
    SECTION: ClassVar[str] = "toy"
    rate: float = strategies.setting(0.5, {"type": "number", "minimum": 0, "maximum": 1}, "a toy knob")


@pytest.fixture
def toy_arm():
    """A toy arm: one register() call, nothing else (the issue's acceptance test of the registry)."""
    entry = strategies.register(strategies.Entry("toy", f"{__name__}:ToyStrategy", "A toy arm", "#123456", ToySettings))
    yield entry
    strategies.unregister("toy")


def test_a_registered_toy_arm_reaches_the_cli_the_schema_and_the_tables(toy_arm) -> None:
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    method_help = next(a.help for a in train._actions if "--method" in a.option_strings)
    assert "toy" in method_help
    assert "toy" in schema()["properties"]["method"]["enum"]
    assert schema()["properties"]["toy"]["properties"]["rate"]["maximum"] == 1
    with pytest.raises(ConfigError, match=r"'toy\.rate'"):
        build_config("cpu", {"method": "toy", "toy": {"rate": 2}})
    cfg = build_config("cpu", {"method": "toy", "toy": {"rate": 0.25}})
    assert cfg.strategy_settings() == cfg.arms["toy"] == ToySettings(rate=0.25)
    assert isinstance(build_strategy(cfg, torch.Generator()), ToyStrategy)
    rows = []
    for method, psnr in (("baseline", 20.0), ("hsm", 21.0), ("toy", 22.0)):
        rows += [{"dataset": "blender", "scene": "a", "method": method, "seed": 0, "train_seconds": t,
                  "psnr": psnr + t, "ssim": 0.5, "budget_s": 2.0, "step": 10} for t in (1.0, 2.0)]  # fmt: skip
    table = quality_table(pd.DataFrame(rows), [1.0])
    assert "PSNR (dB) toy" in table.display.columns and "ΔPSNR toy − baseline" in table.display.columns
    ranking = table.display[table.display["scene"] == "ranking"].iloc[0]
    assert (ranking["PSNR (dB) toy"], ranking["PSNR (dB) baseline"]) == ("#1", "#3")
    assert strategies.color("toy") == "#123456" and strategies.label("toy") == "A toy arm"


def test_every_arm_builds_from_its_registry_entry() -> None:
    for name in strategies.names():
        strategy = build_strategy(build_config("cpu", {"method": name}), torch.Generator())
        assert isinstance(strategy, strategies.get(name).load())


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"soft_mining": {"alpha": 1.5}}, "soft_mining.alpha"),
        ({"soft_mining": {"drift": -1.0}}, "soft_mining.drift"),
        ({"soft_mining": {"fd_step": 0}}, "soft_mining.fd_step"),
        ({"soft_mining": {"uniform_fraction": 0.6, "reset_fraction": 0.6}}, "soft_mining.uniform_fraction"),
        ({"error_map": {"resolution": 0}}, "error_map.resolution"),
        ({"error_map": {"ema": 0}}, "error_map.ema"),
        ({"error_map": {"cells": 8}}, "error_map.cells"),
        ({"method": "hsm_unbiased", "mining": {"unbiased": False}}, "mining.unbiased"),
        ({"method": "soft_minning"}, "method"),
    ],
)
def test_bad_hyper_parameters_are_rejected_by_name(override: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config("cpu", override)
    message = str(err.value)
    assert f"'{key}'" in message and "\n" not in message


def test_hsm_unbiased_is_hsm_with_the_flag_fixed_and_the_flag_still_works() -> None:
    cfg = build_config("cpu", {"method": "hsm_unbiased"})
    assert cfg.arms["mining"].unbiased is True
    assert build_strategy(cfg, torch.Generator()).unbiased
    flagged = build_strategy(build_config("cpu", {"method": "hsm", "mining": {"unbiased": True}}), torch.Generator())
    assert isinstance(flagged, HardSampleMining) and flagged.unbiased
    assert not build_strategy(build_config("cpu", {"method": "hsm"}), torch.Generator()).unbiased


# -- error map ------------------------------------------------------------------------------------------------
def test_error_map_draws_follow_the_map() -> None:
    settings = ErrorMapSettings(resolution=4)
    emap = ErrorMap(2, 8, 8, settings, torch.device("cpu"))  # 4 x 4 cells of 2 x 2 pixels per image
    emap.values.copy_(torch.rand(2, 16, generator=torch.Generator().manual_seed(3)) + 0.05)
    n = 200_000
    flat, _ = emap.draw(n, torch.Generator().manual_seed(4))
    counts = torch.bincount(flat, minlength=128).double()
    # P(image, pixel) = 1/2 * value(cell) / sum(values of the image) / 4 pixels per cell
    per_cell = emap.probabilities()  # (2, 16)
    cell_of_pixel = (torch.arange(8)[:, None] // 2 * 4 + torch.arange(8)[None, :] // 2).reshape(-1)
    expected = (per_cell[:, cell_of_pixel] / 4).reshape(-1).double() * n
    assert float(per_cell.sum(1)[0]) == pytest.approx(0.5)  # images are uniform, as in the uniform draw
    assert chi_square(counts, expected) < CHI2_P001[127]


def test_error_map_update_is_the_running_mean_of_torch_ngp() -> None:
    emap = ErrorMap(1, 4, 4, ErrorMapSettings(resolution=2, ema=0.9), torch.device("cpu"))
    emap.update(torch.tensor([0, 0, 3]), torch.tensor([0.2, 0.4, 0.5]))
    torch.testing.assert_close(emap.values[0], torch.tensor([0.1 + 0.9 * 0.3, 1.0, 1.0, 0.1 + 0.9 * 0.5]))


# -- soft mining ----------------------------------------------------------------------------------------------
def sobel_reference(image: torch.Tensor) -> torch.Tensor:
    """Sobel magnitude of one (H, W, 3) image written out (their compute_sobel_edge: grey, zero padding)."""
    grey = 0.2989 * image[..., 0] + 0.5870 * image[..., 1] + 0.1140 * image[..., 2]
    g = torch.nn.functional.pad(grey, (1, 1, 1, 1))
    h, w = grey.shape

    def at(dy: int, dx: int) -> torch.Tensor:
        return g[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gx = at(-1, 1) + 2 * at(0, 1) + at(1, 1) - at(-1, -1) - 2 * at(0, -1) - at(1, -1)
    gy = at(1, -1) + 2 * at(1, 0) + at(1, 1) - at(-1, -1) - 2 * at(-1, 0) - at(-1, 1)
    return (gx**2 + gy**2).sqrt()


def test_edge_restarts_follow_the_sobel_magnitude() -> None:
    images = torch.rand(1, 8, 8, 3, generator=torch.Generator().manual_seed(5))
    sampler = EdgeSampler(images)
    n = 100_000
    pos = sampler.draw(torch.zeros(n, dtype=torch.long), torch.Generator().manual_seed(6))
    rows, cols = (pos[:, 0] * 7).round().long(), (pos[:, 1] * 7).round().long()
    counts = torch.bincount(rows * 8 + cols, minlength=64).double()
    edges = sobel_reference(images[0]).reshape(-1).double()
    torch.testing.assert_close(sobel_edges(images)[0].reshape(-1).double(), edges, rtol=1e-5, atol=1e-6)
    assert chi_square(counts, edges / edges.sum() * n) < CHI2_P001[63]


def test_soft_weight_at_alpha_one_is_unbiased_importance_sampling_and_the_check_sees_a_bias() -> None:
    """Their claim: alpha = 1 turns error-proportional draws into an unbiased estimate of the mean loss."""
    g = torch.Generator().manual_seed(8)
    error = torch.rand(50, generator=g) + 0.05
    loss = torch.rand(50, generator=g)
    p = error / error.sum()

    def mean_estimate(exponent: float) -> tuple[float, float]:
        draws = torch.multinomial(p, 200 * 400, replacement=True, generator=g).reshape(400, 200)
        weight = error[draws].pow(-exponent) * error.sum() / error.numel()  # their correction, normalised
        estimates = (loss[draws] * weight).mean(1)
        return float(estimates.mean() - loss.mean()), float(estimates.std() / 400**0.5)

    bias, se = mean_estimate(1.0)
    assert abs(bias) < 4 * se
    bias, se = mean_estimate(0.9)  # a deliberately biased weight
    assert abs(bias) > 4 * se
    # the arm's weights: their correction clamped to [min_weight, mean + std]
    w, c = soft_weights(error, 0.6, 0.2), error.pow(-0.6)
    assert bool((w >= 0.2).all()) and float(w.max()) <= float(c.mean() + c.std()) + 1e-6


def _chains(n: int, settings: SoftMiningSettings) -> Chains:
    images = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(9))
    chains = Chains(EdgeSampler(images), 2, settings)
    chains.resize(n, torch.Generator().manual_seed(10))
    return chains


def test_langevin_step_drifts_up_the_log_loss_and_restarts_what_the_source_restarts() -> None:
    settings = SoftMiningSettings(noise=0.0, uniform_fraction=0.25, reset_fraction=0.0, drift=2.0)
    chains = _chains(8, settings)
    chains.positions[:] = 0.5
    assert chains.images.tolist() == [0, 1, 0, 1, 0, 1, 0, 1]  # equal chains per image, as their const_img_id
    grad = torch.full((8, 2), 0.01)
    grad[1] = torch.tensor([1.0, 0.0])  # leaves the image: restarts from the edge map
    loss = torch.linspace(1.0, 2.0, 8)  # chain 0 has the lowest loss: restarts (their topk(reinit + 1))
    chains.step(grad, loss, torch.Generator().manual_seed(11))
    torch.testing.assert_close(chains.positions[2:6], torch.full((4, 2), 0.52))  # + drift * grad, no noise
    assert bool(((chains.positions >= 0) & (chains.positions <= 1)).all())
    assert not torch.allclose(chains.positions[[0, 1, 6, 7]], torch.full((4, 2), 0.52))  # restarted
    chains.resize(5, torch.Generator())
    assert len(chains) == 5


def test_finite_difference_pixel_gradient_matches_autograd(tmp_path: Path) -> None:
    """Their g is autograd through the pixel position; ours a finite difference at fixed sample distances."""
    scene = load_scene(bench.procedural_scene_dir(tmp_path))
    sampler = RaySampler(scene.train, torch.device("cpu"), torch.Generator().manual_seed(0))
    arm = SoftMining(SoftMiningSettings(fd_step=0.01, reference_rays=1), torch.Generator().manual_seed(1))
    arm.draw_pixels(sampler, 12)
    image, rows, cols = arm._drawn
    w = torch.tensor([[0.9, -0.4, 0.3], [0.2, 0.8, -0.6], [-0.5, 0.1, 0.7], [0.3, 0.3, 0.3]])

    def field(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:  # smooth in position and direction
        return torch.sin(3 * x + d) @ w.T

    per_ray = 16
    t = torch.linspace(2.0, 4.0, per_ray).repeat(12)[:, None]
    ri = torch.arange(12).repeat_interleave(per_ray)
    deltas = torch.full((12 * per_ray,), 2.0 / per_ray)
    target, background = torch.rand(12, 3, generator=torch.Generator().manual_seed(2)), torch.ones(12, 3)
    px, py = cols.float().requires_grad_(True), rows.float().requires_grad_(True)
    o, d = pixel_rays(sampler.poses[image], scene.train.intrinsics, px, py)
    sigma, rgb = activate(field(o[ri] + t * d[ri], d[ri]))
    color = composite(sigma, rgb, deltas, ri, 12, background).color
    loss = ((color - target) ** 2).mean(-1)
    grad_y, grad_x = torch.autograd.grad(loss.log().sum(), (py, px))
    samples = PackedSamples((o[ri] + t * d[ri]).detach(), d[ri].detach(), deltas, ri, 12)
    grad_log, _ = arm.log_loss_gradient(field, samples, target, background)
    reference = torch.stack([grad_y, grad_x], 1)
    torch.testing.assert_close(grad_log, reference, rtol=0.02, atol=0.02 * float(reference.abs().mean()))


# -- checkpoint / resume --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["soft_mining", "error_map"])
def test_pixel_arm_state_survives_checkpoint_and_resume(method: str, tmp_path: Path) -> None:
    scene_dir = bench.procedural_scene_dir(tmp_path)
    cfg = build_config("cpu", TINY, {"method": method, "budget_s": 1e6})

    def trainer() -> Trainer:
        return Trainer(cfg, load_scene(scene_dir), tmp_path / "run", progress=False)

    first = trainer()
    for _ in range(4):
        first.train_step()
    first.save_checkpoint()
    second = trainer()
    assert second.resume()
    saved, restored = first.strategy.state_dict(), second.strategy.state_dict()
    for key, value in saved.items():
        if isinstance(value, dict):
            for k, v in value.items():
                assert torch.equal(v, restored[key][k]), f"{method} {key}.{k} not restored"
        elif isinstance(value, torch.Tensor):
            assert torch.equal(value, restored[key]), f"{method} {key} not restored"
        else:
            assert value == restored[key]
    for t in (first, second):
        for _ in range(3):
            t.train_step()
    for a, b in zip(first.model.field.parameters(), second.model.field.parameters(), strict=True):
        assert torch.equal(a, b), f"{method}: the resumed run drew other pixels"


def test_the_uniform_draw_is_the_default_of_baseline_and_hsm() -> None:
    assert FullBatch.draw_pixels is None and HardSampleMining.draw_pixels is None
    assert callable(ErrorMapSampling(ErrorMapSettings(), torch.Generator()).draw_pixels)
