"""Ray marching through the occupancy grid to *packed* samples.

Samples sit at ``t_k = t_near + (k + u) * dt`` along each ray, with a constant step
``dt = 2 * sqrt(3) * bound / max_steps`` (Instant-NGP's 1024 steps across the box diagonal,
cone angle 0) and ``u`` a per-ray jitter in training, 0.5 at evaluation. Candidates in unoccupied
cells are dropped, so only samples in occupied space are handed to the network; the survivors are
packed ray by ray (sorted by ray index), which is what compositing and mining consume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ngp_ohem.render.occupancy import OccupancyGrid


def step_size(bound: float, max_steps: int) -> float:
    return 2.0 * math.sqrt(3.0) * bound / max_steps


@dataclass
class PackedSamples:
    """Samples of ``n_rays`` rays, concatenated ray after ray."""

    positions: torch.Tensor  # (N, 3)
    directions: torch.Tensor  # (N, 3) unit
    deltas: torch.Tensor  # (N,) segment length each sample stands for
    ray_index: torch.Tensor  # (N,) int64, non-decreasing
    n_rays: int

    @property
    def n_samples(self) -> int:
        return int(self.positions.shape[0])

    def subset(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions and directions of a subset of samples (what a network call needs)."""
        return self.positions[index], self.directions[index]


def ray_box_intersection(origins: torch.Tensor, dirs: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances (R,) of rays with the box [-bound, bound]^3 (exit < entry: miss)."""
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0 = (-bound - origins) / safe
    t1 = (bound - origins) / safe
    t_near = torch.minimum(t0, t1).amax(-1)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far


@torch.no_grad()
def march_rays(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    grid: OccupancyGrid,
    near: float,
    max_steps: int,
    jitter: torch.Tensor | None = None,
    max_samples: int | None = None,
    candidate_chunk: int = 1 << 22,
) -> PackedSamples:
    """March rays (R, 3) through the occupied cells of ``grid``.

    ``jitter`` (R,) in [0, 1) offsets the samples of each ray (None: 0.5, deterministic).
    ``max_samples`` caps the total: only the longest prefix of rays whose samples fit is kept, so
    ``n_rays`` of the result may be smaller than R (the caller drops the remaining targets).
    """
    bound = grid.bound
    dt = step_size(bound, max_steps)
    t_near, t_far = ray_box_intersection(origins, dirs, bound)
    t_near = t_near.clamp(min=near)
    u = torch.full_like(t_near, 0.5) if jitter is None else jitter
    # Sample k sits at t_near + (k + u) dt: count only those before the exit point.
    n_steps = ((t_far - t_near) / dt - u).ceil().clamp(0, max_steps).to(torch.int64)
    longest = int(n_steps.max()) if n_steps.numel() else 0
    n_rays = origins.shape[0]
    if longest == 0:
        return _empty(origins, n_rays)
    rays_per_chunk = max(1, candidate_chunk // longest)
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    k = torch.arange(longest, device=origins.device)
    for start in range(0, n_rays, rays_per_chunk):
        sl = slice(start, start + rays_per_chunk)
        t = t_near[sl, None] + (k[None, :] + u[sl, None]) * dt  # (r, S)
        pos = origins[sl, None, :] + t[..., None] * dirs[sl, None, :]
        valid = k[None, :] < n_steps[sl, None]
        valid &= grid.occupied[grid.cell_index(pos)]
        ray_local, step_idx = valid.nonzero(as_tuple=True)
        parts.append((ray_local + start, t[ray_local, step_idx]))
    ray_index = torch.cat([p[0] for p in parts])
    t = torch.cat([p[1] for p in parts])
    if max_samples is not None and ray_index.numel() > max_samples:
        counts = torch.bincount(ray_index, minlength=n_rays)
        fits = counts.cumsum(0) <= max_samples
        n_rays = int(fits.sum())
        keep = ray_index < n_rays
        ray_index, t = ray_index[keep], t[keep]
    d = dirs[ray_index]
    positions = origins[ray_index] + t[:, None] * d
    deltas = torch.full_like(t, dt)
    return PackedSamples(positions, d, deltas, ray_index, n_rays)


def _empty(origins: torch.Tensor, n_rays: int) -> PackedSamples:
    z3 = origins.new_zeros(0, 3)
    return PackedSamples(
        z3, z3.clone(), origins.new_zeros(0), torch.zeros(0, dtype=torch.int64, device=origins.device), n_rays
    )
