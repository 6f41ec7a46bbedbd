"""LLFF loader: normalisation into the box, image-folder choice, malformed inputs, the real fern copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ngp_ohem.data import detect_format, load_llff, load_scene
from ngp_ohem.data.llff import BOUND, llff_to_opengl, normalize_poses
from ngp_ohem.data.procedural import llff_cameras, make_llff_scene
from ngp_ohem.errors import DatasetError


def opened(path: Path) -> Image.Image:
    """A loaded copy of an image, with the file closed again (no ResourceWarning)."""
    with Image.open(path) as im:
        return im.copy()


def all_poses(scene) -> np.ndarray:
    """Poses back in file order (test rows are i % 8 == 0)."""
    n = len(scene.train) + len(scene.test)
    out = np.zeros((n, 4, 4))
    test_idx = [i for i in range(n) if i % 8 == 0]
    train_idx = [i for i in range(n) if i % 8 != 0]
    out[test_idx] = scene.test.poses.double().numpy()
    out[train_idx] = scene.train.poses.double().numpy()
    return out


def assert_frustum_in_box(folder: Path) -> None:
    """Points at each camera's near and far bound along its central ray lie inside [-BOUND, BOUND]^3."""
    c2w, bounds = normalize_poses(np.load(folder / "poses_bounds.npy"))
    for pose, (near, far) in zip(c2w, bounds, strict=True):
        for depth in (near, 0.5 * (near + far), far):
            point = pose[:3, 3] - depth * pose[:3, 2]
            assert np.abs(point).max() <= BOUND, (depth, point)


def assert_origin_visible(scene) -> None:
    intr = scene.train.intrinsics
    for pose in all_poses(scene):
        cam = pose[:3, :3].T @ -pose[:3, 3]
        depth = -cam[2]
        u, v = intr.cx + intr.fx * cam[0] / depth, intr.cy - intr.fy * cam[1] / depth
        assert depth > scene.near and 0 <= u <= intr.width and 0 <= v <= intr.height


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return make_llff_scene(tmp_path / "tiny", seed=5, width=16, height=12, n_images=10)


def test_procedural_scene_loads(llff_scene_dir: Path) -> None:
    assert detect_format(llff_scene_dir) == "llff"
    scene = load_scene(llff_scene_dir)
    assert (scene.kind, scene.bound) == ("llff", 4.0)
    assert scene.near == pytest.approx(0.9 / 0.75)
    assert scene.train.images.shape == (14, 75, 100, 3) and scene.test.images.shape == (2, 75, 100, 3)
    assert scene.train.images.dtype == torch.float32 and not scene.train.has_alpha
    assert float(scene.train.images.min()) >= 0.0 and float(scene.train.images.max()) <= 1.0
    assert scene.test.names == ["IMG_0000.png", "IMG_0008.png"]
    assert scene.train.names[:2] == ["IMG_0001.png", "IMG_0002.png"]
    intr = scene.train.intrinsics
    assert (intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height) == (85.0, 85.0, 50.0, 37.5, 100, 75)
    assert scene.test.intrinsics == intr


def test_normalisation(llff_scene_dir: Path) -> None:
    scene = load_scene(llff_scene_dir)
    poses = all_poses(scene)
    assert_origin_visible(scene)
    assert_frustum_in_box(llff_scene_dir)
    # the average camera is the identity, shifted back by mid depth
    z_mean = poses[:, :3, 2].mean(0)
    assert z_mean / np.linalg.norm(z_mean) == pytest.approx([0, 0, 1], abs=1e-6)
    assert poses[:, :3, 1].mean(0)[0] == pytest.approx(0, abs=1e-6)
    assert poses[:, :2, 3].mean(0) == pytest.approx([0, 0], abs=1e-6)
    # cameras on a planar grid: spread in x and y, not in z
    spread = poses[:, :3, 3].std(0)
    assert spread[2] < 0.2 * min(spread[0], spread[1])


def test_normalisation_is_a_similarity_of_the_capture(llff_scene_dir: Path) -> None:
    """Loaded poses = one rotation, scale and shift of the canonical cameras the scene was rendered from."""
    poses = all_poses(load_scene(llff_scene_dir))
    canonical = llff_cameras(0, 16)
    rot = poses[0, :3, :3] @ canonical[0, :3, :3].T
    for pose, cam in zip(poses, canonical, strict=True):
        np.testing.assert_allclose(pose[:3, :3], rot @ cam[:3, :3], atol=1e-5)
    delta, delta_c = poses[1:, :3, 3] - poses[0, :3, 3], canonical[1:, :3, 3] - canonical[0, :3, 3]
    scale = np.linalg.norm(delta, axis=1) / np.linalg.norm(delta_c, axis=1)
    np.testing.assert_allclose(scale, scale[0], rtol=1e-4)
    np.testing.assert_allclose(delta, scale[0] * delta_c @ rot.T, atol=1e-4)


def test_llff_column_convention() -> None:
    """[down, right, back] columns become [right, up, back]: an OpenGL identity camera round-trips."""
    llff = np.array([[[0.0, 1.0, 0.0, 1.0], [-1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0]]])
    np.testing.assert_array_equal(llff_to_opengl(llff)[0], np.hstack([np.eye(3), [[1], [2], [3]]]))


def test_image_folder_choice(tiny: Path) -> None:
    assert load_llff(tiny).train.images.shape[1:] == (12, 16, 3)
    half = load_scene(tiny, downscale=16)  # no images_16/: images_8/ box-averaged by 2
    assert half.train.images.shape[1:] == (6, 8, 3)
    assert half.train.intrinsics.fx == pytest.approx(load_llff(tiny).train.intrinsics.fx / 2)
    full = load_llff(tiny).train.images[0].double()
    torch.testing.assert_close(half.train.images[0].double(), full.reshape(6, 2, 8, 2, 3).mean((1, 3)))
    with pytest.raises(DatasetError, match=r"missing image folder .*images_4 \(found: images_8\)"):
        load_scene(tiny, downscale=4)
    coarse = tiny / "images_16"
    coarse.mkdir()
    for png in sorted((tiny / "images_8").iterdir()):
        opened(png).resize((8, 6), Image.BOX).save(coarse / png.name)
    assert load_scene(tiny).train.images.shape[1:] == (6, 8, 3)  # lowest resolution by default
    assert load_scene(tiny, downscale=8).train.images.shape[1:] == (12, 16, 3)
    shutil.rmtree(coarse)
    fine = tiny / "images"
    fine.mkdir()
    for png in sorted((tiny / "images_8").iterdir()):
        opened(png).resize((32, 24)).save(fine / png.name)
    assert load_scene(tiny).train.images.shape[1:] == (12, 16, 3)  # the full-res photos are never the default
    shutil.rmtree(fine)
    (tiny / "images_8").rename(tiny / "images")
    scene = load_scene(tiny)  # only images/: focal follows the actual width ratio, not the folder name
    assert scene.train.intrinsics.fx == pytest.approx(0.85 * 16)


def test_missing_npy(tiny: Path) -> None:
    (tiny / "poses_bounds.npy").unlink()
    with pytest.raises(DatasetError, match=r"missing .*poses_bounds\.npy"):
        load_llff(tiny)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a[:, :15], r"expected an array of shape \(N, 17\), got \(10, 15\)"),
        (lambda a: a.reshape(-1), r"expected an array of shape \(N, 17\)"),
        (lambda a: a[:0], "no poses"),
        (lambda a: np.where(np.arange(17) == 3, np.nan, a), "NaN or inf"),
        (lambda a: np.where(np.arange(17) == 16, np.inf, a), "NaN or inf"),
        (lambda a: np.where(np.arange(17) == 15, 0.0, a), "0 < near < far"),
        (lambda a: np.where(np.arange(17) == 14, -1.0, a), "hwf"),
        (lambda a: np.where(np.arange(17) == 4, 2 * a, a), "aspect ratios differ"),
    ],
)
def test_malformed_npy(tiny: Path, mutate, message: str) -> None:
    npy = tiny / "poses_bounds.npy"
    np.save(npy, mutate(np.load(npy)))
    with pytest.raises(DatasetError, match=message) as err:
        load_scene(tiny)
    assert "poses_bounds.npy" in str(err.value)


def test_unreadable_npy(tiny: Path) -> None:
    (tiny / "poses_bounds.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DatasetError, match=r"poses_bounds\.npy: unreadable"):
        load_scene(tiny)


def test_missing_image_folder(tiny: Path) -> None:
    shutil.rmtree(tiny / "images_8")
    with pytest.raises(DatasetError, match=r"missing image folder in .*tiny: expected images_<factor>/"):
        load_scene(tiny)


def test_image_count_must_match_pose_rows(tiny: Path) -> None:
    (tiny / "images_8" / "IMG_0004.png").unlink()
    message = r"images_8 holds 9 images but .*poses_bounds\.npy has 10 pose rows"
    with pytest.raises(DatasetError, match=message):
        load_scene(tiny)


def test_truncated_image(tiny: Path) -> None:
    png = tiny / "images_8" / "IMG_0003.png"
    png.write_bytes(png.read_bytes()[:-40])
    with pytest.raises(DatasetError, match=r"unreadable image .*IMG_0003\.png"):
        load_scene(tiny)


def test_images_of_different_sizes(tiny: Path) -> None:
    png = tiny / "images_8" / "IMG_0006.png"
    opened(png).resize((12, 12)).save(png)
    with pytest.raises(DatasetError, match=r"IMG_0006\.png is 12x12 but .*IMG_0000\.png is 16x12"):
        load_scene(tiny)


def test_jpg_and_rgba_files_are_read(tiny: Path) -> None:
    folder = tiny / "images_8"
    opened(folder / "IMG_0001.png").save(folder / "IMG_0001.JPG", quality=95)
    (folder / "IMG_0001.png").unlink()
    opened(folder / "IMG_0002.png").convert("RGBA").save(folder / "IMG_0002.png")
    (folder / "notes.txt").write_text("ignored")
    scene = load_scene(tiny)
    assert scene.train.names[:2] == ["IMG_0001.JPG", "IMG_0002.png"]
    assert scene.train.images.shape == (8, 12, 16, 3)


def test_single_image_has_no_train_split(tmp_path: Path) -> None:
    folder = make_llff_scene(tmp_path / "one", width=8, height=6, n_images=1)
    with pytest.raises(DatasetError, match=r"poses_bounds\.npy: only 1 image\(s\), no train images"):
        load_scene(folder)


@pytest.mark.realdata
def test_real_fern(real_scene) -> None:
    fern = real_scene("nerf_llff_data/fern")
    scene = load_scene(fern)
    assert scene.name == "fern" and len(scene.train) == 17 and len(scene.test) == 3
    assert scene.test.names == ["IMG_4026.png", "IMG_4034.png", "IMG_4042.png"]
    assert scene.train.images.shape == (17, 378, 504, 3)
    intr = scene.train.intrinsics
    hwf = np.load(fern / "poses_bounds.npy")[0, [4, 9, 14]]
    assert (intr.width, intr.height) == (504, 378) and intr.fx == pytest.approx(hwf[2] / 8)
    assert scene.near == pytest.approx(1.2)
    assert_frustum_in_box(fern)
    assert_origin_visible(scene)
