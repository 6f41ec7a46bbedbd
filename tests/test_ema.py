"""The weight average that evaluation uses: torch_ema's recursion and warm-up, swapped in and out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ngp_ohem.config import build_config
from ngp_ohem.data import load_scene
from ngp_ohem.ema import WeightAverage
from ngp_ohem.run.trainer import Trainer

TINY = {
    "device": "cpu", "backend": "torch", "threads": 1, "precision": "fp32",
    "field": {"log2_table_size": 12},
    "render": {"target_samples": 2048, "grid_resolution": 16, "max_steps": 256},
    "eval": {"subset_views": 1, "final_views": 1, "n_evals": 2, "ema_decay": 0.95, "ema_every": 2},
}  # fmt: skip


def test_average_follows_torch_emas_recursion_with_warm_up() -> None:
    """An independent float64 reading of torch_ema: s_n = d_n s_{n-1} + (1 - d_n) p_n,
    d_n = min(decay, (1 + n) / (10 + n)), s_0 = the initial weights."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5))
    average = WeightAverage([p], decay=0.95, every=1)
    expected = p.detach().double().numpy().copy()
    for n in range(1, 400):
        with torch.no_grad():
            p.add_(torch.randn(5) * 0.1)
        average.update()
        d = min(0.95, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * p.detach().double().numpy()
        if n in (1, 2, 170, 399):
            np.testing.assert_allclose(average.shadow[0].double().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert average.current_decay() == 0.95  # warm-up over: (1 + 400) / 410 > 0.95


def test_first_update_keeps_mostly_the_latest_weights() -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    average = WeightAverage([p], decay=0.95, every=1)
    with torch.no_grad():
        p.fill_(1.0)
    average.update()
    assert torch.allclose(average.shadow[0], torch.full((3,), 9 / 11))  # d_1 = 2 / 11


def test_applied_swaps_the_average_in_and_restores_even_on_error() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    average = WeightAverage([p], decay=0.5, every=1)
    with torch.no_grad():
        p.fill_(4.0)
    with average.applied():
        assert torch.equal(p.detach(), torch.zeros(2))  # not updated yet: the initial weights
    assert torch.equal(p.detach(), torch.full((2,), 4.0))
    with pytest.raises(RuntimeError), average.applied():
        raise RuntimeError("evaluation failed")
    assert torch.equal(p.detach(), torch.full((2,), 4.0))


def test_updates_once_per_interval() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    average = WeightAverage([p], decay=0.95, every=3)
    for step in range(1, 10):
        average.after_step(step)
    assert average.updates == 3


@pytest.mark.parametrize(("decay", "every"), [(1.0, 1), (0.0, 1), (0.9, 0)])
def test_bad_settings_are_rejected(decay: float, every: int) -> None:
    with pytest.raises(ValueError, match="EMA"):
        WeightAverage([torch.nn.Parameter(torch.zeros(1))], decay, every)


def test_state_must_match_the_network() -> None:
    average = WeightAverage([torch.nn.Parameter(torch.zeros(2))], 0.9, 1)
    with pytest.raises(ValueError, match="does not match"):
        average.load_state_dict({"updates": 1, "shadow": [torch.zeros(3)]})


def test_trainer_evaluates_the_average_and_checkpoints_it(blender_scene_dir: Path, tmp_path: Path) -> None:
    """Evaluation renders the averaged weights, training continues on the raw ones, and a resumed
    run carries the same average (config 'epoch' = one pass over the training images)."""
    cfg = build_config("cpu", TINY, {"step_limit": 6})
    scene = load_scene(blender_scene_dir)
    trainer = Trainer(cfg, scene, tmp_path / "run", progress=False)
    summary = trainer.run()
    assert summary["weight_average"] == {"decay": 0.95, "every_steps": 2, "updates": 3}
    raw = [p.detach().clone() for p in trainer.model.field.parameters()]
    with trainer.model.average.applied():
        averaged = [p.detach().clone() for p in trainer.model.field.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(raw, averaged, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(raw, trainer.model.field.parameters(), strict=True))
    # The final PSNR is the averaged weights' (evaluated again with them, it matches; raw ones differ).
    with trainer.model.average.applied():
        again = trainer.evaluate(final=True)[0]
    assert again == pytest.approx(summary["final"]["psnr"], abs=1e-3)
    resumed = Trainer(cfg, scene, tmp_path / "run", progress=False)
    resumed.run()  # complete: restores the checkpoint without training
    assert resumed.model.average.updates == 3
    shadows = zip(resumed.model.average.shadow, trainer.model.average.shadow, strict=True)
    assert all(torch.equal(a, b) for a, b in shadows)
    epoch = Trainer(build_config("cpu", TINY, {"eval": {"ema_every": "epoch"}}), scene, tmp_path / "e", progress=False)
    assert epoch.model.average.every == len(scene.train)
    assert Trainer(build_config("cpu", TINY, {"eval": {"ema_decay": 0.0}}), scene, tmp_path / "n").model.average is None
