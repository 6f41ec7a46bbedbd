"""Per-ray limits from camera depth ranges and the content box (the authors' --enable_cam_near_far)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ngp_ohem import protocol
from ngp_ohem.config import build_config
from ngp_ohem.data import load_scene
from ngp_ohem.data.procedural import make_mipnerf360_scene
from ngp_ohem.render.limits import RayLimits
from ngp_ohem.render.march import march_rays
from ngp_ohem.render.occupancy import OccupancyGrid
from ngp_ohem.run.trainer import Trainer

TINY = {
    "device": "cpu", "backend": "torch", "threads": 1, "eval": {"ema_decay": 0.0, "subset_views": 1, "final_views": 1},
    "field": {"log2_table_size": 12}, "render": {"target_samples": 2048, "grid_resolution": 16, "max_steps": 256},
}  # fmt: skip


def camera_at_origin() -> torch.Tensor:
    return torch.eye(4)[None]  # OpenGL: looks down -z


def test_depths_become_distances_along_each_ray() -> None:
    """A z-depth range [1, 3] is [1, 3] along the axis and [2, 6] on a ray 60 degrees off it."""
    limits = RayLimits.of_split(camera_at_origin(), torch.tensor([[1.0, 3.0]]), None, 0.0, True)
    off = torch.tensor([math.sin(math.pi / 3), 0.0, -math.cos(math.pi / 3)])
    dirs = torch.stack([torch.tensor([0.0, 0.0, -1.0]), off])
    t_near, t_far = limits.for_rays(torch.zeros(2, 3), dirs, torch.zeros(2, dtype=torch.int64))
    torch.testing.assert_close(t_near, torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(t_far, torch.tensor([3.0, 6.0]))
    raised = RayLimits.of_split(camera_at_origin(), torch.tensor([[0.1, 3.0]]), None, 0.2, True)
    one = torch.zeros(1, dtype=torch.int64)
    assert float(raised.for_rays(torch.zeros(1, 3), dirs[:1], one)[0]) == pytest.approx(0.2)


def test_content_box_clips_and_nothing_means_no_limits() -> None:
    box = ([-1.0, -1.0, -2.0], [1.0, 1.0, -0.5])
    limits = RayLimits.of_split(camera_at_origin(), None, box, 0.0, True)
    one = torch.zeros(1, dtype=torch.int64)
    t_near, t_far = limits.for_rays(torch.zeros(1, 3), torch.tensor([[0.0, 0.0, -1.0]]), one)
    assert (float(t_near), float(t_far)) == pytest.approx((0.5, 2.0))
    assert RayLimits.of_split(camera_at_origin(), torch.tensor([[1.0, 3.0]]), None, 0.0, False) is None
    assert protocol.camera_near_far("auto", "mipnerf360") and not protocol.camera_near_far("auto", "llff")


@pytest.mark.parametrize("native", [False, True])
def test_marching_keeps_only_samples_inside_the_limits(native: bool) -> None:
    g = torch.Generator().manual_seed(0)
    origins = torch.zeros(200, 3)
    origins[:, 2] = 3.0
    dirs = torch.nn.functional.normalize(torch.randn(200, 3, generator=g) * 0.2 + torch.tensor([0, 0, -1.0]), dim=-1)
    t_lo, t_hi = torch.rand(200, generator=g) * 2 + 0.5, torch.rand(200, generator=g) * 2 + 3.0
    grid = OccupancyGrid(4.0, 16, 0.01)
    free = march_rays(origins, dirs, grid, 0.05, 256, use_native=native)
    got = march_rays(origins, dirs, grid, 0.05, 256, use_native=native, limits=(t_lo, t_hi))
    t = (got.positions - origins[got.ray_index]).norm(dim=-1)
    assert 0 < got.n_samples < free.n_samples
    assert (t >= t_lo[got.ray_index] - 1e-5).all() and (t < t_hi[got.ray_index] + 1e-5).all()


def test_360_scene_trains_and_renders_within_its_cameras_ranges(tmp_path: Path) -> None:
    folder = make_mipnerf360_scene(tmp_path / "garden_toy", seed=0)
    scene = load_scene(folder)
    lo, hi = (np.array(c) for c in scene.content_box)
    cameras = scene.train.poses[:, :3, 3].numpy()
    assert (lo < cameras.min(0)).all() and (cameras.max(0) < hi).all()  # the content surrounds the ring
    trainer = Trainer(build_config("paper", TINY, {"step_limit": 2}), scene, tmp_path / "run", progress=False)
    assert trainer.model.train_limits is not None and trainer.model.train_limits.near_far is not None
    summary = trainer.run()
    assert summary["steps"] == 2 and math.isfinite(summary["final"]["psnr"])
    llff_like = Trainer(build_config("paper", TINY, {"render": {"camera_near_far": False}}), scene, tmp_path / "x")
    assert llff_like.model.train_limits.near_far is None and llff_like.model.train_limits.box is not None
