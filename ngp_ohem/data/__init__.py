"""Scene loading: one entry point that recognises the Blender and LLFF folder formats.

Procedural scenes are written in the same two formats, so tests and the embedded default exercise
exactly the loaders a user's real data goes through.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ngp_ohem.data.blender import load_blender
from ngp_ohem.data.download import download_dataset
from ngp_ohem.data.llff import load_llff
from ngp_ohem.data.procedural import make_blender_scene, make_llff_scene, make_scene
from ngp_ohem.data.registry import BLENDER_SCENES, LLFF_SCENES, dataset_of, scene_dir
from ngp_ohem.data.scene import Intrinsics, Scene, Split
from ngp_ohem.errors import DatasetError

__all__ = [
    "BLENDER_SCENES",
    "LLFF_SCENES",
    "Intrinsics",
    "Scene",
    "Split",
    "dataset_of",
    "detect_format",
    "download_dataset",
    "load_blender",
    "load_llff",
    "load_scene",
    "make_blender_scene",
    "make_llff_scene",
    "make_scene",
    "scene_dir",
]


def detect_format(path: str | Path) -> str:
    """ "blender" if the folder has transforms_train.json, "llff" if it has poses_bounds.npy."""
    folder = Path(path)
    if not folder.exists():
        raise DatasetError(f"scene folder {folder} does not exist")
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder (expected a scene folder)")
    if folder.joinpath("transforms_train.json").is_file():
        return "blender"
    if folder.joinpath("poses_bounds.npy").is_file():
        return "llff"
    raise DatasetError(
        f"{folder} is not a scene folder: expected transforms_train.json (Blender / "
        "NeRF-synthetic format) or poses_bounds.npy (LLFF format)"
    )


def load_scene(path: str | Path, downscale: int = 1, device: torch.device | str = "cpu") -> Scene:
    """Load a scene folder of either format.

    downscale 1 is each format's benchmark default: the Blender files as they are, the
    lowest-resolution images_<k>/ folder of an LLFF scene (images_8/ in the release). d > 1
    box-averages Blender images by d and reads images_d/ of an LLFF scene (downscale relative to the
    full-resolution photos, as the folder names are).
    """
    kind = detect_format(path)
    loader = load_blender if kind == "blender" else load_llff
    return loader(path, downscale=downscale, device=device)
