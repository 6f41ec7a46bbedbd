"""LLFF loader: normalisation into the box, image-folder choice, malformed inputs, the real fern copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ngp_ohem.data import detect_format, load_llff, load_scene
from ngp_ohem.data.framing import average_pose
from ngp_ohem.data.llff import BOUND, llff_to_opengl, poses_bounds_capture
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


def pixel_grid_rays(split, n: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per camera, unit-z-depth ray directions (C, n*n, 3) through an n x n pixel grid that includes the
    image corners, the camera centres (C, 3) and their depth bounds (C, 2), from a loaded split."""
    k = split.intrinsics
    us, vs = np.linspace(0, k.width, n), np.linspace(0, k.height, n)
    cam = np.array([[(u - k.cx) / k.fx, -(v - k.cy) / k.fy, -1.0] for u in us for v in vs])
    poses = split.poses.double().numpy()
    return np.einsum("cij,kj->cki", poses[:, :3, :3], cam), poses[:, :3, 3], split.depth_bounds.double().numpy()


def frame_violations(scene, depths: int = 9, upto_far: bool = True) -> list[str]:
    """What breaks the framing guarantee: a camera centre outside the box, or a pixel-ray point with a
    z-depth between that camera's near and far bound outside it (train and test cameras); with
    ``upto_far=False`` only the near bound is checked (the foreground)."""
    bad = []
    for split in (scene.train, scene.test):
        dirs, centres, bounds = pixel_grid_rays(split)
        for c, (o, (near, far)) in enumerate(zip(centres, bounds, strict=True)):
            if np.abs(o).max() > scene.bound * (1 + 1e-6):
                bad.append(f"camera {split.names[c]} at {o.round(2)}")
            for depth in np.linspace(near, far, depths) if upto_far else [near]:
                points = o + depth * dirs[c]
                worst = np.abs(points).max()
                if worst > scene.bound * (1 + 1e-5):
                    bad.append(f"{split.names[c]} depth {depth:.2f} reaches |x| = {worst:.2f}")
                    break
    return bad


def legacy_normalize(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The framing before issue 10: nearest bound at depth 4/3, origin at mid depth (kept to show it fails)."""
    c2w, bounds = poses_bounds_capture(arr)
    sc = 1.0 / (0.75 * bounds.min())
    c2w[:, :3, 3] *= sc
    bounds = bounds * sc
    c2w = np.linalg.inv(average_pose(c2w)) @ c2w
    c2w[:, 2, 3] += 0.5 * (bounds[:, 0].min() + bounds[:, 1].max())
    return c2w, bounds


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
    bounds = torch.cat([scene.train.depth_bounds, scene.test.depth_bounds])
    assert scene.near == pytest.approx(0.9 * float(bounds[:, 0].min()))
    assert scene.poses_source.endswith("poses_bounds.npy")
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
    assert frame_violations(scene) == []
    # the average camera looks down -z with up in the y-z plane
    z_mean = poses[:, :3, 2].mean(0)
    assert z_mean / np.linalg.norm(z_mean) == pytest.approx([0, 0, 1], abs=1e-6)
    assert poses[:, :3, 1].mean(0)[0] == pytest.approx(0, abs=1e-6)
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
    # the framing of issue 10 keeps fern where the old rule had it (nearest bound 4/3, near 1.2) within 2 %
    assert scene.near == pytest.approx(1.2, rel=0.02)
    assert frame_violations(scene) == []
    assert_origin_visible(scene)


LLFF_POSE_SCENES = ("fern", "flower", "fortress", "horns", "leaves", "orchids", "room", "trex")


def scene_from_poses(npy: Path, folder: Path) -> Path:
    """An LLFF folder with a real poses_bounds.npy and one tiny grey image (4:3, like the release) per row."""
    folder.mkdir(parents=True)
    shutil.copy(npy, folder / "poses_bounds.npy")
    (folder / "images_8").mkdir()
    for i in range(len(np.load(npy))):
        Image.new("RGB", (8, 6), (i, 128, 64)).save(folder / "images_8" / f"IMG_{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def pose_scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from conftest import real_data_root

    root = real_data_root()
    if root is None or not (root / "llff_poses").is_dir():
        pytest.skip("the real LLFF pose files (../shared/data/llff_poses/) are not present in this data copy")
    base = tmp_path_factory.mktemp("llff_poses")
    return {
        name: scene_from_poses(root / "llff_poses" / name / "poses_bounds.npy", base / name)
        for name in LLFF_POSE_SCENES
        if (root / "llff_poses" / name / "poses_bounds.npy").is_file()
    }


@pytest.mark.realdata
@pytest.mark.parametrize("name", LLFF_POSE_SCENES)
def test_real_pose_file_is_framed_inside_the_box(pose_scenes: dict[str, Path], name: str) -> None:
    """Every camera and every pixel ray between the camera's near and far bound lies inside the box."""
    if name not in pose_scenes:
        pytest.skip(f"llff_poses/{name} not present in this data copy")
    scene = load_scene(pose_scenes[name])
    assert len(scene.train) + len(scene.test) == len(np.load(pose_scenes[name] / "poses_bounds.npy"))
    assert frame_violations(scene) == []
    # as large as the box allows: some camera frustum corner touches the box
    dirs, centres, bounds = pixel_grid_rays(scene.train)
    reach = max(np.abs(o + far * d).max() for o, d, (_, far) in zip(centres, dirs, bounds, strict=True))
    assert reach > 0.9 * scene.bound
    assert 0 < scene.near < float(scene.train.depth_bounds[:, 0].min())


@pytest.mark.realdata
def test_old_normalisation_fails_seven_of_eight_pose_files(pose_scenes: dict[str, Path], monkeypatch) -> None:
    """The check above has teeth: the framing before issue 10 put the cameras or the near-bound foreground
    of every scene but fern outside the box, and clipped the far-plane frustum corners of all eight."""
    if len(pose_scenes) < len(LLFF_POSE_SCENES):
        pytest.skip("not all 8 LLFF pose files are present")
    import ngp_ohem.data.llff as llff

    monkeypatch.setattr(llff, "normalize_poses", lambda arr, source="", bound=4.0: legacy_normalize(arr))
    scenes = {name: load_scene(folder) for name, folder in pose_scenes.items()}
    foreground_out = sorted(name for name, scene in scenes.items() if frame_violations(scene, upto_far=False))
    assert foreground_out == ["flower", "fortress", "horns", "leaves", "orchids", "room", "trex"]
    assert all(frame_violations(scene) for scene in scenes.values())


def test_deep_procedural_scene_is_framed_inside_the_box(tmp_path: Path) -> None:
    """A near foreground and a far background (far/near ~20, like horns) in one box."""
    folder = make_llff_scene(tmp_path / "deep", seed=0, width=32, height=24, depth="deep")
    raw = np.load(folder / "poses_bounds.npy")
    assert raw[:, 16].max() / raw[:, 15].min() > 12
    scene = load_scene(folder)
    assert frame_violations(scene) == []
    assert_origin_visible(scene)
    # the old rule put this scene's cameras and foreground outside the box
    old_c2w, _ = legacy_normalize(raw)
    assert np.abs(old_c2w[:, :3, 3]).max() > BOUND


def test_sparse_model_is_preferred_and_frames_like_poses_bounds(tmp_path: Path) -> None:
    """sparse/0 (COLMAP, as the release and the authors' loader) gives the same cameras, up to the framing."""
    folder = make_llff_scene(tmp_path / "s", seed=2, width=32, height=24, depth="deep", sparse=True)
    with_sparse = load_scene(folder)
    assert with_sparse.poses_source.endswith("sparse/0")
    assert frame_violations(with_sparse) == []
    shutil.rmtree(folder / "sparse")
    from_npy = load_scene(folder)
    assert from_npy.poses_source.endswith("poses_bounds.npy")
    assert with_sparse.train.names == from_npy.train.names  # .JPG names matched to images_8/*.png by stem
    assert with_sparse.train.intrinsics == from_npy.train.intrinsics
    torch.testing.assert_close(with_sparse.train.poses[:, :3, :3], from_npy.train.poses[:, :3, :3], atol=1e-5, rtol=0)
    # same capture, so the same similarity up to a common scale and shift (the depth bounds differ a little:
    # percentiles of sparse points vs exact surface depths)
    a, b = with_sparse.train.poses[:, :3, 3].double(), from_npy.train.poses[:, :3, 3].double()
    da, db = a - a.mean(0), b - b.mean(0)
    ratio = float(da.norm() / db.norm())
    torch.testing.assert_close(da, ratio * db, atol=1e-4, rtol=0)
    assert 0.8 < ratio < 1.25


def test_sparse_model_missing_an_image(tmp_path: Path) -> None:
    folder = make_llff_scene(tmp_path / "s", seed=2, width=16, height=12, n_images=9, sparse=True)
    (folder / "images_8" / "IMG_0003.png").unlink()
    message = r"images_8 lacks 1 of the 9 images registered in .*sparse/0 \(first: IMG_0003\.JPG\)"
    with pytest.raises(DatasetError, match=message):
        load_scene(folder)


def test_truncated_sparse_model(tmp_path: Path) -> None:
    folder = make_llff_scene(tmp_path / "s", seed=2, width=16, height=12, n_images=9, sparse=True)
    images = folder / "sparse" / "0" / "images.bin"
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(DatasetError, match=r"images\.bin: truncated COLMAP file"):
        load_scene(folder)


def test_identical_poses_are_rejected(tiny: Path) -> None:
    npy = tiny / "poses_bounds.npy"
    arr = np.load(npy)
    arr[:, :15] = arr[0, :15]
    np.save(npy, arr)
    with pytest.raises(DatasetError, match=r"poses_bounds\.npy: all 10 camera centres are identical"):
        load_scene(tiny)
