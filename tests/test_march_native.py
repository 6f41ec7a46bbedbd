"""The fused ray-marching kernel (csrc/render_cpu.cpp) against the reference march_rays, sample for sample."""

from __future__ import annotations

import pytest
import torch

from ngp_ohem.field.native import load_render_native
from ngp_ohem.render.march import Stepping, march_rays
from ngp_ohem.render.occupancy import OccupancyGrid

pytestmark = pytest.mark.skipif(load_render_native() is None, reason="native CPU kernels unavailable (no compiler)")


def rays(n: int, seed: int, radius: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    origins = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * radius
    target = (torch.rand(n, 3, generator=g) - 0.5) * 0.8
    dirs = torch.nn.functional.normalize(target - origins, dim=-1)
    return origins, dirs, torch.rand(n, generator=g)


def grid_with(fraction: float, seed: int, bound: float, resolution: int = 32, cascades: int = 1) -> OccupancyGrid:
    grid = OccupancyGrid(bound, resolution, 0.01, cascades=cascades)
    g = torch.Generator().manual_seed(seed)
    grid.occupied = torch.rand(grid.n_cells, generator=g) < fraction
    return grid


@pytest.mark.parametrize("simd", [True, False], ids=["vector_walk", "scalar_walk"])
@pytest.mark.parametrize("cone", [0.0, 1.0 / 128])
@pytest.mark.parametrize("max_samples", [None, 20000])
@pytest.mark.parametrize("fraction", [1.0, 0.3, 0.0])
def test_native_march_equals_the_reference(cone: float, max_samples: int | None, fraction: float, simd: bool) -> None:
    bound = 1.5 if cone == 0 else 4.0
    origins, dirs, jitter = rays(700, seed=3, radius=2.5 * bound)
    grid = grid_with(fraction, seed=4, bound=bound)
    stepping = Stepping(bound, 256, cone, start=0.1, horizon=float(origins.norm(dim=-1).max()))
    kwargs = dict(jitter=jitter, max_samples=max_samples, stepping=stepping, use_simd=simd)
    ref = march_rays(origins, dirs, grid, 0.1, 256, use_native=False, **kwargs)
    got = march_rays(origins, dirs, grid, 0.1, 256, use_native=True, **kwargs)
    assert got.n_rays == ref.n_rays and got.n_samples == ref.n_samples
    torch.testing.assert_close(got.ray_index, ref.ray_index, rtol=0, atol=0)
    torch.testing.assert_close(got.positions, ref.positions, rtol=0, atol=0)
    torch.testing.assert_close(got.directions, ref.directions, rtol=0, atol=0)
    torch.testing.assert_close(got.deltas, ref.deltas, rtol=0, atol=0)
    if max_samples is not None and fraction > 0:
        assert got.n_rays < origins.shape[0] and got.n_samples <= max_samples


@pytest.mark.parametrize("simd", [True, False], ids=["vector_walk", "scalar_walk"])
@pytest.mark.parametrize("cone", [0.0, 1.0 / 128])
@pytest.mark.parametrize("cascades", [2, 3])
def test_native_march_with_cascades_equals_the_reference(cone: float, cascades: int, simd: bool) -> None:
    """Cascaded lookups (level from the position and from the step) pick the same cells, bit for bit."""
    bound = 4.0
    origins, dirs, jitter = rays(500, seed=5, radius=2.0 * bound)
    grid = grid_with(0.5, seed=6, bound=bound, resolution=16, cascades=cascades)
    stepping = Stepping(bound, 256, cone, start=0.1, horizon=float(origins.norm(dim=-1).max()))
    kwargs = dict(jitter=jitter, stepping=stepping, use_simd=simd)
    ref = march_rays(origins, dirs, grid, 0.1, 256, use_native=False, **kwargs)
    got = march_rays(origins, dirs, grid, 0.1, 256, use_native=True, **kwargs)
    assert got.n_samples == ref.n_samples > 0
    torch.testing.assert_close(got.ray_index, ref.ray_index, rtol=0, atol=0)
    torch.testing.assert_close(got.positions, ref.positions, rtol=0, atol=0)
    # Every kept sample reads an occupied cell of the cascade its position and step select.
    assert grid.occupied[grid.cell_index(got.positions, got.deltas)].all()


def test_rays_that_miss_the_box_have_no_samples() -> None:
    origins = torch.tensor([[5.0, 5.0, 5.0], [0.0, 0.0, 3.0]])
    dirs = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]), dim=-1)
    grid = grid_with(1.0, 0, 1.5)
    got = march_rays(origins, dirs, grid, 0.05, 128, jitter=torch.zeros(2), use_native=True)
    assert got.n_rays == 2 and set(got.ray_index.tolist()) == {1}


# -- compositing -------------------------------------------------------------------------------------
def packed(n_rays: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 40, (n_rays,), generator=g)
    ray_index = torch.repeat_interleave(torch.arange(n_rays), counts)
    n = int(counts.sum())
    sigma = torch.rand(n, generator=g) * 30
    rgb = torch.rand(n, 3, generator=g)
    deltas = torch.rand(n, generator=g) * 0.02
    background = torch.rand(n_rays, 3, generator=g)
    return sigma, rgb, deltas, ray_index, background


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_native_composite_values_and_gradients_equal_the_reference(seed: int) -> None:
    from ngp_ohem.render.composite import composite

    sigma, rgb, deltas, ray_index, background = packed(300, seed)
    n_rays = 300
    g = torch.Generator().manual_seed(seed + 10)
    w_colour, w_opacity = torch.randn(n_rays, 3, generator=g), torch.randn(n_rays, generator=g)
    results = {}
    for native in (False, True):
        s, c = sigma.clone().requires_grad_(True), rgb.clone().requires_grad_(True)
        out = composite(s, c, deltas, ray_index, n_rays, background, use_native=native)
        ((out.color * w_colour).sum() + (out.opacity * w_opacity).sum()).backward()
        results[native] = (out.color.detach(), out.opacity.detach(), out.weights.detach(), s.grad, c.grad)
    for got, want in zip(results[True], results[False], strict=True):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_native_composite_terminates_rays_like_the_reference() -> None:
    """Very dense samples: transmittance falls below the threshold and later samples get no weight."""
    from ngp_ohem.render.composite import composite

    sigma, rgb, deltas, ray_index, background = packed(50, 5)
    sigma = sigma * 1000
    ref = composite(sigma, rgb, deltas, ray_index, 50, background, use_native=False)
    got = composite(sigma, rgb, deltas, ray_index, 50, background, use_native=True)
    assert int((ref.weights == 0).sum()) > 0
    torch.testing.assert_close(got.weights, ref.weights, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.color, ref.color, atol=1e-5, rtol=1e-5)
