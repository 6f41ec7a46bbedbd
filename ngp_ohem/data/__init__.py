"""Scene loading: one entry point that recognises the Blender, LLFF and Mip-NeRF 360 folder formats.

Procedural scenes are written in the same formats, so tests and the embedded default exercise
exactly the loaders a user's real data goes through.

LLFF and Mip-NeRF 360 folders hold the same files (``images_<k>/``, ``sparse/0/``, ``poses_bounds.npy``),
so the two are told apart by the camera geometry (:func:`surrounds`): a forward-facing capture looks
one way, a 360 capture looks inwards from all around.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ngp_ohem.data.blender import load_blender
from ngp_ohem.data.colmap import find_sparse_model, read_poses
from ngp_ohem.data.download import download_dataset
from ngp_ohem.data.llff import load_llff, poses_bounds_capture, read_poses_bounds
from ngp_ohem.data.mipnerf360 import load_mipnerf360
from ngp_ohem.data.procedural import make_blender_scene, make_llff_scene, make_mipnerf360_scene, make_scene
from ngp_ohem.data.registry import BLENDER_SCENES, LLFF_SCENES, MIPNERF360_SCENES, dataset_of, scene_dir
from ngp_ohem.data.scene import Intrinsics, Scene, Split
from ngp_ohem.errors import ConfigError, DatasetError

__all__ = [
    "BLENDER_SCENES",
    "LLFF_SCENES",
    "MIPNERF360_SCENES",
    "Intrinsics",
    "Scene",
    "Split",
    "dataset_of",
    "detect_format",
    "download_dataset",
    "load_blender",
    "load_llff",
    "load_mipnerf360",
    "load_scene",
    "make_blender_scene",
    "make_llff_scene",
    "make_mipnerf360_scene",
    "make_scene",
    "scene_dir",
    "surrounds",
]

LOADERS = {"blender": load_blender, "llff": load_llff, "mipnerf360": load_mipnerf360}
# A capture "surrounds" its scene when some camera looks more than this far (horizontally, about the
# mean up axis) from the mean viewing direction. The eight real LLFF captures stay within 14 degrees.
SURROUND_DEGREES = 60.0


def surrounds(c2w: np.ndarray) -> bool:
    """Whether (N, 4, 4) OpenGL poses look inwards from around the scene (360) rather than one way (LLFF).

    Viewing directions are projected onto the plane normal to the mean camera up axis (cameras that
    look almost straight up or down are left out); a full ring cancels out, a forward-facing capture
    keeps every direction within a few degrees of the mean.
    """
    up = c2w[:, :3, 1].sum(0)
    up /= max(float(np.linalg.norm(up)), 1e-12)
    view = -c2w[:, :3, 2]
    flat = view - np.outer(view @ up, up)
    length = np.linalg.norm(flat, axis=1)
    flat = flat[length > 0.1] / length[length > 0.1, None]
    if len(flat) < 2:
        return False
    mean = flat.mean(0)
    if np.linalg.norm(mean) < 1e-6:
        return True
    return bool((flat @ (mean / np.linalg.norm(mean))).min() < np.cos(np.radians(SURROUND_DEGREES)))


def detect_format(path: str | Path) -> str:
    """ "blender" (transforms_train.json), else for a capture with sparse/0/ or poses_bounds.npy
    "mipnerf360" when its cameras surround the scene and "llff" when they face forward."""
    folder = Path(path)
    if not folder.exists():
        raise DatasetError(f"scene folder {folder} does not exist")
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder (expected a scene folder)")
    if folder.joinpath("transforms_train.json").is_file():
        return "blender"
    sparse = find_sparse_model(folder)
    if sparse is not None:
        c2w = read_poses(sparse)
    elif folder.joinpath("poses_bounds.npy").is_file():
        c2w, _ = poses_bounds_capture(read_poses_bounds(folder / "poses_bounds.npy"))
    else:
        raise DatasetError(
            f"{folder} is not a scene folder: expected transforms_train.json (Blender / NeRF-synthetic "
            "format), poses_bounds.npy (LLFF format) or a COLMAP model sparse/0/ (LLFF or Mip-NeRF 360)"
        )
    return "mipnerf360" if surrounds(c2w) else "llff"


def load_scene(
    path: str | Path, downscale: int = 1, device: torch.device | str = "cpu", bound: float | str | None = None
) -> Scene:
    """Load a scene folder of any of the three formats.

    downscale 1 is each format's benchmark default: the Blender files as they are, the
    lowest-resolution images_<k>/ folder of an LLFF or 360 scene (images_8/ in the releases). d > 1
    box-averages Blender images by d and reads images_d/ of an LLFF or 360 scene (downscale relative
    to the full-resolution photos, as the folder names are).

    bound: the half side of the scene box; None or "auto" is the format's own (Blender 1.5, LLFF 4,
    Mip-NeRF 360 8). The LLFF and 360 framings scale the capture to it (LLFF) or keep the cameras in
    the unit ball (360); Blender poses are used as given.
    """
    kind = detect_format(path)
    if bound is None or bound == "auto":
        return LOADERS[kind](path, downscale=downscale, device=device)
    if isinstance(bound, bool) or not isinstance(bound, int | float) or not 0 < bound < float("inf"):
        raise ConfigError(f"invalid config value at 'bound': must be 'auto' or a positive number, got {bound!r}")
    return LOADERS[kind](path, downscale=downscale, device=device, bound=float(bound))
