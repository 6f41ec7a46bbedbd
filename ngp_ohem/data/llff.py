"""Loader for the LLFF format (``poses_bounds.npy`` or ``sparse/0`` + ``images_<factor>/``), as a bounded-box scene.

``poses_bounds.npy`` has one row per image: a 3x5 matrix [R | t | hwf] flattened row-major (camera
to world, columns [down, right, back]; hwf = full-resolution height, width, focal) and the near/far
z-depth bounds of the sparse points that camera sees. Images are the sorted png/jpg files of one
folder. Where the scene also ships its COLMAP model (``sparse/0/``, as the LLFF release and the
authors' ``--data_format colmap`` use), poses, intrinsics (with the principal point) and the same
per-image depth bounds come from it instead (:mod:`ngp_ohem.data.colmap`); images are matched by
file stem.

Either way the capture is framed into the box ``[-4, 4]^3`` (the paper's ``--bound 4``, no NDC) by
:func:`ngp_ohem.data.framing.frame_capture`: every camera and every camera's frustum between its
near and far bound inside the box, as large as the box allows.

``Scene.near`` is 0.9 x the smallest framed near bound (a global near plane: the authors' LLFF script
does not use per-camera near/far either). Test split: every 8th image (i % 8 == 0). Resolution:
downscale 1 reads the lowest-resolution images_<k>/ present (images_8/ in the release); downscale
d > 1 reads images_d/ (see choose_image_folder).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ngp_ohem.data.colmap import ColmapCapture, find_sparse_model, read_capture
from ngp_ohem.data.framing import corner_directions, frame_capture
from ngp_ohem.data.images import area_downscale, check_downscale, read_image
from ngp_ohem.data.scene import Intrinsics, Scene, Split
from ngp_ohem.errors import DatasetError
from ngp_ohem.protocol import LLFF_HOLDOUT_EVERY

BOUND = 4.0
NEAR_MARGIN = 0.9
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_poses_bounds(path: Path) -> np.ndarray:
    """The validated (N, 17) float64 array of a poses_bounds.npy file."""
    if not path.is_file():
        raise DatasetError(f"missing {path} (an LLFF-format scene needs poses_bounds.npy)")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DatasetError(f"{path}: unreadable .npy file ({err})") from None
    if arr.ndim != 2 or arr.shape[1] != 17:
        raise DatasetError(f"{path}: expected an array of shape (N, 17), got {arr.shape}")
    if arr.shape[0] == 0:
        raise DatasetError(f"{path}: no poses (shape {arr.shape})")
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: poses are not numeric (dtype {arr.dtype})") from None
    if not np.isfinite(arr).all():
        raise DatasetError(f"{path}: poses or bounds contain NaN or inf")
    near, far = arr[:, 15], arr[:, 16]
    if (near <= 0).any() or (far <= near).any():
        raise DatasetError(f"{path}: depth bounds must satisfy 0 < near < far for every row")
    if (arr[:, [4, 9, 14]] <= 0).any():
        raise DatasetError(f"{path}: hwf (height, width, focal) must be positive")
    return arr


def _factor_folders(folder: Path) -> dict[int, Path]:
    """Image folders by downscale factor: images_<k>/ -> k, images/ -> 1."""
    found: dict[int, Path] = {}
    if folder.joinpath("images").is_dir():
        found[1] = folder / "images"
    for sub in folder.iterdir():
        match = re.fullmatch(r"images_(\d+)", sub.name)
        if match and sub.is_dir() and int(match.group(1)) >= 1:
            found[int(match.group(1))] = sub
    return found


def choose_image_folder(folder: Path, downscale: int = 1) -> tuple[Path, int]:
    """The folder to read and the extra box-downscale to apply to its images.

    downscale 1 (the default): the lowest-resolution images_<k>/ present, else images/ -- the
    release's full-resolution photos are 12 Mpx, never what a benchmark means by default. downscale
    d > 1: images_d/, else the largest available images_k/ with k dividing d, box-averaged by d / k.
    """
    found = _factor_folders(folder)
    if not found:
        raise DatasetError(f"missing image folder in {folder}: expected images_<factor>/ (e.g. images_8/) or images/")
    if downscale == 1:
        return found[max(found)], 1
    usable = [k for k in found if downscale % k == 0]
    if not usable:
        have = ", ".join(sorted(p.name for p in found.values()))
        raise DatasetError(f"missing image folder {folder / f'images_{downscale}'} (found: {have})")
    k = max(usable)
    return found[k], downscale // k


def list_images(image_dir: Path) -> list[Path]:
    """Sorted png/jpg files of an image folder (their order is the pose row order)."""
    return sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def llff_to_opengl(mats: np.ndarray) -> np.ndarray:
    """Convert (N, 3, 4) [down, right, back, t] camera-to-world matrices to OpenGL [right, up, back, t]."""
    return np.concatenate([mats[:, :, 1:2], -mats[:, :, 0:1], mats[:, :, 2:]], axis=2)


def poses_bounds_capture(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4, 4) OpenGL poses in the file's world frame and (N, 2) depth bounds of a poses_bounds array."""
    c2w = np.tile(np.eye(4), (len(arr), 1, 1))
    c2w[:, :3, :] = llff_to_opengl(arr[:, :15].reshape(-1, 3, 5)[:, :, :4])
    return c2w, arr[:, 15:17].copy()


def normalize_poses(
    arr: np.ndarray, source: str = "poses_bounds.npy", bound: float = BOUND
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4, 4) framed OpenGL poses and (N, 2) framed bounds from an (N, 17) poses_bounds array."""
    c2w, bounds = poses_bounds_capture(arr)
    h, w, f = (float(v) for v in arr[0, [4, 9, 14]])
    framed = frame_capture(c2w, bounds, corner_directions(w, h, f, f, 0.5 * w, 0.5 * h), bound, source)
    return framed.c2w, framed.bounds


def read_images(paths: list[Path], extra: int) -> np.ndarray:
    """(N, H, W, 3) float32 RGB of the image files, each box-downscaled by ``extra``; all of one size."""
    images: np.ndarray | None = None  # filled in place: one copy in memory, not two
    for i, path in enumerate(paths):
        image = area_downscale(read_image(path, channels=3), extra, path)
        if images is None:
            images = np.empty((len(paths), *image.shape), dtype=np.float32)
        elif image.shape != images.shape[1:]:
            raise DatasetError(
                f"image {path} is {image.shape[1]}x{image.shape[0]} but {paths[0]} is "
                f"{images.shape[2]}x{images.shape[1]}"
            )
        images[i] = image
    assert images is not None
    return images


def match_images(capture: ColmapCapture, image_dir: Path) -> list[Path]:
    """The image file of every registered COLMAP image, matched by stem (images_8/ holds .png of .JPG names)."""
    by_stem = {p.stem.lower(): p for p in list_images(image_dir)}
    missing = [n for n in capture.names if Path(n).stem.lower() not in by_stem]
    if missing:
        raise DatasetError(
            f"{image_dir} lacks {len(missing)} of the {len(capture.names)} images registered in "
            f"{capture.folder} (first: {missing[0]})"
        )
    return [by_stem[Path(n).stem.lower()] for n in capture.names]


def colmap_intrinsics(capture: ColmapCapture, w: int, h: int) -> Intrinsics:
    """The shared camera's intrinsics scaled to loaded images of w x h pixels (the ratio of the widths)."""
    cam = capture.cameras[0]
    if any(c != cam for c in capture.cameras):
        raise DatasetError(f"{capture.folder}: images use different cameras; one shared camera is supported")
    ratio = cam.width / w
    if abs(cam.height / h - ratio) > 0.02 * ratio:
        raise DatasetError(
            f"images are {w}x{h} but {capture.folder} declares {cam.width}x{cam.height}: aspect ratios differ"
        )
    return Intrinsics(fx=cam.fx / ratio, fy=cam.fy / ratio, cx=cam.cx / ratio, cy=cam.cy / ratio, width=w, height=h)


def holdout_splits(
    images: np.ndarray, c2w: np.ndarray, bounds: np.ndarray, intr: Intrinsics, paths: list[Path], source: str,
    device: torch.device | str,
) -> tuple[Split, Split]:  # fmt: skip
    """(train, test) of a capture in file order: every 8th image (i % 8 == 0) is a test image."""
    n = len(paths)
    test_idx = [i for i in range(n) if i % LLFF_HOLDOUT_EVERY == 0]
    train_idx = [i for i in range(n) if i % LLFF_HOLDOUT_EVERY != 0]
    if not train_idx:
        raise DatasetError(
            f"{source}: only {n} image(s), no train images left after holding out every {LLFF_HOLDOUT_EVERY}th"
        )

    def split(idx: list[int]) -> Split:
        return Split(
            images=torch.from_numpy(images[idx]).to(device),
            poses=torch.from_numpy(c2w[idx].astype(np.float32)).to(device),
            intrinsics=intr,
            names=[paths[i].name for i in idx],
            depth_bounds=torch.from_numpy(bounds[idx].astype(np.float32)).to(device),
        )

    return split(train_idx), split(test_idx)


def load_llff(path: str | Path, downscale: int = 1, device: torch.device | str = "cpu", bound: float = BOUND) -> Scene:
    """Load an LLFF scene folder, framed into the box [-bound, bound]^3 (default 4, see the module docstring).

    downscale picks the image folder (see choose_image_folder); the focal length always follows the
    actual ratio of the declared full-resolution width to the loaded width.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DatasetError(f"scene folder {folder} does not exist")
    downscale = check_downscale(downscale)
    image_dir, extra = choose_image_folder(folder, downscale)
    sparse = find_sparse_model(folder)
    if sparse is not None:
        capture = read_capture(sparse)
        paths = match_images(capture, image_dir)
        images = read_images(paths, extra)
        h, w = images.shape[1:3]
        intr = colmap_intrinsics(capture, w, h)
        corners = corner_directions(w, h, intr.fx, intr.fy, intr.cx, intr.cy)
        framed = frame_capture(capture.c2w, capture.bounds, corners, bound, str(sparse))
        c2w, bounds, source = framed.c2w, framed.bounds, str(sparse)
    else:
        npy = folder / "poses_bounds.npy"
        arr = read_poses_bounds(npy)
        paths = list_images(image_dir)
        if len(paths) != len(arr):
            raise DatasetError(f"{image_dir} holds {len(paths)} images but {npy} has {len(arr)} pose rows")
        images = read_images(paths, extra)
        h, w = images.shape[1:3]
        full_h, full_w, focal = (float(v) for v in arr[0, [4, 9, 14]])
        ratio = full_w / w
        if abs(full_h / h - ratio) > 0.02 * ratio:
            raise DatasetError(
                f"images in {image_dir} are {w}x{h} but {npy} declares {full_w:g}x{full_h:g}: aspect ratios differ"
            )
        intr = Intrinsics(fx=focal / ratio, fy=focal / ratio, cx=0.5 * w, cy=0.5 * h, width=w, height=h)
        c2w, bounds = normalize_poses(arr, str(npy), bound=bound)
        source = str(npy)
    train, test = holdout_splits(images, c2w, bounds, intr, paths, source, device)
    return Scene(
        name=folder.resolve().name,
        kind="llff",
        train=train,
        test=test,
        bound=bound,
        near=float(NEAR_MARGIN * bounds[:, 0].min()),
        path=str(folder),
        poses_source=source,
    )
