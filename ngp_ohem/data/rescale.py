"""The authors' frame for Blender scenes: world scaled by 0.8 (0.7 for hotdog and ship) into a unit box.

Their synthetic runs (``scripts/misc_runs.sh``) pass ``--bound 1 --scale 0.8`` (``0.7`` for the two
widest objects): camera positions are multiplied by the scale (the scene shrinks about the origin)
and the renderer's box is ``[-1, 1]^3``. With their bound-independent minimum step
``2 sqrt(3) / 1024`` that also fixes the sample spacing in the object's own units. The loader keeps
the files' frame (bound 1.5, unscaled); the run applies this one when the config asks for it.
"""

from __future__ import annotations

import dataclasses

from ngp_ohem.data.scene import Scene, Split

AUTHORS_SCALE = 0.8
AUTHORS_BOUND = 1.0
AUTHORS_SCALE_BY_SCENE = {"hotdog": 0.7, "ship": 0.7}


def authors_scale(scene_name: str) -> float:
    return AUTHORS_SCALE_BY_SCENE.get(scene_name, AUTHORS_SCALE)


def _scaled(split: Split, scale: float) -> Split:
    poses = split.poses.clone()
    poses[:, :3, 3] *= scale
    bounds = None if split.depth_bounds is None else split.depth_bounds * scale
    return dataclasses.replace(split, poses=poses, depth_bounds=bounds)


def rescaled(scene: Scene, scale: float, bound: float) -> Scene:
    """``scene`` with its world scaled by ``scale`` about the origin and the box ``[-bound, bound]^3``."""
    return dataclasses.replace(
        scene, train=_scaled(scene.train, scale), test=_scaled(scene.test, scale), bound=bound,
        notes=[*scene.notes],
    )  # fmt: skip


def framed_for_run(scene: Scene, bound: float | str, scale: float | str) -> Scene:
    """A Blender scene in the configured frame; other datasets unchanged.

    ``scale``: ``"file"`` (as loaded), ``"authors"`` (0.8, 0.7 for hotdog and ship) or a number; ``bound``
    the run's ``bound`` key: with ``"auto"`` a scaled scene gets the authors' unit box, a number is kept
    (the loader has already set it).
    """
    if scene.kind != "blender" or scale == "file":
        return scene
    s = authors_scale(scene.name) if scale == "authors" else float(scale)
    return rescaled(scene, s, AUTHORS_BOUND if bound == "auto" else scene.bound)
