"""The benchmark's scene names and where each lives under a data root.

One table, so the CLI, the workflow and the downloader agree on spelling and on the folder layout
of the official archives (``nerf_synthetic/<scene>``, ``nerf_llff_data/<scene>``).
"""

from __future__ import annotations

from pathlib import Path

from ngp_ohem.errors import DatasetError

BLENDER_SCENES = ("chair", "drums", "ficus", "hotdog", "lego", "materials", "mic", "ship")
LLFF_SCENES = ("fern", "flower", "fortress", "horns", "leaves", "orchids", "room", "trex")

#: Folder (and archive stem) of each dataset under a data root.
DATASET_DIRS = {"blender": "nerf_synthetic", "llff": "nerf_llff_data"}
SCENES = {"blender": BLENDER_SCENES, "llff": LLFF_SCENES}


def dataset_of(scene_name: str) -> str:
    """The dataset ("blender" or "llff") a benchmark scene belongs to."""
    for dataset, names in SCENES.items():
        if scene_name in names:
            return dataset
    known = ", ".join(BLENDER_SCENES + LLFF_SCENES)
    raise DatasetError(f"unknown scene '{scene_name}'; known: {known}")


def scene_dir(data_root: str | Path, scene_name: str) -> Path:
    """Folder of a benchmark scene under data_root, in the official archives' layout."""
    return Path(data_root) / DATASET_DIRS[dataset_of(scene_name)] / scene_name
