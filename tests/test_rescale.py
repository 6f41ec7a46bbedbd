"""The authors' Blender frame (bound 1, world scaled 0.8 / 0.7) and their bound-independent minimum step."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ngp_ohem.config import build_config
from ngp_ohem.data import load_scene
from ngp_ohem.data.rescale import authors_scale, framed_for_run
from ngp_ohem.run.trainer import Trainer

TINY = {
    "device": "cpu", "backend": "torch", "threads": 1,
    "field": {"log2_table_size": 12},
    "render": {"target_samples": 2048, "grid_resolution": 16, "max_steps": 256},
}  # fmt: skip


def test_authors_scales_per_scene() -> None:
    assert [authors_scale(s) for s in ("lego", "ship", "hotdog", "ficus")] == [0.8, 0.7, 0.7, 0.8]


def test_scaling_moves_cameras_and_keeps_what_they_see(blender_scene_dir: Path) -> None:
    """A camera ray that hits world point p in the file's frame hits 0.8 p in the authors' frame: the
    same pixel sees the same surface point, scaled about the origin."""
    scene = load_scene(blender_scene_dir)
    framed = framed_for_run(scene, "auto", "authors")
    assert framed.bound == 1.0 and scene.bound == 1.5  # the loaded scene is not modified
    p0, p1 = scene.train.poses[0], framed.train.poses[0]
    assert torch.allclose(p1[:3, 3], 0.8 * p0[:3, 3]) and torch.equal(p1[:3, :3], p0[:3, :3])
    point = p0[:3, 3] + 2.5 * (-p0[:3, 2])  # 2.5 units along the viewing axis
    assert torch.allclose(p1[:3, 3] + 0.8 * 2.5 * (-p1[:3, 2]), 0.8 * point, atol=1e-6)
    assert framed_for_run(scene, "auto", "file") is scene
    assert framed_for_run(scene, 1.5, "authors").bound == 1.5  # an explicit bound is kept


def test_other_datasets_keep_their_frame(llff_scene_dir: Path) -> None:
    scene = load_scene(llff_scene_dir)
    assert framed_for_run(scene, "auto", "authors") is scene


def test_paper_preset_trains_in_the_authors_frame_with_their_step(blender_scene_dir: Path, tmp_path: Path) -> None:
    scene = load_scene(blender_scene_dir)
    paper = Trainer(build_config("paper", TINY, {"eval": {"ema_decay": 0.0}}), scene, tmp_path / "p", progress=False)
    assert paper.scene.bound == 1.0 and paper.model.grid.bound == 1.0
    assert paper.model.stepping.dt_min == pytest.approx(2 * math.sqrt(3) / 256)
    old = {"frame": {"blender_scale": "file"}, "render": {"min_step": "box"}}  # the files' frame, Instant-NGP's step
    files = Trainer(build_config("cpu", TINY, old), scene, tmp_path / "c", progress=False)
    assert files.scene.bound == 1.5 and files.model.stepping.dt_min == pytest.approx(2 * math.sqrt(3) * 1.5 / 256)
    unit = Trainer(build_config("cpu", TINY, old, {"render": {"min_step": "unit"}}), scene, tmp_path / "u")
    assert unit.model.stepping.dt_min == pytest.approx(2 * math.sqrt(3) / 256)
    paper.train_step()
    assert paper.samples_total > 0


def test_paper_preset_marches_llff_through_three_cascades(llff_scene_dir: Path, tmp_path: Path) -> None:
    scene = load_scene(llff_scene_dir)
    trainer = Trainer(build_config("paper", TINY, {"eval": {"ema_decay": 0.0}}), scene, tmp_path / "p", progress=False)
    grid = trainer.model.grid
    assert scene.bound == 4.0 and grid.cascades == 3 and grid.cascade_bounds == [1.0, 2.0, 4.0]
    for _ in range(2):
        trainer.train_step()
    assert trainer.samples_total > 0
    one = build_config("paper", TINY, {"render": {"grid_cascades": 1}})
    assert Trainer(one, scene, tmp_path / "c", progress=False).model.grid.cascades == 1
