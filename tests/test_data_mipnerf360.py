"""Mip-NeRF 360 loader: the authors' framing, image-folder choice, split, format detection, a short CLI run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ngp_ohem import protocol
from ngp_ohem.cli import main
from ngp_ohem.config import build_config
from ngp_ohem.data import detect_format, load_scene, surrounds
from ngp_ohem.data.colmap import _read_images as read_colmap_images
from ngp_ohem.data.llff import poses_bounds_capture
from ngp_ohem.data.procedural import (
    _random_similarity,
    make_llff_scene,
    make_mipnerf360_scene,
    make_scene,
    mipnerf360_cameras,
)
from ngp_ohem.data.registry import MIPNERF360_SCENES, resolve, scene_dir
from ngp_ohem.errors import ConfigError, DatasetError

N_IMAGES = 24
W8, H8 = 48, 32  # images_8/ of the default procedural scene; images_4/ is 96 x 64


@pytest.fixture(scope="module")
def scene360(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mipnerf360_scene(tmp_path_factory.mktemp("procedural") / "garden_toy", seed=0)


def copy_of(scene: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(scene, tmp_path / scene.name))


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im, dtype=np.float32) / 255.0


def name_order(scene) -> tuple[list[str], np.ndarray]:
    """Image names and poses (N, 4, 4) of both splits, back in name order."""
    names = scene.train.names + scene.test.names
    poses = np.concatenate([scene.train.poses.double().numpy(), scene.test.poses.double().numpy()])
    order = np.argsort(names)
    return [names[i] for i in order], poses[order]


def world_poses(seed: int = 0, n: int = N_IMAGES) -> np.ndarray:
    """The poses the procedural scene wrote, rebuilt from its canonical ring and its similarity frame."""
    canonical = mipnerf360_cameras(seed, n)
    scale, rot, trans = _random_similarity(np.random.default_rng([seed, 7]))
    out = canonical.copy()
    out[:, :3, :3] = rot @ canonical[:, :3, :3]
    out[:, :3, 3] = scale * canonical[:, :3, 3] @ rot.T + trans
    return out


def authors_frame(c2w: np.ndarray) -> np.ndarray:
    """The authors' 360 framing written out independently: camera centroid, an axis-angle rotation of the
    mean OpenCV 'down' axis onto +z, the relabelling (x, y, z) -> (y, x, -z), cameras in the unit ball."""
    centre = c2w[:, :3, 3].mean(0)
    radius = np.linalg.norm(c2w[:, :3, 3] - centre, axis=1).max()
    down = -c2w[:, :3, 1].mean(0)
    down /= np.linalg.norm(down)
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(down, z)
    axis /= np.linalg.norm(axis)
    angle = np.arccos(np.clip(down @ z, -1.0, 1.0))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.cos(angle) * np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * np.outer(axis, axis)
    world = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]) @ rot
    out = np.tile(np.eye(4), (len(c2w), 1, 1))
    out[:, :3, :3] = world @ c2w[:, :3, :3]
    out[:, :3, 3] = (c2w[:, :3, 3] - centre) @ world.T / radius
    return out


# -- the procedural scene is in the release's layout ----------------------------------------------
def test_layout_is_the_release_layout(scene360: Path) -> None:
    for factor, size in ((4, (2 * W8, 2 * H8)), (8, (W8, H8))):
        files = sorted((scene360 / f"images_{factor}").iterdir())
        assert [p.name for p in files[:2]] == ["DSC00000.png", "DSC00001.png"] and len(files) == N_IMAGES
        with Image.open(files[0]) as im:
            assert im.size == size and im.mode == "RGB"
    assert all((scene360 / "sparse" / "0" / f"{f}.bin").is_file() for f in ("cameras", "images", "points3D"))
    assert np.load(scene360 / "poses_bounds.npy").shape == (N_IMAGES, 17)
    # images_8/ is the 2x2 box average of images_4/ (to uint8 rounding)
    fine, coarse = pixels(scene360 / "images_4" / "DSC00003.png"), pixels(scene360 / "images_8" / "DSC00003.png")
    np.testing.assert_allclose(fine.reshape(H8, 2, W8, 2, 3).mean(axis=(1, 3)), coarse, atol=1.01 / 255)
    # COLMAP ids are not in name order: a loader has to sort by name
    names_by_id = [name for name, *_ in read_colmap_images(scene360 / "sparse" / "0")]
    assert sorted(names_by_id) != names_by_id and len(set(names_by_id)) == N_IMAGES


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    def tree(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    a = tree(make_scene("mipnerf360", tmp_path / "a", seed=3, size=16))
    assert a == tree(make_scene("mipnerf360", tmp_path / "b", seed=3, size=16)) and len(a) > 40
    assert a != tree(make_scene("mipnerf360", tmp_path / "c", seed=4, size=16))


# -- format detection -------------------------------------------------------------------------------
def test_detected_by_camera_geometry(scene360: Path, llff_scene_dir: Path, tmp_path: Path) -> None:
    """Both formats ship images_<k>/, sparse/0/ and poses_bounds.npy: the cameras tell them apart."""
    assert detect_format(scene360) == "mipnerf360"
    assert detect_format(llff_scene_dir) == "llff"
    assert detect_format(make_llff_scene(tmp_path / "fwd", seed=1, width=16, height=12, sparse=True)) == "llff"
    only_npy = copy_of(scene360, tmp_path)
    shutil.rmtree(only_npy / "sparse")
    assert detect_format(only_npy) == "mipnerf360"  # from poses_bounds.npy alone
    with pytest.raises(DatasetError, match=r"needs its COLMAP model sparse/0/"):
        load_scene(only_npy)


def test_half_ring_surrounds_but_a_forward_sweep_does_not() -> None:
    ring = mipnerf360_cameras(0, 24)
    assert surrounds(ring) and surrounds(ring[:10])  # 135 degrees of the ring still surround
    assert not surrounds(ring[:3])  # three neighbours on the ring: within 30 degrees, forward-facing


@pytest.mark.realdata
def test_real_llff_pose_files_are_forward_facing(real_data: Path) -> None:
    files = sorted((real_data / "llff_poses").glob("*/poses_bounds.npy"))
    if not files:
        pytest.skip("the real LLFF pose files (llff_poses/) are not in this data copy")
    for npy in files:
        assert not surrounds(poses_bounds_capture(np.load(npy))[0]), npy.parent.name


# -- framing, intrinsics, split -------------------------------------------------------------------
def test_framing_is_the_authors(scene360: Path) -> None:
    scene = load_scene(scene360)
    assert (scene.kind, scene.bound, scene.near) == ("mipnerf360", 8.0, 0.2)
    names, poses = name_order(scene)
    assert names == [f"DSC{i:05d}.png" for i in range(N_IMAGES)]
    expected = authors_frame(world_poses())
    np.testing.assert_allclose(poses, expected, atol=2e-6)
    centres = poses[:, :3, 3]
    np.testing.assert_allclose(centres.mean(0), 0.0, atol=1e-6)
    assert np.linalg.norm(centres, axis=1).max() == pytest.approx(1.0, abs=1e-6)
    up = poses[:, :3, 1].mean(0)
    np.testing.assert_allclose(up / np.linalg.norm(up), [0.0, 0.0, 1.0], atol=1e-6)
    # a similarity of the canonical ring: distances shrink by one factor, heights stay heights
    canonical = mipnerf360_cameras(0, N_IMAGES)[:, :3, 3]
    ratio = np.linalg.norm(centres[1:] - centres[0], axis=1) / np.linalg.norm(canonical[1:] - canonical[0], axis=1)
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
    radius = np.linalg.norm(canonical - canonical.mean(0), axis=1).max()
    np.testing.assert_allclose(centres[:, 2], (canonical[:, 2] - canonical[:, 2].mean()) / radius, atol=0.02)


def test_intrinsics_and_image_folder_follow_downscale(scene360: Path) -> None:
    default = load_scene(scene360)
    k = default.train.intrinsics
    assert (k.width, k.height) == (W8, H8)
    assert (k.fx, k.fy, k.cx, k.cy) == pytest.approx((0.35 * 2 * W8, 0.35 * 2 * W8, W8 / 2, H8 / 2))
    assert load_scene(scene360, downscale=8).train.intrinsics == k
    four = load_scene(scene360, downscale=4)
    k4 = four.test.intrinsics
    assert (k4.width, k4.height, k4.fx, k4.cx) == pytest.approx((2 * W8, 2 * H8, 2 * k.fx, 2 * k.cx))
    np.testing.assert_allclose(four.test.images[1].numpy(), pixels(scene360 / "images_4" / "DSC00008.png"))
    sixteen = load_scene(scene360, downscale=16)  # images_8/ box-averaged by 2
    assert sixteen.test.intrinsics.width == W8 // 2 and sixteen.test.intrinsics.fx == pytest.approx(k.fx / 2)
    coarse = pixels(scene360 / "images_8" / "DSC00016.png").reshape(H8 // 2, 2, W8 // 2, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(sixteen.test.images[2].numpy(), coarse, atol=1e-6)
    with pytest.raises(DatasetError, match=r"missing image folder .*images_2 \(found: images_4, images_8\)"):
        load_scene(scene360, downscale=2)


def test_split_is_every_eighth_image_by_name(scene360: Path) -> None:
    scene = load_scene(scene360)
    assert scene.test.names == ["DSC00000.png", "DSC00008.png", "DSC00016.png"]
    assert len(scene.train) == 21 and scene.train.names == sorted(scene.train.names)
    assert not set(scene.train.names) & set(scene.test.names)
    np.testing.assert_allclose(scene.train.images[0].numpy(), pixels(scene360 / "images_8" / "DSC00001.png"))


def test_depth_bounds_lie_within_the_visible_surface(scene360: Path) -> None:
    """Sparse-point depth percentiles, framed: inside the exact surface depth range of poses_bounds.npy."""
    scene = load_scene(scene360)
    exact = np.load(scene360 / "poses_bounds.npy")[:, 15:17]
    world = world_poses()[:, :3, 3]
    scale = 1.0 / np.linalg.norm(world - world.mean(0), axis=1).max()
    names = scene.train.names + scene.test.names
    bounds = np.concatenate([scene.train.depth_bounds.numpy(), scene.test.depth_bounds.numpy()])
    for name, (near, far) in zip(names, bounds, strict=True):
        lo, hi = exact[int(name[3:8])] * scale
        assert lo * (1 - 1e-5) <= near < far <= hi * (1 + 1e-5), name


def test_bound_sizes_the_box_not_the_frame(scene360: Path) -> None:
    eight, sixteen = load_scene(scene360, bound="auto"), load_scene(scene360, bound=16)
    assert (eight.bound, sixteen.bound) == (8.0, 16.0)
    np.testing.assert_array_equal(eight.train.poses.numpy(), sixteen.train.poses.numpy())
    # the far background sphere (~11 out) lies outside bound 8, inside bound 16
    assert len(eight.notes) == 1 and "outside the box [-8, 8]^3" in eight.notes[0]
    assert sixteen.notes == []
    with pytest.raises(ConfigError, match="'bound'"):
        load_scene(scene360, bound=0)


# -- bad input ----------------------------------------------------------------------------------------
def test_missing_image_is_one_clear_error(scene360: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = copy_of(scene360, tmp_path)
    (folder / "images_8" / "DSC00005.png").unlink()
    with pytest.raises(DatasetError, match=r"images_8 lacks 1 of the 24 images .*DSC00005"):
        load_scene(folder)
    assert main(["train", "--data", str(folder), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ngp-ohem: error: ") and "DSC00005" in err[0]


def test_cameras_at_one_point_cannot_be_framed() -> None:
    from ngp_ohem.data.mipnerf360 import frame_360

    same = np.tile(np.eye(4), (5, 1, 1))
    with pytest.raises(DatasetError, match="camera centres coincide"):
        frame_360(same, "sparse/0")


# -- the authors' 360 settings in the config and the protocol ----------------------------------------
def test_config_and_protocol_give_the_authors_360_settings() -> None:
    paper = build_config("paper")
    assert paper.bound == "auto" and build_config("paper", {"bound": 16}).bound == 16
    for bad in (0, -8, "big"):
        with pytest.raises(ConfigError, match="'bound'"):
            build_config("paper", {"bound": bad})
    r = paper.render
    assert protocol.cone_angle("mipnerf360", r.cone_angle, r.llff_cone_angle) == pytest.approx(1 / 256)
    assert protocol.cone_angle("blender", r.cone_angle, r.llff_cone_angle) == 0.0
    kinds = {d: protocol.train_background_kind(r.train_background, d) for d in ("blender", "llff", "mipnerf360")}
    assert kinds == {"blender": "white", "llff": "white", "mipnerf360": "random"}
    assert protocol.train_background_kind("white", "mipnerf360") == "white"


def test_registry_names_the_shared_room_by_dataset(tmp_path: Path) -> None:
    assert MIPNERF360_SCENES == ("bicycle", "bonsai", "counter", "garden", "kitchen", "room", "stump")
    assert resolve("garden") == ("mipnerf360", "garden") and resolve("fern") == ("llff", "fern")
    assert resolve("mipnerf360/room") == ("mipnerf360", "room") and resolve("llff/room") == ("llff", "room")
    assert scene_dir(tmp_path, "mipnerf360/room") == tmp_path / "360_v2" / "room"
    assert scene_dir(tmp_path, "bicycle") == tmp_path / "360_v2" / "bicycle"
    with pytest.raises(DatasetError, match=r"scene 'room' is in several datasets: write llff/room or mipnerf360/room"):
        resolve("room")
    with pytest.raises(DatasetError, match=r"unknown scene 'mipnerf360/fern'"):
        resolve("mipnerf360/fern")


# -- a short training run through the CLI --------------------------------------------------------------
def test_short_training_run_through_the_cli(scene360: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        "train", "--data", str(scene360), "--out", str(out), "--method", "hsm", "--budget", "60",
        "--downscale", "4", "--set", "bound=16", "--set", "step_limit=6",
        "--preset", "cpu", "--device", "cpu", "--backend", "torch", "--threads", "1", "--quiet",
        "--set", "field.log2_table_size=12", "--set", "render.target_samples=2048",
        "--set", "render.grid_resolution=16", "--set", "render.max_steps=256",
        "--set", "eval.subset_views=1", "--set", "eval.final_views=1", "--set", "eval.n_evals=2",
    ]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["dataset"] == "mipnerf360"
    assert summary["steps"] == 6 and summary["config"]["bound"] == 16 and summary["config"]["downscale"] == 4
    assert summary["data_notes"] == []  # bound 16 holds the whole procedural scene
    assert np.isfinite(summary["final"]["psnr"])
    with Image.open(out / "render_test0.png") as im:
        assert im.size == (2 * W8, 2 * H8)  # images_4/
