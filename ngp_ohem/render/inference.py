"""Inference rendering with early ray termination, for evaluation images.

Training marches every occupied sample up front (the loss needs the packed batch). For rendering
whole test views that wastes most of the work behind opaque surfaces, so here rays advance in
rounds of K steps: each round marches the next K steps of the still-active rays, evaluates the field
on the occupied ones, composites the segment, and retires rays whose transmittance fell below the
threshold or that left the box. K grows as rays retire, keeping every round about the same size.
The sample positions are the training ones with jitter 0.5, so the result equals compositing the
full packed march up to the termination threshold.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ngp_ohem.render.composite import composite
from ngp_ohem.render.limits import clip
from ngp_ohem.render.march import Stepping, ray_box_intersection
from ngp_ohem.render.occupancy import OccupancyGrid

Field = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def render_rays(
    density_and_color: Field,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    grid: OccupancyGrid,
    near: float,
    max_steps: int,
    background: torch.Tensor,
    t_threshold: float = 1e-4,
    candidates_per_round: int = 1 << 19,
    stepping: Stepping | None = None,
    limits: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Colours (R, 3) of rays; ``density_and_color(x, d)`` returns activated (sigma, rgb)."""
    stepping = stepping or Stepping(grid.bound, max_steps)
    t_near, t_far = clip(*ray_box_intersection(origins, dirs, grid.bound), limits)
    t_near = t_near.clamp(min=near)
    half = torch.full_like(t_near, 0.5)
    first, n_steps = stepping.count(t_near, t_far, half)
    n_rays = origins.shape[0]
    transmittance = torch.ones(n_rays, device=origins.device)
    color = torch.zeros(n_rays, 3, device=origins.device)
    next_step = torch.zeros(n_rays, dtype=torch.int64, device=origins.device)
    active = (n_steps > 0).nonzero().squeeze(1)
    while active.numel() > 0:
        k_round = int(min(max(candidates_per_round // active.numel(), 16), max_steps))
        k = next_step[active, None] + torch.arange(k_round, device=origins.device)[None]
        t, width = stepping.at(t_near[active], first[active], k, half[active])
        pos = origins[active, None, :] + t[..., None] * dirs[active, None, :]
        valid = (k < n_steps[active, None]) & (t < t_far[active, None]) & grid.occupied[grid.cell_index(pos, width)]
        local_ray, step_idx = valid.nonzero(as_tuple=True)
        if local_ray.numel() > 0:
            x = pos[local_ray, step_idx]
            d = dirs[active][local_ray]
            sigma, rgb = density_and_color(x, d)
            zeros = torch.zeros(active.numel(), 3, device=origins.device)
            seg = composite(sigma, rgb, width[local_ray, step_idx], local_ray, active.numel(), zeros, t_threshold)
            color[active] += transmittance[active, None] * seg.color
            transmittance[active] *= 1.0 - seg.opacity
        next_step[active] += k_round
        keep = (next_step[active] < n_steps[active]) & (transmittance[active] > t_threshold)
        active = active[keep]
    return color + transmittance[:, None] * background
