"""Occupancy grid, packed ray marching, compositing and the early-terminating inference renderer."""

from __future__ import annotations

import io
import math

import pytest
import torch

from ngp_ohem.render.composite import composite
from ngp_ohem.render.inference import render_rays
from ngp_ohem.render.march import Stepping, march_rays, ray_box_intersection, step_size
from ngp_ohem.render.occupancy import OccupancyGrid

BOUND = 1.0
MAX_STEPS = 128
DT = step_size(BOUND, MAX_STEPS)


def rays_at_box(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n rays from a sphere of radius 3, each through a random point of [-0.5, 0.5]^3 (all hit the box)."""
    gen = torch.Generator().manual_seed(seed)
    origins = torch.randn(n, 3, generator=gen)
    origins = 3.0 * origins / origins.norm(dim=-1, keepdim=True)
    dirs = torch.rand(n, 3, generator=gen) - 0.5 - origins
    return origins, dirs / dirs.norm(dim=-1, keepdim=True)


def full_grid(resolution: int = 8) -> OccupancyGrid:
    return OccupancyGrid(BOUND, resolution, DT)


# -- compositing --------------------------------------------------------------------------------
def test_composite_hand_computed() -> None:
    # Ray 0: two samples; ray 1: none; ray 2: three samples, the first opaque enough that the
    # transmittance before the second is exp(-10) < 1e-4 (early termination).
    sigma = torch.tensor([1.0, 2.0, 10.0, 1.0, 3.0], requires_grad=True)
    deltas = torch.tensor([0.5, 0.25, 1.0, 1.0, 1.0])
    rgb = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.4, 0.6], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]], requires_grad=True
    )
    ray_index = torch.tensor([0, 0, 2, 2, 2])
    background = torch.tensor([[0.1, 0.2, 0.3], [0.7, 0.8, 0.9], [0.0, 0.0, 1.0]])
    out = composite(sigma, rgb, deltas, ray_index, 3, background, t_threshold=1e-4)

    a = 1 - math.exp(-0.5)  # alpha of both samples of ray 0 (tau = 0.5 each)
    w00, w01 = a, math.exp(-0.5) * a
    w20 = 1 - math.exp(-10.0)
    expected_weights = torch.tensor([w00, w01, w20, 0.0, 0.0])
    torch.testing.assert_close(out.weights, expected_weights, atol=1e-6, rtol=0)
    expected_opacity = torch.tensor([1 - math.exp(-1.0), 0.0, w20])
    torch.testing.assert_close(out.opacity, expected_opacity, atol=1e-6, rtol=0)
    expected_color = torch.tensor(
        [
            [w00 * 1.0 + math.exp(-1.0) * 0.1, w01 * 1.0 + math.exp(-1.0) * 0.2, math.exp(-1.0) * 0.3],
            [0.7, 0.8, 0.9],  # no samples: the background
            [w20 * 0.2, w20 * 0.4, w20 * 0.6 + (1 - w20) * 1.0],
        ]
    )
    torch.testing.assert_close(out.color, expected_color, atol=1e-6, rtol=0)

    out.color.sum().backward()
    assert sigma.grad is not None and rgb.grad is not None
    # Samples after termination: zero weight and zero gradient, for density and colour.
    assert (sigma.grad[3:] == 0).all() and (rgb.grad[3:] == 0).all()
    assert (sigma.grad[:3] != 0).all() and (rgb.grad[:3] != 0).all()
    # d colour / d rgb of a live sample is its weight.
    torch.testing.assert_close(rgb.grad[:3], expected_weights[:3, None].expand(3, 3), atol=1e-6, rtol=0)


def test_composite_without_samples_is_the_background() -> None:
    background = torch.rand(4, 3)
    empty = torch.zeros(0)
    out = composite(empty, torch.zeros(0, 3), empty, torch.zeros(0, dtype=torch.int64), 4, background)
    torch.testing.assert_close(out.color, background)
    assert (out.opacity == 0).all() and out.weights.numel() == 0


def test_composite_matches_a_per_ray_loop_on_a_long_batch() -> None:
    gen = torch.Generator().manual_seed(0)
    counts = torch.randint(0, 60, (300,), generator=gen)
    counts[::7] = 0
    ray_index = torch.repeat_interleave(torch.arange(300), counts)
    n = ray_index.numel()
    sigma = torch.rand(n, generator=gen) * 5
    deltas = torch.full((n,), 0.02)
    rgb = torch.rand(n, 3, generator=gen)
    background = torch.rand(300, 3, generator=gen)
    out = composite(sigma, rgb, deltas, ray_index, 300, background)
    start = 0
    for r, c in enumerate(counts.tolist()):
        color, trans = background.new_zeros(3), 1.0
        for i in range(start, start + c):
            if trans <= 1e-4:
                break
            alpha = 1 - math.exp(-float(sigma[i]) * 0.02)
            color += trans * alpha * rgb[i]
            trans *= 1 - alpha
        start += c
        torch.testing.assert_close(out.color[r], color + trans * background[r], atol=1e-5, rtol=0)


# -- marching -----------------------------------------------------------------------------------
def test_empty_grid_yields_no_samples() -> None:
    grid = full_grid()
    grid.occupied[:] = False
    origins, dirs = rays_at_box(32)
    samples = march_rays(origins, dirs, grid, 0.0, MAX_STEPS, torch.rand(32))
    assert samples.n_samples == 0 and samples.positions.shape == (0, 3) and samples.ray_index.numel() == 0
    assert samples.n_rays == 32
    background = torch.rand(32, 3)
    calls = []
    color = render_rays(lambda x, d: calls.append(x) or (x[:, 0], x), origins, dirs, grid, 0.0, MAX_STEPS, background)
    torch.testing.assert_close(color, background)
    assert calls == []


@pytest.mark.parametrize("jittered", [False, True])
def test_full_grid_samples_are_packed_inside_the_box_at_step_spacing(jittered: bool) -> None:
    grid = full_grid()
    origins, dirs = rays_at_box(64, seed=1)
    jitter = torch.rand(64, generator=torch.Generator().manual_seed(2)) if jittered else None
    s = march_rays(origins, dirs, grid, 0.0, MAX_STEPS, jitter)
    assert s.n_rays == 64 and s.n_samples > 64 * 20
    assert s.ray_index.dtype == torch.int64 and (s.ray_index.diff() >= 0).all()
    assert set(s.ray_index.tolist()) == set(range(64))  # every ray crosses the box
    torch.testing.assert_close(s.deltas, torch.full_like(s.deltas, DT))
    torch.testing.assert_close(s.directions, dirs[s.ray_index])
    # Consecutive samples of one ray are exactly one step apart along the ray.
    same = s.ray_index[1:] == s.ray_index[:-1]
    gaps = s.positions[1:][same] - s.positions[:-1][same]
    torch.testing.assert_close(gaps, DT * s.directions[1:][same], atol=1e-5, rtol=0)
    # The samples lie on the ray, inside the box (up to float round-off).
    t = ((s.positions - origins[s.ray_index]) * s.directions).sum(-1)
    t_near, t_far = ray_box_intersection(origins, dirs, BOUND)
    assert (t >= t_near[s.ray_index] - 1e-5).all()
    outside = s.positions.abs().amax(-1) > BOUND + 1e-5
    assert not outside.any(), (
        f"{int(outside.sum())} of {s.n_samples} samples lie outside [-1, 1]^3, up to "
        f"{float(s.positions.abs().max()) - BOUND:.4f} beyond the face (step {DT:.4f})"
    )
    assert (t <= t_far[s.ray_index] + 1e-5).all()


def test_march_only_samples_occupied_cells() -> None:
    grid = full_grid()
    grid.occupied = x_positive_cells(grid)
    origins, dirs = rays_at_box(64, seed=3)
    s = march_rays(origins, dirs, grid, 0.0, MAX_STEPS)
    assert s.n_samples > 0
    assert grid.occupied[grid.cell_index(s.positions)].all()
    full = march_rays(origins, dirs, full_grid(), 0.0, MAX_STEPS)
    assert s.n_samples < full.n_samples


def test_max_samples_keeps_a_prefix_of_rays() -> None:
    grid = full_grid()
    origins, dirs = rays_at_box(40, seed=4)
    full = march_rays(origins, dirs, grid, 0.0, MAX_STEPS)
    counts = torch.bincount(full.ray_index, minlength=40)
    cap = int(counts[:10].sum()) + int(counts[10]) // 2  # 10 whole rays fit, the 11th does not
    capped = march_rays(origins, dirs, grid, 0.0, MAX_STEPS, max_samples=cap)
    assert capped.n_rays == 10
    assert capped.n_samples == int(counts[:10].sum()) <= cap
    assert int(capped.ray_index.max()) == 9
    torch.testing.assert_close(capped.positions, full.positions[: capped.n_samples])
    torch.testing.assert_close(capped.ray_index, full.ray_index[: capped.n_samples])
    # A cap that is not reached changes nothing.
    same = march_rays(origins, dirs, grid, 0.0, MAX_STEPS, max_samples=full.n_samples)
    assert same.n_rays == 40 and same.n_samples == full.n_samples


# -- inference renderer -------------------------------------------------------------------------
class CountingField:
    """An activated field (sigma, rgb) that counts how many samples it was asked for."""

    def __init__(self, density) -> None:
        self.density = density
        self.samples = 0
        self.calls = 0

    @staticmethod
    def color(x: torch.Tensor) -> torch.Tensor:
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0)

    def __call__(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        self.samples += x.shape[0]
        return self.density(x), self.color(x)


def test_inference_stops_at_an_opaque_sample() -> None:
    grid = full_grid()
    origins, dirs = rays_at_box(64, seed=5)
    field = CountingField(lambda x: torch.full((x.shape[0],), 1e4))
    background = torch.full((64, 3), 0.5)
    color = render_rays(field, origins, dirs, grid, 0.0, MAX_STEPS, background, candidates_per_round=64 * 16)
    march = march_rays(origins, dirs, grid, 0.0, MAX_STEPS)  # deterministic: the same sample positions
    first = torch.searchsorted(march.ray_index, torch.arange(64))
    torch.testing.assert_close(color, CountingField.color(march.positions[first]), atol=1e-4, rtol=0)
    assert field.samples <= 64 * 16
    assert field.samples < march.n_samples / 4, (field.samples, march.n_samples)


def test_inference_equals_compositing_the_full_march() -> None:
    grid = full_grid()
    rel = torch.arange(grid.n_cells)
    grid.occupied = (rel % 3) != 0  # a scattered occupancy pattern
    origins, dirs = rays_at_box(96, seed=6)
    field = CountingField(lambda x: 3.0 * torch.exp(-4.0 * (x * x).sum(-1)))
    background = torch.rand(96, 3, generator=torch.Generator().manual_seed(7))
    color = render_rays(field, origins, dirs, grid, 0.0, MAX_STEPS, background, candidates_per_round=96 * 16)
    s = march_rays(origins, dirs, grid, 0.0, MAX_STEPS)
    sigma, rgb = field(s.positions, s.directions)
    expected = composite(sigma, rgb, s.deltas, s.ray_index, 96, background).color
    torch.testing.assert_close(color, expected, atol=1e-4, rtol=0)


# -- cone tracing -------------------------------------------------------------------------------
CONE = 1 / 16  # large, so that a unit box already shows growing steps


def cone_stepping() -> Stepping:
    return Stepping(BOUND, MAX_STEPS, cone_angle=CONE, start=0.0, horizon=3.0)


def test_cone_steps_grow_with_distance_between_their_clamps() -> None:
    stepping = cone_stepping()
    b = stepping.boundaries
    widths = b.diff()
    assert b[0] == 0 and (widths > 0).all() and (widths.diff() >= -1e-12).all()
    expected = (CONE * b[:-1]).clamp(stepping.dt_min, stepping.dt_max)
    torch.testing.assert_close(widths, expected, rtol=1e-9, atol=1e-12)
    assert widths[0] == pytest.approx(stepping.dt_min) and widths[-1] == pytest.approx(stepping.dt_max)
    assert b[-1] > 3.0 + 2 * math.sqrt(3) * BOUND  # covers every ray from within the horizon
    with pytest.raises(ValueError, match="cone_angle"):
        Stepping(BOUND, MAX_STEPS, cone_angle=-0.1)


@pytest.mark.parametrize("jittered", [False, True])
def test_cone_march_samples_each_interval_inside_the_box_once(jittered: bool) -> None:
    stepping = cone_stepping()
    origins, dirs = rays_at_box(48, seed=8)
    jitter = torch.rand(48, generator=torch.Generator().manual_seed(9)) if jittered else None
    s = march_rays(origins, dirs, full_grid(), 0.0, MAX_STEPS, jitter, stepping=stepping)
    t = ((s.positions - origins[s.ray_index]) * s.directions).sum(-1)
    t_near, t_far = ray_box_intersection(origins, dirs, BOUND)
    assert (t >= t_near[s.ray_index] - 1e-5).all() and (t < t_far[s.ray_index] + 1e-5).all()
    starts = stepping.boundaries[:-1].float()
    j = torch.searchsorted(starts, t.contiguous(), right=True) - 1  # the interval each sample sits in
    u = torch.full((48,), 0.5) if jitter is None else jitter
    torch.testing.assert_close(t, starts[j] + u[s.ray_index] * s.deltas, atol=1e-5, rtol=0)
    torch.testing.assert_close(s.deltas, stepping.boundaries.diff().float()[j])
    same = s.ray_index[1:] == s.ray_index[:-1]
    assert (j[1:][same] - j[:-1][same] == 1).all()  # consecutive intervals, none skipped or repeated
    fixed = march_rays(origins, dirs, full_grid(), 0.0, MAX_STEPS, jitter)
    assert s.n_samples < fixed.n_samples  # the far half of the box is sampled more coarsely


def test_cone_inference_equals_compositing_the_full_march() -> None:
    grid = full_grid()
    grid.occupied = (torch.arange(grid.n_cells) % 3) != 0
    origins, dirs = rays_at_box(96, seed=10)
    field = CountingField(lambda x: 3.0 * torch.exp(-4.0 * (x * x).sum(-1)))
    background = torch.rand(96, 3, generator=torch.Generator().manual_seed(11))
    stepping = cone_stepping()
    color = render_rays(
        field, origins, dirs, grid, 0.0, MAX_STEPS, background, candidates_per_round=96 * 16, stepping=stepping
    )
    s = march_rays(origins, dirs, grid, 0.0, MAX_STEPS, stepping=stepping)
    sigma, rgb = field(s.positions, s.directions)
    expected = composite(sigma, rgb, s.deltas, s.ray_index, 96, background).color
    torch.testing.assert_close(color, expected, atol=1e-4, rtol=0)


def test_inference_misses_get_the_background() -> None:
    origins = torch.tensor([[0.0, 0.0, 3.0], [5.0, 5.0, 5.0]])
    dirs = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # both rays miss the box
    field = CountingField(lambda x: torch.ones(x.shape[0]))
    background = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    color = render_rays(field, origins, dirs, full_grid(), 0.0, MAX_STEPS, background)
    torch.testing.assert_close(color, background)
    assert field.samples == 0


# -- occupancy grid -----------------------------------------------------------------------------
def half_space_density(value: float):
    """Density ``value`` where x > 0, zero elsewhere; records every query."""
    queries: list[torch.Tensor] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        queries.append(x)
        return torch.where(x[:, 0] > 0, torch.full_like(x[:, 0], value), torch.zeros_like(x[:, 0]))

    fn.queries = queries  # type: ignore[attr-defined]
    return fn


def x_positive_cells(grid: OccupancyGrid) -> torch.Tensor:
    """Mask of the cells in the x > 0 half of the box (flat index = (i * r + j) * r + k, i along x)."""
    r = grid.resolution
    corner = torch.tensor([[0.5 / r, -1.0 + 0.5 / r, -1.0 + 0.5 / r]]) * grid.bound  # first cell with x > 0
    assert int(grid.cell_index(corner)) == (r // 2) * r * r
    return torch.arange(grid.n_cells) // (r * r) >= r // 2


def test_occupancy_schedules_authors_fixed_and_instant_ngp_ramp() -> None:
    """The authors' torch-ngp updates every 16 steps from the start; Instant-NGP's ramp updates every step
    for the first 32 steps, then every 2, 3, ... up to 16 (46 updates in the first 64 steps)."""
    fixed = OccupancyGrid(BOUND, 8, DT, update_every=16)
    ramp = OccupancyGrid(BOUND, 8, DT, update_every=16, ramp=True)
    assert [s for s in range(1, 65) if fixed.due(s)] == [16, 32, 48, 64]
    ramp_steps = [s for s in range(1, 65) if ramp.due(s)]
    assert ramp_steps[:32] == list(range(1, 33)) and 34 in ramp_steps and 35 not in ramp_steps
    assert len(ramp_steps) == 32 + 8 + 5 + 1  # steps 1-32, 34-48 by 2, 51-63 by 3, 64
    assert [s for s in range(1000, 1100) if ramp.due(s)] == [s for s in range(1000, 1100) if fixed.due(s)]


def test_occupancy_update_marks_dense_cells_and_decays() -> None:
    grid = OccupancyGrid(BOUND, 8, DT, warmup_steps=100, update_every=4, ramp=True)
    assert grid.occupied.all() and grid.occupancy_fraction() == 1.0  # before the first update
    assert not grid.due(0)
    late = 16 * 4 * 10  # long after any start-up schedule: every update_every steps
    assert grid.due(late) and not grid.due(late + 1) and not grid.due(late + 3) and grid.due(late + 4)
    gen = torch.Generator().manual_seed(0)
    fn = half_space_density(100.0)
    grid.update(4, fn, gen)
    queried = torch.cat(fn.queries)
    assert queried.shape == (grid.n_cells, 3)  # warm-up: every cell, one point each
    assert (queried.abs() <= BOUND).all()
    # Every query point falls in its own cell.
    assert torch.equal(torch.sort(grid.cell_index(queried)).values, torch.arange(grid.n_cells))
    positive = x_positive_cells(grid)
    assert grid.density_threshold == pytest.approx(0.01 / DT)
    torch.testing.assert_close(grid.density, torch.where(positive, 100.0, 0.0))
    assert torch.equal(grid.occupied, positive) and grid.updates == 1

    # EMA: new = max(old * decay, sampled). Sampling zero everywhere keeps the decayed values.
    grid.update(8, half_space_density(0.0), gen)
    torch.testing.assert_close(grid.density, torch.where(positive, 95.0, 0.0))
    assert torch.equal(grid.occupied, positive)
    # A larger sample replaces the decayed value; a smaller one does not.
    grid.update(12, half_space_density(200.0), gen)
    torch.testing.assert_close(grid.density, torch.where(positive, 200.0, 0.0))
    grid.update(16, half_space_density(50.0), gen)
    torch.testing.assert_close(grid.density, torch.where(positive, 190.0, 0.0))
    assert grid.updates == 4


def test_occupancy_threshold_is_capped_by_the_mean_density() -> None:
    grid = OccupancyGrid(BOUND, 8, DT, warmup_steps=100)
    low = 0.1 * grid.density_threshold  # every density below the optical-thickness threshold
    grid.update(16, lambda x: torch.where(x[:, 0] > 0, low, 0.5 * low), torch.Generator().manual_seed(0))
    # The mean (0.75 low) is the threshold then: the denser half stays occupied.
    assert torch.equal(grid.occupied, x_positive_cells(grid))


def test_occupancy_after_warmup_samples_half_the_cells_biased_to_occupied() -> None:
    grid = OccupancyGrid(BOUND, 8, DT, warmup_steps=16)
    grid.occupied = x_positive_cells(grid)
    cells = grid.choose_cells(32, torch.Generator().manual_seed(0))
    quarter = grid.n_cells // 4
    assert cells.shape == (2 * quarter,)
    assert grid.occupied[cells[quarter:]].all()
    assert ((cells >= 0) & (cells < grid.n_cells)).all()


def test_occupancy_cell_index_clamps_outside_positions() -> None:
    grid = full_grid(4)
    pts = torch.tensor([[-5.0, -5.0, -5.0], [5.0, 5.0, 5.0], [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    assert grid.cell_index(pts).tolist() == [0, 63, 0, 63]


def test_occupancy_state_dict_round_trip() -> None:
    grid = OccupancyGrid(BOUND, 8, DT, warmup_steps=100)
    grid.update(16, half_space_density(7.0), torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    torch.save(grid.state_dict(), buffer)
    buffer.seek(0)
    restored = OccupancyGrid(BOUND, 8, DT, warmup_steps=100)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.density, grid.density)
    assert torch.equal(restored.occupied, grid.occupied)
    assert restored.updates == grid.updates == 1
    assert restored.occupancy_fraction() == pytest.approx(0.5)


# -- cascades ---------------------------------------------------------------------------------------
def test_auto_cascades_follow_the_authors_rule() -> None:
    from ngp_ohem.render.occupancy import auto_cascades

    assert [auto_cascades(b) for b in (0.5, 1.0, 1.5, 2.0, 4.0, 8.0, 16.0)] == [1, 1, 2, 2, 3, 4, 5]


def test_cascade_bounds_nest_and_the_last_is_the_box() -> None:
    assert OccupancyGrid(4.0, 8, 0.01, cascades=3).cascade_bounds == [1.0, 2.0, 4.0]
    assert OccupancyGrid(1.5, 8, 0.01, cascades=2).cascade_bounds == [1.0, 1.5]
    assert OccupancyGrid(1.5, 8, 0.01).cascade_bounds == [1.5]
    with pytest.raises(ValueError, match="cascade"):
        OccupancyGrid(1.5, 8, 0.01, cascades=0)


def test_a_sample_reads_the_cascade_of_its_position_or_its_step() -> None:
    """Independently: the smallest c with max|x| < 2^c, raised to the step's level (the binary exponent
    of step * resolution), clamped to the cascades there are."""
    grid = OccupancyGrid(4.0, 16, 0.01, cascades=3)
    pts = torch.tensor([[0.2, 0.0, 0.0], [0.0, -0.99, 0.5], [1.0, 0.0, 0.0], [0.0, 1.9, 0.0], [3.5, 0, 0], [9.0, 0, 0]])
    assert grid.cascade_of(pts).tolist() == [0, 0, 1, 1, 2, 2]
    small, long = torch.full((6,), 0.01), torch.full((6,), 0.1)  # 0.16 -> exponent -2; 1.6 -> exponent 1
    assert grid.cascade_of(pts, small).tolist() == [0, 0, 1, 1, 2, 2]
    assert grid.cascade_of(pts, long).tolist() == [1, 1, 1, 1, 2, 2]
    # Cell indices: cascade c's cells start at c * 16^3, and a point maps into its cascade's own lattice.
    index = grid.cell_index(torch.tensor([[0.99, 0.99, 0.99], [1.01, 0.0, 0.0]]))
    # (0.99 + 1) / 2 * 16 = 15.9 -> cell 15 of cascade 0; (1.01 + 2) / 4 * 16 = 12.04 -> 12, 0 -> 8 in cascade 1
    assert index.tolist() == [(15 * 16 + 15) * 16 + 15, 4096 + (12 * 16 + 8) * 16 + 8]


def test_cascaded_updates_sample_every_cascade_inside_its_own_cells() -> None:
    grid = OccupancyGrid(4.0, 8, 0.01, cascades=3, warmup_steps=0, max_threshold=10.0)

    def density(x: torch.Tensor) -> torch.Tensor:
        return torch.where(x.abs().amax(-1) < 1.0, 50.0, 0.0)

    cells = grid.choose_cells(16, torch.Generator().manual_seed(0))
    per = grid.cells_per_cascade
    assert cells.numel() == 6 * (per // 4)  # every cell occupied before the first update: two quarters each
    grid.occupied[:] = False
    grid.occupied[per : per + 10] = True
    cells = grid.choose_cells(16, torch.Generator().manual_seed(0))
    counts = torch.bincount(cells // per, minlength=3).tolist()
    assert counts == [per // 4, 2 * (per // 4), per // 4]  # cascade 1 also draws among its occupied cells
    centres = grid.cell_centres_jittered(torch.arange(grid.n_cells), torch.Generator().manual_seed(1))
    bounds = grid.cell_bounds(torch.arange(grid.n_cells))
    assert (centres.abs().amax(-1) <= bounds + 1e-6).all()
    grid.warmup_steps = 32  # a full update: every cell of every cascade once
    grid.update(16, density)
    fractions = grid.occupied.reshape(3, -1).float().mean(1).tolist()
    # Density 50 inside [-1, 1]^3: all of cascade 0, the inner 4^3 of cascade 1's 8^3, the inner 2^3 of cascade 2's.
    assert fractions == [1.0, 64 / 512, 8 / 512]


def test_unseen_cells_of_every_cascade_are_excluded() -> None:
    """A camera at z = 3 looking down -z with a narrow view: cells behind it (z > 3.5, only in the outer
    cascade, whose cells are 0.5 wide) and cells far off its axis are unseen in every cascade; the cells on
    its axis are seen."""
    grid = OccupancyGrid(4.0, 16, 0.01, cascades=3)
    pose = torch.eye(4)
    pose[2, 3] = 3.0
    grid.mark_unseen(pose[None], fx=100.0, fy=100.0, cx=10.0, cy=10.0, width=20, height=20)
    on_axis = grid.cell_index(torch.tensor([[0.01, 0.01, 0.5], [0.01, 0.01, -1.5], [0.01, 0.01, -3.5]]))
    assert grid.visible[on_axis].all()
    assert on_axis.div(grid.cells_per_cascade, rounding_mode="floor").tolist() == [0, 1, 2]
    behind = grid.cell_index(torch.tensor([[0.01, 0.01, 3.9]]))
    off_axis = grid.cell_index(torch.tensor([[0.9, 0.9, -0.9], [1.9, -1.9, 0.0], [3.9, 3.9, -3.9]]))
    assert not grid.visible[behind].any() and not grid.visible[off_axis].any()
    assert not grid.occupied[~grid.visible].any()
