"""Framing a forward-facing capture into the renderer's box ``[-bound, bound]^3``.

A capture arrives in an arbitrary world frame (COLMAP's): camera-to-world poses plus, per camera,
the z-depth range ``[near, far]`` of the surface it sees (LLFF's ``poses_bounds.npy`` stores the
0.1 / 99.9 percentile depths of each image's sparse points; :mod:`ngp_ohem.data.colmap` computes
the same from ``sparse/0``). The framing, pinned in :mod:`ngp_ohem.protocol`:

1. rotate and translate so the *average camera* (mean centre, mean viewing axis, mean up) is the
   identity: the mean view looks down -z, so the forward-facing frustum is aligned with the box;
2. take the axis-aligned bounding box of every camera centre and of every camera's *view frustum
   between its near and far bound* (8 corners per camera: the frustum is convex, so its corners
   bound it); move its centre to the origin;
3. scale uniformly so that its longest side spans the box exactly.

Guarantee (tested on all eight real LLFF pose files): every camera centre, and every point on every
pixel ray of every camera whose z-depth lies between that camera's near and far bound, is inside the
box. Content beyond a camera's far bound (the few sparse points past the 99.9th percentile) is
clipped where the box ends, as the authors' sparse-point AABB clips it.

It is the largest framing that holds the guarantee, so the foreground keeps as many hash-grid and
occupancy cells as the box allows. The older rule (nearest bound at depth 4/3, origin at mid depth)
left the foreground of 7 of the 8 LLFF scenes outside the box; on fern the new rule differs from it
by 1.6 % in scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ngp_ohem.errors import DatasetError


@dataclass(frozen=True)
class Framed:
    """A capture in the box frame: poses (N, 4, 4) OpenGL and bounds (N, 2) z-depths."""

    c2w: np.ndarray
    bounds: np.ndarray


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def average_pose(c2w: np.ndarray) -> np.ndarray:
    """The 4x4 "average camera" of (N, 3|4, 4) OpenGL poses: mean centre, mean axis, mean up."""
    z = _normalize(c2w[:, :3, 2].sum(0))
    x = _normalize(np.cross(c2w[:, :3, 1].sum(0), z))
    y = np.cross(z, x)
    avg = np.eye(4)
    avg[:3, :3] = np.stack([x, y, z], axis=1)
    avg[:3, 3] = c2w[:, :3, 3].mean(0)
    return avg


def corner_directions(width: float, height: float, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Camera-space directions (4, 3) through the image corners, scaled to z-depth 1 (OpenGL: z = -1)."""
    us, vs = (0.0, width), (0.0, height)
    return np.array([[(u - cx) / fx, -(v - cy) / fy, -1.0] for u in us for v in vs])


def frustum_points(c2w: np.ndarray, bounds: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Camera centres and the 8 near/far frustum corners of every camera, shape (N * 9, 3)."""
    centres = c2w[:, :3, 3]
    rays = np.einsum("nij,kj->nki", c2w[:, :3, :3], corners)  # (N, 4, 3) at z-depth 1
    near = centres[:, None] + bounds[:, 0, None, None] * rays
    far = centres[:, None] + bounds[:, 1, None, None] * rays
    return np.concatenate([centres, near.reshape(-1, 3), far.reshape(-1, 3)])


def frame_capture(c2w: np.ndarray, bounds: np.ndarray, corners: np.ndarray, bound: float, source: str) -> Framed:
    """Frame (N, 4, 4) OpenGL poses with (N, 2) depth bounds into ``[-bound, bound]^3`` (module docstring).

    ``corners`` (4, 3) are the image-corner directions of :func:`corner_directions`; ``source`` names
    the file the poses came from, for error messages.
    """
    if len(c2w) > 1 and np.ptp(c2w[:, :3, 3], axis=0).max() <= 1e-9 * max(1.0, float(bounds.max())):
        raise DatasetError(
            f"{source}: all {len(c2w)} camera centres are identical, so the capture has no parallax to train on"
        )
    aligned = np.linalg.inv(average_pose(c2w)) @ c2w
    points = frustum_points(aligned, bounds, corners)
    lo, hi = points.min(0), points.max(0)
    scale = bound / (0.5 * float((hi - lo).max()))
    out = aligned.copy()
    out[:, :3, 3] = (aligned[:, :3, 3] - 0.5 * (lo + hi)) * scale
    return Framed(out, bounds * scale)
