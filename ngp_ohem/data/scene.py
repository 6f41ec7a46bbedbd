"""The one in-memory scene type that both dataset formats load into.

Conventions (pinned here so every loader and renderer agrees):
* poses are camera-to-world 4x4 matrices in the OpenGL/Blender camera convention: the camera
  looks along its -z axis, +y is up, +x is right;
* images are float32 in [0, 1], shape (N, H, W, C) with C = 4 (RGBA, straight alpha) for the
  Blender format and C = 3 for LLFF;
* the scene content lies inside the axis-aligned box [-bound, bound]^3 (world units after the
  loader's normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels; the principal point is at (cx, cy) with pixel centres at +0.5."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


@dataclass
class Split:
    """One split (train or test) of a scene: images, poses and shared intrinsics."""

    images: torch.Tensor  # (N, H, W, C) float32 in [0, 1]
    poses: torch.Tensor  # (N, 4, 4) float32 camera-to-world
    intrinsics: Intrinsics
    names: list[str]  # image file names, for messages and renders
    depth_bounds: torch.Tensor | None = None  # (N, 2) z-depth near/far of the content each camera sees

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def has_alpha(self) -> bool:
        return int(self.images.shape[-1]) == 4


@dataclass
class Scene:
    """A loaded scene: both splits plus the bounding box and protocol facts of its format."""

    name: str
    kind: str  # "blender" or "llff"
    train: Split
    test: Split
    bound: float  # content lies in [-bound, bound]^3
    near: float  # nearest distance a ray sample may have from its camera
    path: str  # folder it was loaded from
    poses_source: str = ""  # the file the poses (and their framing) came from
    notes: list[str] = field(default_factory=list)  # loader warnings a run records in summary.json
    # (lo, hi) corners of the content (the sparse points' bounding box of a COLMAP capture), or None
    content_box: tuple[list[float], list[float]] | None = None
