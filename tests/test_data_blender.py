"""Blender-format loader: procedural scenes, malformed inputs, and the real lego copy when present."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ngp_ohem.data import detect_format, load_blender, load_scene
from ngp_ohem.data.procedural import CAMERA_ANGLE_X, blender_geometry, make_blender_scene, trace
from ngp_ohem.data.scene import Intrinsics
from ngp_ohem.errors import ConfigError, DatasetError


def opened(path: Path) -> Image.Image:
    """A loaded copy of an image, with the file closed again (no ResourceWarning)."""
    with Image.open(path) as im:
        return im.copy()


def project(point: np.ndarray, pose: np.ndarray, intr: Intrinsics) -> tuple[float, float, float]:
    """Pixel (u, v) and depth of a world point in an OpenGL camera (pixel centres at +0.5)."""
    cam = pose[:3, :3].T @ (point - pose[:3, 3])
    depth = -cam[2]
    return intr.cx + intr.fx * cam[0] / depth, intr.cy - intr.fy * cam[1] / depth, depth


def pixel_rays(pose: np.ndarray, intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """One ray per pixel centre, written independently of the procedural renderer."""
    v, u = np.mgrid[0 : intr.height, 0 : intr.width] + 0.5
    d = np.stack([(u - intr.cx) / intr.fx, -(v - intr.cy) / intr.fy, -np.ones_like(u)], -1).reshape(-1, 3)
    d = d @ pose[:3, :3].T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return np.broadcast_to(pose[:3, 3], d.shape), d


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A small scene to break in each malformed-input test."""
    return make_blender_scene(tmp_path / "tiny", seed=3, size=8, n_train=3, n_test=2, n_val=0)


def edit_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def test_procedural_scene_loads(blender_scene_dir: Path) -> None:
    assert detect_format(blender_scene_dir) == "blender"
    scene = load_scene(blender_scene_dir)
    assert (scene.kind, scene.bound, scene.near) == ("blender", 1.5, 0.05)
    assert scene.train.images.shape == (40, 100, 100, 4) and scene.test.images.shape == (10, 100, 100, 4)
    assert scene.train.images.dtype == torch.float32 and scene.train.poses.dtype == torch.float32
    assert scene.train.poses.shape == (40, 4, 4) and scene.train.has_alpha
    assert float(scene.train.images.min()) >= 0.0 and float(scene.train.images.max()) <= 1.0
    focal = 0.5 * 100 / math.tan(0.5 * CAMERA_ANGLE_X)
    assert scene.train.intrinsics == Intrinsics(fx=focal, fy=focal, cx=50.0, cy=50.0, width=100, height=100)
    assert scene.train.names[:2] == ["r_0.png", "r_1.png"] and len(scene.test) == 10


def test_cameras_look_at_the_object(blender_scene_dir: Path) -> None:
    scene = load_scene(blender_scene_dir)
    for split in (scene.train, scene.test):
        for pose in split.poses.double().numpy():
            u, v, depth = project(np.zeros(3), pose, split.intrinsics)
            assert depth == pytest.approx(4.0, abs=1e-4)
            assert u == pytest.approx(50.0, abs=1e-3) and v == pytest.approx(50.0, abs=1e-3)


def test_alpha_matches_independent_ray_cast(blender_scene_dir: Path) -> None:
    """Poses, intrinsics, pixel centres and image orientation agree with the known geometry."""
    scene = load_scene(blender_scene_dir)
    prims = blender_geometry(0)
    for k in (0, 7):
        pose = scene.test.poses[k].double().numpy()
        _, index, _ = trace(prims, *pixel_rays(pose, scene.test.intrinsics))
        hit = (index >= 0).reshape(100, 100)
        alpha = scene.test.images[k, ..., 3].numpy()
        assert hit[alpha == 1.0].mean() > 0.99 and (~hit[alpha == 0.0]).mean() > 0.99
        assert hit[alpha[::-1] == 1.0].mean() < 0.95  # a flipped image would not match
        assert hit[alpha[:, ::-1] == 1.0].mean() < 0.95


def test_downscale_is_premultiplied_area_average(blender_scene_dir: Path) -> None:
    full = load_blender(blender_scene_dir)
    half = load_scene(blender_scene_dir, downscale=2)
    assert half.train.images.shape == (40, 50, 50, 4)
    assert half.train.intrinsics.fx == pytest.approx(full.train.intrinsics.fx / 2)
    assert (half.train.intrinsics.cx, half.train.intrinsics.width) == (25.0, 50)
    img = full.test.images[3].double()
    pm = torch.cat([img[..., :3] * img[..., 3:], img[..., 3:]], -1).reshape(50, 2, 50, 2, 4).mean((1, 3))
    ref_alpha = pm[..., 3]
    got = half.test.images[3].double()
    assert torch.allclose(got[..., 3], ref_alpha, atol=1e-6)
    assert torch.allclose(got[..., :3] * got[..., 3:], pm[..., :3], atol=1e-6)
    assert (got[..., :3][ref_alpha == 0] == 0).all()
    with pytest.raises(DatasetError, match="not divisible by downscale 3"):
        load_scene(blender_scene_dir, downscale=3)
    with pytest.raises(ConfigError, match="downscale"):
        load_scene(blender_scene_dir, downscale=0)


def test_rgb_png_gets_opaque_alpha(tiny: Path) -> None:
    png = tiny / "train" / "r_1.png"
    opened(png).convert("RGB").save(png)
    scene = load_scene(tiny)
    assert (scene.train.images[1, ..., 3] == 1.0).all()


def test_val_split_is_ignored(tiny: Path) -> None:
    (tiny / "transforms_val.json").write_text("not json")
    assert len(load_scene(tiny).train) == 3


def test_device_argument(tiny: Path) -> None:
    # The meta device (shapes, no data) is not the default: a loader that ignores the argument fails here.
    scene = load_scene(tiny, device=torch.device("meta"))
    assert scene.train.images.device.type == "meta" and scene.test.poses.device.type == "meta"


def test_missing_folder_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_scene(tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"transforms_train\.json.*poses_bounds\.npy"):
        load_scene(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        detect_format(tmp_path / "file")


def test_missing_test_json(tiny: Path) -> None:
    (tiny / "transforms_test.json").unlink()
    with pytest.raises(DatasetError, match=r"missing .*transforms_test\.json"):
        load_scene(tiny)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["frames"][1].update(transform_matrix=[[1, 0, 0, 0]] * 3), r"frame 1: .*must be 4x4"),
        (lambda m: m["frames"][0]["transform_matrix"][0].__setitem__(3, float("nan")), "NaN or inf"),
        (lambda m: m["frames"][0]["transform_matrix"][1].__setitem__(0, float("inf")), "NaN or inf"),
        (lambda m: m["frames"][2].update(transform_matrix="eye"), "not a numeric 4x4"),
        (lambda m: m["frames"][2].pop("transform_matrix"), "no 'transform_matrix'"),
        (lambda m: m["frames"][0].pop("file_path"), "no 'file_path'"),
        (lambda m: m.update(frames=[]), r"empty split \(no frames\)"),
        (lambda m: m.pop("frames"), "'frames' missing"),
        (lambda m: m.pop("camera_angle_x"), "'camera_angle_x' missing"),
        (lambda m: m.update(camera_angle_x=-1.0), r"must be in \(0, pi\)"),
    ],
)
def test_malformed_train_json(tiny: Path, edit, message: str) -> None:
    edit_json(tiny / "transforms_train.json", edit)
    with pytest.raises(DatasetError, match=message) as err:
        load_scene(tiny)
    assert "transforms_train.json" in str(err.value)


def test_invalid_json_and_wrong_top_level(tiny: Path) -> None:
    (tiny / "transforms_test.json").write_text("{ not json")
    with pytest.raises(DatasetError, match=r"transforms_test\.json: not valid JSON"):
        load_scene(tiny)
    (tiny / "transforms_test.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match=r"transforms_test\.json: expected a JSON object"):
        load_scene(tiny)


def test_empty_test_split(tiny: Path) -> None:
    edit_json(tiny / "transforms_test.json", lambda m: m.update(frames=[]))
    with pytest.raises(DatasetError, match=r"transforms_test\.json: empty split"):
        load_scene(tiny)


def test_missing_image(tiny: Path) -> None:
    (tiny / "test" / "r_1.png").unlink()
    with pytest.raises(DatasetError, match=r"missing image .*r_1\.png"):
        load_scene(tiny)


def test_truncated_image(tiny: Path) -> None:
    png = tiny / "train" / "r_2.png"
    png.write_bytes(png.read_bytes()[:60])
    with pytest.raises(DatasetError, match=r"unreadable image .*r_2\.png"):
        load_scene(tiny)


def test_not_an_image(tiny: Path) -> None:
    (tiny / "train" / "r_0.png").write_bytes(b"this is not a png at all")
    with pytest.raises(DatasetError, match=r"unreadable image .*r_0\.png"):
        load_scene(tiny)


def test_images_of_different_sizes(tiny: Path) -> None:
    png = tiny / "train" / "r_2.png"
    opened(png).resize((10, 8)).save(png)
    with pytest.raises(DatasetError, match=r"r_2\.png is 10x8 but r_0\.png .* is 8x8"):
        load_scene(tiny)


def test_file_path_with_extension(tiny: Path) -> None:
    edit_json(tiny / "transforms_train.json", lambda m: m["frames"][0].update(file_path="./train/r_0.png"))
    assert len(load_scene(tiny).train) == 3


@pytest.mark.realdata
def test_real_lego(real_scene) -> None:
    lego = real_scene("nerf_synthetic/lego")
    scene = load_scene(lego)
    assert scene.name == "lego" and scene.kind == "blender"
    assert scene.train.images.shape == (100, 200, 200, 4) and scene.test.images.shape == (200, 200, 200, 4)
    meta = json.loads((lego / "transforms_train.json").read_text())
    focal = 0.5 * 200 / math.tan(0.5 * meta["camera_angle_x"])
    assert scene.train.intrinsics.fx == pytest.approx(focal) and scene.train.intrinsics.cx == 100.0
    np.testing.assert_allclose(
        scene.train.poses[5].numpy(), np.array(meta["frames"][5]["transform_matrix"]), rtol=0, atol=1e-6
    )
    for pose in scene.test.poses[::20].double().numpy():
        u, v, depth = project(np.zeros(3), pose, scene.test.intrinsics)
        assert depth > 3.0 and 80 < u < 120 and 80 < v < 120
    assert float(scene.train.images[:, 0, 0, 3].max()) == 0.0  # corners are background
