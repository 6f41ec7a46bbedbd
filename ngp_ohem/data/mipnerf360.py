"""Loader for Mip-NeRF 360 captures (COLMAP ``sparse/0/`` + ``images_<factor>/``), framed as the authors do.

A 360 capture surrounds its scene: the cameras circle a central object and look inwards, the
background reaches far beyond them in every direction. The authors train it unbounded-ish, without
``--contract``, in a large box (``scripts/runall_360_ngp.sh``); this loader frames the capture the way
their COLMAP loader does with ``--enable_cam_center`` (``nerf/colmap_provider.py``), so a given
``bound`` holds the same region of the scene as theirs:

1. centre: the mean camera centre (``--enable_cam_center``; without it they would use the sparse-point
   centroid);
2. rotation: the smallest rotation taking the mean camera *down* axis to +z, followed by their
   axis relabelling (x, y, z) -> (y, x, -z); the mean camera up axis ends at +z;
3. scale: 1 / the largest camera distance from the centre, so every camera lies in the unit ball.

The box is ``[-bound, bound]^3`` in that frame: 8 for the indoor scenes, 16 for the outdoor ones in
the authors' script (the run config's ``bound``; ``auto`` is 8). ``Scene.near`` is their
``--min_near 0.2``. Each split keeps, per camera, the nearest and farthest z-depth of the sparse points
it observes (their ``cam_near_far``, min and max), and the scene the sparse points' bounding box
(``Scene.content_box``, their marching box): with ``render.camera_near_far`` (their
``--enable_cam_near_far``) rays march only inside both (ngp_ohem/render/limits.py).

Images: the COLMAP names matched by stem in the folder ``choose_image_folder`` picks (``--downscale 4``:
``images_4/``); intrinsics are COLMAP's, scaled by the ratio of the declared to the loaded width. Test
split: every 8th image in name order (i % 8 == 0), Mip-NeRF 360's convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ngp_ohem.data.colmap import find_sparse_model, read_capture
from ngp_ohem.data.images import check_downscale
from ngp_ohem.data.llff import choose_image_folder, colmap_intrinsics, holdout_splits, match_images, read_images
from ngp_ohem.data.scene import Scene
from ngp_ohem.errors import DatasetError

BOUND = 8.0  # bound "auto": the authors' indoor value (room, bonsai, kitchen, counter)
MIN_NEAR = 0.2  # --min_near 0.2 of runall_360_ngp.sh, in the unit-camera-ball frame
# Axis relabelling of the authors' loader after their up rotation: new (x, y, z) = old (y, x, -z).
RELABEL = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
OUTSIDE_NOTE_FRACTION = 0.01  # note when more than 1 % of the sparse points lie outside the box


@dataclass(frozen=True)
class Frame360:
    """The similarity that frames a 360 capture: x -> scale * rotation @ (x - centre)."""

    centre: np.ndarray  # (3,)
    rotation: np.ndarray  # (3, 3)
    scale: float

    def points(self, x: np.ndarray) -> np.ndarray:
        return self.scale * (x - self.centre) @ self.rotation.T

    def poses(self, c2w: np.ndarray) -> np.ndarray:
        out = np.tile(np.eye(4), (len(c2w), 1, 1))
        out[:, :3, :3] = self.rotation @ c2w[:, :3, :3]
        out[:, :3, 3] = self.points(c2w[:, :3, 3])
        return out


def smallest_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rotation by the smallest angle taking unit vector a to unit vector b (Rodrigues)."""
    v, c = np.cross(a, b), float(a @ b)
    if c < -1.0 + 1e-10:  # opposite: a half turn about any axis perpendicular to a
        helper = np.eye(3)[int(np.argmin(np.abs(a)))]
        k = np.cross(a, helper)
        k /= np.linalg.norm(k)
        return 2.0 * np.outer(k, k) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def frame_360(c2w: np.ndarray, source: str) -> Frame360:
    """The authors' framing of (N, 4, 4) OpenGL poses (module docstring): camera centroid, mean up to +z,
    cameras in the unit ball."""
    centre = c2w[:, :3, 3].mean(0)
    radius = float(np.linalg.norm(c2w[:, :3, 3] - centre, axis=1).max())
    if radius <= 1e-9 * max(1.0, float(np.abs(centre).max())):
        raise DatasetError(f"{source}: all {len(c2w)} camera centres coincide, so the capture cannot be framed")
    down = -c2w[:, :3, 1].sum(0)
    norm = np.linalg.norm(down)
    if norm < 1e-9 * len(c2w):
        raise DatasetError(f"{source}: the cameras' up axes cancel out, so the capture has no mean up direction")
    rotation = RELABEL @ smallest_rotation(down / norm, np.array([0.0, 0.0, 1.0]))
    return Frame360(centre, rotation, 1.0 / radius)


def outside_fraction(points: np.ndarray, bound: float) -> float:
    """Fraction of (M, 3) framed points outside [-bound, bound]^3."""
    return float((np.abs(points).max(axis=1) > bound).mean()) if len(points) else 0.0


def load_mipnerf360(
    path: str | Path, downscale: int = 1, device: torch.device | str = "cpu", bound: float = BOUND
) -> Scene:
    """Load a Mip-NeRF 360 scene folder (module docstring); downscale picks images_<downscale>/."""
    folder = Path(path)
    if not folder.is_dir():
        raise DatasetError(f"scene folder {folder} does not exist")
    downscale = check_downscale(downscale)
    sparse = find_sparse_model(folder)
    if sparse is None:
        raise DatasetError(
            f"{folder}: a Mip-NeRF 360 scene needs its COLMAP model sparse/0/ (cameras, images, points3D .bin or "
            ".txt); poses_bounds.npy alone does not hold the sparse points"
        )
    image_dir, extra = choose_image_folder(folder, downscale)
    capture = read_capture(sparse)
    paths = match_images(capture, image_dir)
    images = read_images(paths, extra)
    h, w = images.shape[1:3]
    intr = colmap_intrinsics(capture, w, h)
    frame = frame_360(capture.c2w, str(sparse))
    c2w = frame.poses(capture.c2w)
    depths = capture.extremes if capture.extremes is not None else capture.bounds
    bounds = depths * frame.scale  # z-depths scale with the frame; a rotation and a shift leave them
    notes = []
    framed_points = frame.points(capture.points)
    outside = outside_fraction(framed_points, bound)
    if outside > OUTSIDE_NOTE_FRACTION:
        notes.append(
            f"{sparse}: {100 * outside:.1f} % of the sparse points lie outside the box [-{bound:g}, {bound:g}]^3 "
            "(cameras in the unit ball): their content is clipped; the authors use bound 16 for outdoor scenes"
        )
    train, test = holdout_splits(images, c2w, bounds, intr, paths, str(sparse), device)
    box = (framed_points.min(0).tolist(), framed_points.max(0).tolist()) if len(framed_points) else None
    return Scene(
        name=folder.resolve().name,
        kind="mipnerf360",
        train=train,
        test=test,
        bound=float(bound),
        near=MIN_NEAR,
        path=str(folder),
        poses_source=str(sparse),
        notes=notes,
        content_box=box,
    )
