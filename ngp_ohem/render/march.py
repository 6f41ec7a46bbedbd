"""Ray marching through the occupancy grid to *packed* samples.

Where samples sit along a ray is a :class:`Stepping`: with cone angle 0 (Instant-NGP's synthetic
setting) at ``t_k = t_near + (k + u) * dt`` with a constant ``dt = 2 * sqrt(3) * bound / max_steps``
(1024 steps across the box diagonal); with a cone angle c > 0 (Instant-NGP's cone tracing, the
``dt_gamma`` of torch-ngp and of the paper's code for real scenes) the step grows with distance,
``dt(t) = clamp(c * t, dt_min, dt_max)``. ``u`` is a per-ray jitter in training, 0.5 at evaluation.
Candidates in unoccupied cells are dropped, so only samples in occupied space are handed to the
network; the survivors are packed ray by ray (sorted by ray index), which is what compositing and
mining consume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ngp_ohem.field.native import load_render_native
from ngp_ohem.render.limits import clip
from ngp_ohem.render.occupancy import OccupancyGrid

_NONE = torch.zeros(0)


def step_size(bound: float, max_steps: int) -> float:
    return 2.0 * math.sqrt(3.0) * bound / max_steps


# Instant-NGP's occupancy grid resolution: the largest cone step is one cell diagonal of a 128^3 grid
# over the box (torch-ngp's dt_max), whatever resolution our own grid uses.
CONE_MAX_STEP_CELLS = 128


class Stepping:
    """Sample distances along rays: constant steps, or steps that grow with distance (cone tracing).

    With a cone angle, all rays share one sequence of interval boundaries ``b_0 = start < b_1 < ...``
    with widths ``clamp(cone_angle * b_j, dt_min, dt_max)``; a ray's samples are the intervals that
    start inside its [t_near, t_far), each at ``b_j + u * width_j``, and stand for ``width_j``. Far
    space, which few pixels see, gets fewer samples: on a forward-facing LLFF scene in a [-4, 4]^3
    box this cuts the samples per ray by about 2-3x. ``min_step`` is ``dt_min`` (default: 1024 steps
    across the box diagonal, Instant-NGP's; the authors' code uses ``2 sqrt(3) / 1024`` whatever the box).
    """

    def __init__(
        self,
        bound: float,
        max_steps: int,
        cone_angle: float = 0.0,
        start: float = 0.0,
        horizon: float = 0.0,
        min_step: float | None = None,
    ) -> None:
        if cone_angle < 0:
            raise ValueError(f"cone_angle must be >= 0, got {cone_angle}")
        self.dt_min = step_size(bound, max_steps) if min_step is None else float(min_step)
        self.dt_max = max(self.dt_min, step_size(bound, CONE_MAX_STEP_CELLS))
        self.cone_angle = cone_angle
        self.max_steps = max_steps
        self.boundaries: torch.Tensor | None = None
        self._edge_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        if cone_angle > 0:
            # Far enough for any ray that starts within ``horizon`` of the centre and crosses the box.
            stop = max(horizon, start) + 2.0 * math.sqrt(3.0) * bound + self.dt_max
            b, edges = max(start, 0.0), []
            while b <= stop:
                edges.append(b)
                b += min(max(cone_angle * b, self.dt_min), self.dt_max)
            edges.append(b)
            self.boundaries = torch.tensor(edges, dtype=torch.float64)

    def _edges(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Interval starts and widths (float32, on ``device``), computed once, not per step."""
        assert self.boundaries is not None
        if self._edge_cache is None or self._edge_cache[0].device != device:
            b = self.boundaries.to(device)
            self._edge_cache = (b[:-1].float(), (b[1:] - b[:-1]).float())
        return self._edge_cache

    def count(self, t_near: torch.Tensor, t_far: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(first interval index, number of steps) per ray; the first index is 0 for constant steps."""
        if self.boundaries is None:
            n = ((t_far - t_near) / self.dt_min - u).ceil()
            first = torch.zeros_like(t_near, dtype=torch.int64)
        else:
            starts, _ = self._edges(t_near.device)
            first = torch.searchsorted(starts, t_near.contiguous())
            n = (torch.searchsorted(starts, t_far.contiguous()) - first).to(t_near.dtype)
        return first, n.clamp(0, self.max_steps).to(torch.int64)

    def at(
        self, t_near: torch.Tensor, first: torch.Tensor, k: torch.Tensor, u: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances and interval lengths of steps ``k`` (r, S) of rays with ``t_near``, ``first``, ``u`` (r,)."""
        if self.boundaries is None:
            t = t_near[:, None] + (k + u[:, None]) * self.dt_min
            return t, torch.full_like(t, self.dt_min)
        starts, widths = self._edges(t_near.device)
        j = (first[:, None] + k).clamp(max=starts.numel() - 1)
        width = widths[j]
        return starts[j] + u[:, None] * width, width


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
        return self.positions.index_select(0, index), self.directions.index_select(0, index)


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
    stepping: Stepping | None = None,
    use_native: bool = True,
    limits: tuple[torch.Tensor, torch.Tensor] | None = None,
    use_simd: bool = True,
) -> PackedSamples:
    """March rays (R, 3) through the occupied cells of ``grid``.

    ``jitter`` (R,) in [0, 1) offsets the samples of each ray (None: 0.5, deterministic).
    ``stepping`` spaces the samples (None: constant steps of ``step_size(grid.bound, max_steps)``).
    ``limits`` (t_near, t_far) (R,) narrow each ray further (render/limits.py).
    ``max_samples`` caps the total: only the longest prefix of rays whose samples fit is kept, so
    ``n_rays`` of the result may be smaller than R (the caller drops the remaining targets).
    On the CPU the fused kernel ``csrc/render_cpu.cpp`` walks each ray instead of filtering the
    (rays x longest ray) candidate tensor below; ``use_native=False`` runs this reference, which the
    tests compare it against sample for sample. ``use_simd=False`` makes the kernel walk with its scalar
    code (what a machine without AVX-512 runs), so the tests check both walks on any machine.
    """
    stepping = stepping or Stepping(grid.bound, max_steps)
    t_near, t_far = clip(*ray_box_intersection(origins, dirs, grid.bound), limits)
    t_near = t_near.clamp(min=near)
    u = torch.full_like(t_near, 0.5) if jitter is None else jitter
    first, n_steps = stepping.count(t_near, t_far, u)
    on_cpu = origins.device.type == "cpu" and origins.dtype == torch.float32 and dirs.dtype == torch.float32
    native = load_render_native() if use_native and on_cpu else None
    if native is not None:
        starts, widths = stepping._edges(origins.device) if stepping.boundaries is not None else (_NONE, _NONE)
        pos, d, deltas, ray_index, kept = native.march(
            origins.float().contiguous(), dirs.float().contiguous(), t_near.contiguous(), t_far.contiguous(),
            u.float().contiguous(), first.contiguous(), n_steps.contiguous(), starts, widths, stepping.dt_min,
            grid.cascade_bounds, grid.occupied.contiguous(), grid.resolution,
            -1 if max_samples is None else max_samples, use_simd,
        )  # fmt: skip
        return PackedSamples(pos, d, deltas, ray_index, int(kept))
    longest = int(n_steps.max()) if n_steps.numel() else 0
    n_rays = origins.shape[0]
    if longest == 0:
        return _empty(origins, n_rays)
    rays_per_chunk = max(1, candidate_chunk // longest)
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    k = torch.arange(longest, device=origins.device)[None, :]
    for start in range(0, n_rays, rays_per_chunk):
        sl = slice(start, start + rays_per_chunk)
        t, width = stepping.at(t_near[sl], first[sl], k, u[sl])  # (r, S)
        pos = origins[sl, None, :] + t[..., None] * dirs[sl, None, :]
        valid = (k < n_steps[sl, None]) & (t < t_far[sl, None])
        valid &= grid.occupied[grid.cell_index(pos, width)]
        ray_local, step_idx = valid.nonzero(as_tuple=True)
        parts.append((ray_local + start, t[ray_local, step_idx], width[ray_local, step_idx]))
    ray_index = torch.cat([p[0] for p in parts])
    t = torch.cat([p[1] for p in parts])
    deltas = torch.cat([p[2] for p in parts])
    if max_samples is not None and ray_index.numel() > max_samples:
        counts = torch.bincount(ray_index, minlength=n_rays)
        fits = counts.cumsum(0) <= max_samples
        n_rays = int(fits.sum())
        keep = ray_index < n_rays
        ray_index, t, deltas = ray_index[keep], t[keep], deltas[keep]
    d = dirs[ray_index]
    positions = origins[ray_index] + t[:, None] * d
    return PackedSamples(positions, d, deltas, ray_index, n_rays)


def _empty(origins: torch.Tensor, n_rays: int) -> PackedSamples:
    z3 = origins.new_zeros(0, 3)
    return PackedSamples(
        z3, z3.clone(), origins.new_zeros(0), torch.zeros(0, dtype=torch.int64, device=origins.device), n_rays
    )
