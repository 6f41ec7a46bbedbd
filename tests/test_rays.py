"""Pixels to rays, against an independent numpy pinhole camera; the training ray sampler; targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ngp_ohem import protocol
from ngp_ohem.data.scene import Intrinsics, Split
from ngp_ohem.rays import RaySampler, image_rays, pixel_rays

K = Intrinsics(fx=40.0, fy=30.0, cx=10.0, cy=7.0, width=20, height=14)


def random_poses(n: int, seed: int = 0) -> torch.Tensor:
    """Camera-to-world matrices with random rotations and positions."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, 3, 3, generator=g))
    poses = torch.eye(4).repeat(n, 1, 1)
    poses[:, :3, :3] = q * torch.sign(torch.linalg.det(q))[:, None, None]
    poses[:, :3, 3] = torch.randn(n, 3, generator=g)
    return poses


def numpy_ray(pose: np.ndarray, k: Intrinsics, px: int, py: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenGL pinhole: the camera looks along -z with +y up; pixel centres at +0.5; image rows grow down."""
    x = (px + 0.5 - k.cx) / k.fx
    y = (k.cy - (py + 0.5)) / k.fy
    d = pose[:3, :3] @ np.array([x, y, -1.0])
    return pose[:3, 3], d / np.linalg.norm(d)


def test_pixel_rays_match_a_numpy_pinhole_camera() -> None:
    poses = random_poses(6)
    px, py = torch.tensor([0, 19, 5, 10, 3, 7]), torch.tensor([0, 13, 9, 7, 1, 12])
    origins, dirs = pixel_rays(poses, K, px, py)
    for i in range(6):
        o, d = numpy_ray(poses[i].double().numpy(), K, int(px[i]), int(py[i]))
        np.testing.assert_allclose(origins[i].numpy(), o, atol=1e-6)
        np.testing.assert_allclose(dirs[i].numpy(), d, atol=1e-6)


def test_image_rays_are_row_major_over_every_pixel() -> None:
    pose = random_poses(1, seed=3)[0]
    origins, dirs = image_rays(pose, K)
    assert origins.shape == dirs.shape == (K.width * K.height, 3)
    for py, px in ((0, 0), (0, K.width - 1), (K.height - 1, 0), (6, 11)):
        o, d = numpy_ray(pose.double().numpy(), K, px, py)
        np.testing.assert_allclose(dirs[py * K.width + px].numpy(), d, atol=1e-6)
        np.testing.assert_allclose(origins[py * K.width + px].numpy(), o, atol=1e-6)


def test_ray_sampler_returns_the_rays_and_colours_of_the_pixels_it_draws() -> None:
    n, h, w = 3, K.height, K.width
    images = torch.arange(n * h * w * 4, dtype=torch.float32).reshape(n, h, w, 4)  # every pixel distinct
    split = Split(images=images, poses=random_poses(n, seed=1), intrinsics=K, names=["a", "b", "c"])
    sampler = RaySampler(split, torch.device("cpu"), torch.Generator().manual_seed(5))
    origins, dirs, pixels, cams = sampler.sample(500)
    flat = torch.randint(0, n * h * w, (500,), generator=torch.Generator().manual_seed(5))  # the same draw
    img, py, px = flat // (h * w), (flat % (h * w)) // w, flat % w
    assert torch.equal(cams, img) and torch.equal(pixels, images[img, py, px])
    expect_o, expect_d = pixel_rays(split.poses[img], K, px, py)
    assert torch.allclose(origins, expect_o) and torch.allclose(dirs, expect_d)
    assert set(cams.tolist()) == {0, 1, 2} and px.max() == w - 1 and py.max() == h - 1  # all of the range


def test_composite_target_puts_rgba_on_the_background_and_passes_rgb_through() -> None:
    rgba = torch.tensor([[0.2, 0.4, 0.6, 1.0], [0.2, 0.4, 0.6, 0.0], [1.0, 0.0, 0.0, 0.25]])
    background = torch.tensor([[0.0, 0.0, 1.0]] * 3)
    expected = torch.tensor([[0.2, 0.4, 0.6], [0.0, 0.0, 1.0], [0.25, 0.0, 0.75]])
    assert torch.allclose(protocol.composite_target(rgba, background), expected)
    rgb = rgba[:, :3]
    assert protocol.composite_target(rgb, background) is rgb


@pytest.mark.parametrize("side", ["front", "behind"])
def test_mark_unseen_keeps_exactly_the_cells_a_camera_sees(side: str) -> None:
    """One camera at z = +3 looking down -z at the unit box with a narrow field of view: the cells
    near the z axis are seen, those far off it are not; a camera facing away sees none of the box."""
    from ngp_ohem.render.occupancy import OccupancyGrid

    grid = OccupancyGrid(1.0, 8, 0.01, cascades=1)
    pose = torch.eye(4)
    pose[2, 3] = 3.0
    if side == "behind":
        pose[:3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # turned around: looks along +z
    # 10x10 px, focal 50: the frustum half-width is 0.1 per unit depth, 0.2-0.4 across the box.
    grid.mark_unseen(pose[None], 50.0, 50.0, 5.0, 5.0, 10, 10)
    cells = torch.arange(grid.n_cells)
    centres = grid.cell_points(cells, torch.full((grid.n_cells, 3), 0.5))
    radial = centres[:, :2].abs().max(dim=1).values
    if side == "behind":
        assert not grid.visible.any()
    else:
        assert grid.visible[radial < 0.2].all()  # on the axis: inside the frustum at every depth
        assert not grid.visible[radial > 0.7].any()  # far off the axis: outside even padded
    assert torch.equal(grid.occupied, grid.occupied & grid.visible)
