"""Loader for the Blender (NeRF-synthetic) format: ``transforms_{train,test}.json`` + RGBA PNGs.

Protocol: the train split is ``transforms_train.json`` only and the test split is
``transforms_test.json`` (``transforms_val.json`` is ignored), as in the NeRF and Instant-NGP papers.
Poses are used as given: the format already stores camera-to-world matrices in the OpenGL camera
convention. Blender objects lie inside [-1.5, 1.5]^3 with cameras at radius ~4, hence ``BOUND`` and a
small ``NEAR`` (the marcher starts where a ray enters the box, so near only guards the camera itself).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from ngp_ohem.data.images import area_downscale, check_downscale, read_image
from ngp_ohem.data.scene import Intrinsics, Scene, Split
from ngp_ohem.errors import DatasetError

BOUND = 1.5
NEAR = 0.05


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(
            f"missing {path} (a Blender-format scene needs transforms_train.json and transforms_test.json)"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object at the top level")
    return meta


def _camera_angle(meta: dict, path: Path) -> float:
    angle = meta.get("camera_angle_x")
    if isinstance(angle, bool) or not isinstance(angle, (int, float)):
        raise DatasetError(f"{path}: 'camera_angle_x' missing or not a number")
    if not (math.isfinite(angle) and 0.0 < angle < math.pi):
        raise DatasetError(f"{path}: 'camera_angle_x' must be in (0, pi) radians, got {angle}")
    return float(angle)


def _pose(frame: object, index: int, path: Path) -> np.ndarray:
    where = f"{path}: frame {index}"
    if not isinstance(frame, dict) or "transform_matrix" not in frame:
        raise DatasetError(f"{where} has no 'transform_matrix'")
    try:
        pose = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: 'transform_matrix' is not a numeric 4x4 matrix") from None
    if pose.shape != (4, 4):
        raise DatasetError(f"{where}: 'transform_matrix' must be 4x4, got shape {pose.shape}")
    if not np.isfinite(pose).all():
        raise DatasetError(f"{where}: 'transform_matrix' contains NaN or inf")
    return pose


def _image_path(frame: dict, index: int, json_path: Path) -> Path:
    file_path = frame.get("file_path")
    if not isinstance(file_path, str) or not file_path:
        raise DatasetError(f"{json_path}: frame {index} has no 'file_path'")
    path = json_path.parent / (file_path + ".png")
    alt = json_path.parent / file_path  # some exporters already include the extension
    if not path.is_file() and alt.suffix.lower() == ".png" and alt.is_file():
        return alt
    return path


def load_split(json_path: Path, downscale: int = 1) -> Split:
    """Read one transforms_*.json and its images into a Split (RGBA, straight alpha)."""
    downscale = check_downscale(downscale)
    meta = _read_json(json_path)
    angle = _camera_angle(meta, json_path)
    frames = meta.get("frames")
    if not isinstance(frames, list):
        raise DatasetError(f"{json_path}: 'frames' missing or not a list")
    if not frames:
        raise DatasetError(f"{json_path}: empty split (no frames)")
    poses, names = [], []
    images: np.ndarray | None = None  # filled in place: one copy of the split in memory, not two
    for i, frame in enumerate(frames):
        poses.append(_pose(frame, i, json_path))
        path = _image_path(frame, i, json_path)
        image = area_downscale(read_image(path, channels=4), downscale, path)
        if images is None:
            images = np.empty((len(frames), *image.shape), dtype=np.float32)
        elif image.shape != images.shape[1:]:
            raise DatasetError(
                f"image {path} is {image.shape[1]}x{image.shape[0]} but {names[0]} in the "
                f"same split is {images.shape[2]}x{images.shape[1]}"
            )
        images[i] = image
        names.append(path.name)
    assert images is not None
    h, w = images.shape[1:3]
    focal = 0.5 * w / math.tan(0.5 * angle)
    return Split(
        images=torch.from_numpy(images),
        poses=torch.from_numpy(np.stack(poses).astype(np.float32)),
        intrinsics=Intrinsics(fx=focal, fy=focal, cx=0.5 * w, cy=0.5 * h, width=w, height=h),
        names=names,
    )


def load_blender(
    path: str | Path, downscale: int = 1, device: torch.device | str = "cpu", bound: float = BOUND
) -> Scene:
    """Load a Blender-format scene folder; downscale box-averages every image (premultiplied alpha).

    The poses are used as given, so ``bound`` only sets the box (the objects fill [-1.5, 1.5]^3)."""
    folder = Path(path)
    if not folder.is_dir():
        raise DatasetError(f"scene folder {folder} does not exist")
    train = load_split(folder / "transforms_train.json", downscale)
    test = load_split(folder / "transforms_test.json", downscale)
    notes = []
    if bool((train.images[..., 3] >= 1.0).all()):
        notes.append(
            f"{folder / 'transforms_train.json'}: no training image has transparency (alpha = 1 everywhere, e.g. "
            "PNGs without an alpha channel), so the random training background of the protocol has no effect"
        )
        warnings.warn(notes[-1], stacklevel=2)
    for split in (train, test):
        split.images = split.images.to(device)
        split.poses = split.poses.to(device)
    return Scene(
        name=folder.resolve().name, kind="blender", train=train, test=test, bound=bound, near=NEAR, path=str(folder),
        notes=notes,
    )  # fmt: skip
