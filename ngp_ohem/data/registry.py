"""The benchmark's scene names and where each lives under a data root.

One table, so the CLI, the workflow and the downloader agree on spelling and on the folder layout
of the official archives (``nerf_synthetic/<scene>``, ``nerf_llff_data/<scene>``, ``360_v2/<scene>``).

Two datasets share a scene name (``room``: LLFF and Mip-NeRF 360), so a name that is not unique must
be written with its dataset, ``llff/room`` or ``mipnerf360/room``; a bare ``room`` is an error rather
than a silent pick.
"""

from __future__ import annotations

from pathlib import Path

from ngp_ohem.errors import DatasetError

BLENDER_SCENES = ("chair", "drums", "ficus", "hotdog", "lego", "materials", "mic", "ship")
LLFF_SCENES = ("fern", "flower", "fortress", "horns", "leaves", "orchids", "room", "trex")
# The seven scenes of 360_v2.zip, the ones the authors' runall_360_ngp.sh trains (flowers and treehill
# are in the separate 360_extra_scenes.zip, which they do not use).
MIPNERF360_SCENES = ("bicycle", "bonsai", "counter", "garden", "kitchen", "room", "stump")

#: Folder (and archive stem) of each dataset under a data root.
DATASET_DIRS = {"blender": "nerf_synthetic", "llff": "nerf_llff_data", "mipnerf360": "360_v2"}
SCENES = {"blender": BLENDER_SCENES, "llff": LLFF_SCENES, "mipnerf360": MIPNERF360_SCENES}


def scene_names() -> list[str]:
    """Every way to name a benchmark scene: the unique names, and ``dataset/scene`` for all scenes."""
    unique = [n for names in SCENES.values() for n in names if len(datasets_with(n)) == 1]
    return unique + [f"{d}/{n}" for d, names in SCENES.items() for n in names]


def datasets_with(name: str) -> list[str]:
    return [d for d, names in SCENES.items() if name in names]


def resolve(token: str) -> tuple[str, str]:
    """(dataset, scene) of a benchmark scene given as ``scene`` or ``dataset/scene``."""
    dataset, sep, name = token.rpartition("/")
    if sep:
        if dataset not in SCENES or name not in SCENES[dataset]:
            raise DatasetError(f"unknown scene '{token}'; known: {', '.join(scene_names())}")
        return dataset, name
    found = datasets_with(name)
    if len(found) > 1:
        raise DatasetError(f"scene '{name}' is in several datasets: write {' or '.join(f'{d}/{name}' for d in found)}")
    if not found:
        known = ", ".join(n for names in SCENES.values() for n in names if len(datasets_with(n)) == 1)
        raise DatasetError(f"unknown scene '{name}'; known: {known} (and dataset/scene, e.g. mipnerf360/room)")
    return found[0], name


def dataset_of(token: str) -> str:
    """The dataset ("blender", "llff" or "mipnerf360") a benchmark scene belongs to."""
    return resolve(token)[0]


def scene_dir(data_root: str | Path, token: str) -> Path:
    """Folder of a benchmark scene under data_root, in the official archives' layout."""
    dataset, name = resolve(token)
    return Path(data_root) / DATASET_DIRS[dataset] / name
