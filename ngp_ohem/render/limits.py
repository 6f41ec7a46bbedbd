"""Per-ray limits inside the box: each camera's depth range and the content's box (COLMAP captures).

The authors' COLMAP loader (``nerf/colmap_provider.py``) knows more than the renderer's cube: the
sparse points bound the content (their marching box is the points' bounding box, clipped to
``[-bound, bound]^3``), and with ``--enable_cam_near_far`` (their Mip-NeRF 360 script) every camera
marches only between the nearest and the farthest sparse point it observes (z-depths, the near one
raised to ``--min_near``). :class:`RayLimits` turns both into per-ray ``[t_near, t_far]`` for our unit
ray directions (a z-depth z is the distance ``z / cos`` along a ray at angle ``acos(cos)`` to the
camera's axis); marching then intersects them with the cube, in training and in evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RayLimits:
    """Limits of one split's rays: ``near_far`` (N, 2) z-depths per camera, ``forward`` (N, 3) the cameras'
    unit viewing axes, ``box`` the content's (lo, hi) corners; any of them may be absent."""

    near_far: torch.Tensor | None
    forward: torch.Tensor | None
    box: tuple[torch.Tensor, torch.Tensor] | None
    min_near: float = 0.0

    @classmethod
    def of_split(
        cls, poses: torch.Tensor, depth_bounds: torch.Tensor | None, box: tuple[list[float], list[float]] | None,
        min_near: float, camera_near_far: bool,
    ) -> RayLimits | None:  # fmt: skip
        """The limits a split's rays get (None when neither applies)."""
        use_depth = camera_near_far and depth_bounds is not None
        if not use_depth and box is None:
            return None
        device = poses.device
        corners = None if box is None else tuple(torch.tensor(c, dtype=torch.float32, device=device) for c in box)
        return cls(
            near_far=depth_bounds.to(device).float() if use_depth else None,
            forward=-poses[:, :3, 2].float() if use_depth else None,
            box=corners,  # type: ignore[arg-type]
            min_near=min_near,
        )

    def for_rays(
        self, origins: torch.Tensor, dirs: torch.Tensor, cameras: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(t_near, t_far) (R,) of rays (unit ``dirs``) of the given cameras (R,) (indices into the split)."""
        n = origins.shape[0]
        t_near = torch.full((n,), 0.0, device=origins.device)
        t_far = torch.full((n,), float("inf"), device=origins.device)
        if self.near_far is not None and self.forward is not None:
            cos = (dirs * self.forward[cameras]).sum(-1).clamp(min=1e-6)
            depth = self.near_far[cameras]
            t_near = depth[:, 0].clamp(min=self.min_near) / cos
            t_far = depth[:, 1] / cos
        if self.box is not None:
            lo, hi = self.box
            safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
            t0, t1 = (lo - origins) / safe, (hi - origins) / safe
            t_near = torch.maximum(t_near, torch.minimum(t0, t1).amax(-1))
            t_far = torch.minimum(t_far, torch.maximum(t0, t1).amin(-1))
        return t_near, t_far


def clip(
    t_near: torch.Tensor, t_far: torch.Tensor, limits: tuple[torch.Tensor, torch.Tensor] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cube's [t_near, t_far] narrowed to per-ray limits (unchanged without them)."""
    if limits is None:
        return t_near, t_far
    return torch.maximum(t_near, limits[0]), torch.minimum(t_far, limits[1])
