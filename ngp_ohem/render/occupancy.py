"""The occupancy (density) grid that lets ray marching skip empty space.

Follows Instant-NGP: a single cascade of ``resolution^3`` cells over the scene box holding an EMA
of the field's density (decay 0.95, new = max(old * decay, sampled density)); every ``update_every``
steps (the authors' torch-ngp schedule) or, with ``ramp``, every ``clamp(step // 16, 1, update_every)``
steps (Instant-NGP's, which updates every step at first: 46 full updates in the first 64 steps, the
whole budget of a short CPU run) it re-samples the density at one random point per chosen cell — all
cells during the first ``warmup_steps`` steps, afterwards a uniformly random quarter plus a quarter
drawn among currently occupied cells. A cell is occupied when its density exceeds
``min(mean density, min_optical_thickness / step_size)`` (Instant-NGP's 0.01 optical thickness per
marching step). Until the first update every cell counts as occupied.

Cascades (the authors' torch-ngp, after Instant-NGP): ``cascades`` nested grids of ``resolution^3``
cells each, cascade c covering ``[-b_c, b_c]^3`` with ``b_c = min(2^c, bound)`` (the last one the whole
box), so cells near the centre are fine and far ones coarse. A sample looks up the cascade
``max(level of its position, level of its step)``: the position's is the binary exponent of its
largest coordinate (``frexp``: the smallest c with max|x| < 2^c), the step's that of
``step * resolution`` (a long step reads a coarse cell), both clamped to [0, cascades - 1]. Updates
sample each cascade alike (after the warm-up a quarter of its cells at random plus a quarter among its
occupied ones); one cascade (the default) is the single grid above, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def auto_cascades(bound: float) -> int:
    """The authors' cascade count, ``1 + ceil(log2 bound)`` (one for a box within [-1, 1]^3)."""
    return 1 + math.ceil(math.log2(bound)) if bound > 1 else 1


class OccupancyGrid:
    """EMA density grid plus the derived boolean occupancy over ``[-bound, bound]^3``."""

    def __init__(
        self,
        bound: float,
        resolution: int,
        step_size: float,
        decay: float = 0.95,
        min_optical_thickness: float = 0.01,
        warmup_steps: int = 256,
        update_every: int = 16,
        ramp: bool = False,
        max_threshold: float | str = "optical",
        device: torch.device | str = "cpu",
        cascades: int = 1,
    ) -> None:
        if cascades < 1:
            raise ValueError(f"the occupancy grid needs at least one cascade, got {cascades}")
        self.bound = float(bound)
        self.resolution = int(resolution)
        self.cascades = int(cascades)
        # b_c = min(2^c, bound), the last cascade the whole box (with one cascade: the box itself).
        self.cascade_bounds = [min(2.0**c, self.bound) for c in range(self.cascades - 1)] + [self.bound]
        self._bounds_tensor = torch.tensor(self.cascade_bounds, dtype=torch.float32, device=device)
        self.decay = decay
        # The occupancy threshold is min(mean density, this): Instant-NGP's optical-thickness bound, or
        # a fixed density (the authors' torch-ngp: 10).
        self.density_threshold = (
            min_optical_thickness / step_size if max_threshold == "optical" else float(max_threshold)
        )
        self.warmup_steps = warmup_steps
        self.update_every = update_every
        self.ramp = ramp
        n = self.n_cells
        self.density = torch.zeros(n, device=device)
        self.occupied = torch.ones(n, dtype=torch.bool, device=device)
        self.visible = torch.ones(n, dtype=torch.bool, device=device)
        self.updates = 0

    @torch.no_grad()
    def mark_unseen(
        self, poses: torch.Tensor, fx: float, fy: float, cx: float, cy: float, width: int, height: int
    ) -> None:
        """Exclude cells that no training camera sees (as torch-ngp's ``mark_untrained_grid``).

        Such cells never receive a gradient, so their density would stay at its initial value and
        keep them occupied forever (for forward-facing LLFF scenes, most of the box). A cell counts
        as seen when its centre, padded by its half-diagonal, projects inside some training image.
        """
        cells = torch.arange(self.n_cells, device=self.density.device)
        centres = self.cell_points(cells, torch.full((self.n_cells, 3), 0.5, device=cells.device))
        half_diag = (2.0 * self.cell_bounds(cells) / self.resolution) * 0.5 * 3**0.5
        seen = torch.zeros(self.n_cells, dtype=torch.bool, device=self.density.device)
        for pose in poses.to(self.density.device).float():
            local = (centres - pose[:3, 3]) @ pose[:3, :3]  # world -> camera (OpenGL: looks along -z)
            depth = -local[:, 2]
            front = depth > -half_diag
            z = depth.clamp(min=1e-6)
            u = cx + fx * local[:, 0] / z
            v = cy - fy * local[:, 1] / z
            pad_u, pad_v = fx * half_diag / z, fy * half_diag / z
            inside = (u > -pad_u) & (u < width + pad_u) & (v > -pad_v) & (v < height + pad_v)
            seen |= front & (inside | (depth.abs() <= half_diag))
        self.visible = seen
        self.occupied &= seen

    @property
    def cells_per_cascade(self) -> int:
        return self.resolution**3

    @property
    def n_cells(self) -> int:
        return self.cascades * self.cells_per_cascade

    def cell_bounds(self, cells: torch.Tensor) -> torch.Tensor:
        """Half-side b_c (N,) of the cascade each flat cell index belongs to."""
        return self._bounds_tensor.to(cells.device)[cells // self.cells_per_cascade]

    def cascade_of(self, positions: torch.Tensor, steps: torch.Tensor | None = None) -> torch.Tensor:
        """The cascade (N,) a sample reads: max(level of its position, level of its step)."""
        top = self.cascades - 1
        level = torch.frexp(positions.abs().amax(-1)).exponent.to(torch.int64).clamp_(0, top)
        if steps is not None:
            by_step = torch.frexp(steps * float(self.resolution)).exponent.to(torch.int64).clamp_(0, top)
            level = torch.maximum(level, by_step)
        return level

    def cell_index(self, positions: torch.Tensor, steps: torch.Tensor | None = None) -> torch.Tensor:
        """Flat cell index (N,) of world positions (N, 3) taking steps (N,) (used only with cascades);
        positions outside a cascade are clamped to its edge cells."""
        r = self.resolution
        if self.cascades == 1:
            rel = (positions + self.bound) / (2.0 * self.bound) * r
            level = None
        else:
            level = self.cascade_of(positions, steps)
            b = self._bounds_tensor.to(positions.device)[level][..., None]
            rel = (positions + b) / (2.0 * b) * r
        ijk = rel.to(torch.int64).clamp_(0, r - 1)
        index = (ijk[..., 0] * r + ijk[..., 1]) * r + ijk[..., 2]
        return index if level is None else index + level * self.cells_per_cascade

    def cell_points(self, cells: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """World points (N, 3) at ``offset`` (N, 3) in [0, 1)^3 inside each flat cell (0.5: its centre)."""
        r = self.resolution
        local = cells % self.cells_per_cascade
        ijk = torch.stack([local // (r * r), (local // r) % r, local % r], dim=-1).float()
        bound = self.cell_bounds(cells)[:, None]
        return (ijk + offset) / r * (2.0 * bound) - bound

    def cell_centres_jittered(self, cells: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One uniformly random point (N, 3) in each cell."""
        return self.cell_points(cells, torch.rand(cells.shape[0], 3, device=cells.device, generator=generator))

    def interval(self, step: int) -> int:
        """Steps between updates: ``update_every``, or with ``ramp`` every step at first, growing to
        ``update_every`` (Instant-NGP)."""
        if not self.ramp:
            return self.update_every
        return min(max(step // 16, 1), self.update_every)

    def due(self, step: int) -> bool:
        return step > 0 and step % self.interval(step) == 0

    def choose_cells(self, step: int, generator: torch.Generator | None) -> torch.Tensor:
        device = self.density.device
        if step < self.warmup_steps:
            return torch.arange(self.n_cells, device=device)
        per, quarter = self.cells_per_cascade, self.cells_per_cascade // 4
        parts = []
        for c in range(self.cascades):  # each cascade alike, as the authors' update does
            uniform = torch.randint(0, per, (quarter,), device=device, generator=generator) + c * per
            parts.append(uniform)
            occupied = self.occupied[c * per : (c + 1) * per].nonzero().squeeze(1) + c * per
            if occupied.numel() > 0:
                pick = torch.randint(0, occupied.numel(), (quarter,), device=device, generator=generator)
                parts.append(occupied[pick])
        return torch.cat(parts)

    @torch.no_grad()
    def update(
        self,
        step: int,
        density_fn: Callable[[torch.Tensor], torch.Tensor],
        generator: torch.Generator | None = None,
        chunk: int = 1 << 17,
    ) -> None:
        """Re-sample the density at the chosen cells and refresh the occupancy."""
        cells = self.choose_cells(step, generator)
        new = torch.empty(cells.shape[0], device=cells.device)
        for start in range(0, cells.shape[0], chunk):
            part = cells[start : start + chunk]
            new[start : start + chunk] = density_fn(self.cell_centres_jittered(part, generator))
        decayed = self.density * self.decay
        candidate = decayed.clone()
        candidate.scatter_reduce_(0, cells, new, reduce="amax", include_self=True)
        self.density = candidate
        mean = self.density[self.visible].mean() if bool(self.visible.any()) else self.density.mean()
        threshold = torch.clamp(mean, max=self.density_threshold)
        self.occupied = (self.density > threshold) & self.visible
        self.updates += 1

    def occupancy_fraction(self) -> float:
        return float(self.occupied.float().mean())

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {"density": self.density, "occupied": self.occupied, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        if state["density"].numel() != self.n_cells:
            raise ValueError(f"occupancy grid of {state['density'].numel()} cells, expected {self.n_cells}")
        self.density = state["density"].to(self.density.device)
        self.occupied = state["occupied"].to(self.occupied.device)
        self.updates = int(state["updates"])
