"""Multiresolution hash encoding: both implementations against a slow reference written here.

The reference follows the module docstring of ``ngp_ohem.field.hashgrid`` literally, one point, one
level and one corner at a time in plain Python numbers:

* ``b = exp(ln(N_max / N_min) / (L - 1))``, ``s_l = N_min * b**l - 1``, ``p = clamp(x, 0, 1) * s_l + 0.5``;
* trilinear interpolation over the 8 integer corners around ``p``;
* a level is dense when ``(ceil(s_l) + 2)**3 <= T``: row ``c_x + c_y * side + c_z * side**2``;
* otherwise row ``(c_x * 1 XOR c_y * 2654435761 XOR c_z * 805459861) mod T``.

Only the start row of each level in the concatenated table (``spec.offsets``) is taken from the
module; the test checks that every level's slice is large enough and that slices do not overlap.
"""

from __future__ import annotations

import itertools
import math
import os
import time

import pytest
import torch

from ngp_ohem.field.hashgrid import HashGridEncoding, HashGridSpec, _LevelConstants, corner_indices_and_weights
from ngp_ohem.field.native import STALE_LOCK_S, clear_stale_lock, load_native
from ngp_ohem.memory import GraphBytesMeter

PRIMES = (1, 2654435761, 805459861)

# Two specs with both dense and hashed levels: A has integer grid scales (growth exactly 2, F = 2,
# the fused kernel's special case), B has fractional scales and F = 3 (the generic path).
SPEC_A = HashGridSpec(n_levels=4, n_features=2, log2_table_size=10, base_resolution=4, max_resolution=32)
SPEC_B = HashGridSpec(n_levels=5, n_features=3, log2_table_size=11, base_resolution=3, max_resolution=40)
SPECS = {"A": SPEC_A, "B": SPEC_B}

# Coordinates exactly on the faces of the unit box and a hair outside it (and inside it).
EDGE_COORDS = (-1e-7, 0.0, 1e-7, 0.5, 1.0 - 6e-8, 1.0, 1.0 + 1e-6)


# -- the reference ------------------------------------------------------------------------------
def ref_scale(spec: HashGridSpec, level: int) -> float:
    growth = math.exp(math.log(spec.max_resolution / spec.base_resolution) / (spec.n_levels - 1))
    return spec.base_resolution * growth**level - 1.0


def ref_side(spec: HashGridSpec, level: int) -> int:
    return math.ceil(ref_scale(spec, level)) + 2


def ref_dense(spec: HashGridSpec, level: int) -> bool:
    return ref_side(spec, level) ** 3 <= 2**spec.log2_table_size


def ref_corners(spec: HashGridSpec, level: int, point: list[float]) -> list[tuple[int, float]]:
    """(global table row, trilinear weight) of the 8 corners of one point at one level."""
    scale = ref_scale(spec, level)
    side = ref_side(spec, level)
    table_size = 2**spec.log2_table_size
    pos = [min(max(v, 0.0), 1.0) * scale + 0.5 for v in point]
    base = [math.floor(p) for p in pos]
    frac = [p - b for p, b in zip(pos, base)]
    out = []
    for dx, dy, dz in itertools.product((0, 1), repeat=3):
        cx, cy, cz = base[0] + dx, base[1] + dy, base[2] + dz
        weight = 1.0
        for offset, f in zip((dx, dy, dz), frac):
            weight *= f if offset else 1.0 - f
        if ref_dense(spec, level):
            local = cx + cy * side + cz * side * side
        else:
            local = ((cx * PRIMES[0]) ^ (cy * PRIMES[1]) ^ (cz * PRIMES[2])) % table_size
        out.append((spec.offsets[level] + local, weight))
    return out


def ref_encode(spec: HashGridSpec, table: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reference encoding (N, L * F) in float64."""
    rows = table.double().tolist()
    points = x.double().tolist()
    f = spec.n_features
    out = torch.zeros(len(points), spec.n_levels * f, dtype=torch.float64)
    for i, point in enumerate(points):
        for level in range(spec.n_levels):
            acc = [0.0] * f
            for row, weight in ref_corners(spec, level, point):
                for k in range(f):
                    acc[k] += weight * rows[row][k]
            out[i, level * f : (level + 1) * f] = torch.tensor(acc, dtype=torch.float64)
    return out


def ref_table_grad(spec: HashGridSpec, n_rows: int, x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """Reference d(sum(out * grad_out)) / d(table), accumulated corner by corner, in float64."""
    grad = [[0.0] * spec.n_features for _ in range(n_rows)]
    g = grad_out.double().tolist()
    f = spec.n_features
    for i, point in enumerate(x.double().tolist()):
        for level in range(spec.n_levels):
            for row, weight in ref_corners(spec, level, point):
                for k in range(f):
                    grad[row][k] += weight * g[i][level * f + k]
    return torch.tensor(grad, dtype=torch.float64)


# -- helpers ------------------------------------------------------------------------------------
def make_encoding(spec: HashGridSpec, impl: str, seed: int = 0) -> HashGridEncoding:
    if impl == "native" and load_native() is None:
        pytest.skip("the fused C++ kernels could not be built here (no compiler?)")
    enc = HashGridEncoding(spec, use_native=impl == "native")
    assert enc.implementation == impl
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        enc.table.copy_(torch.rand(enc.table.shape, generator=gen) * 2.0 - 1.0)
    return enc


def edge_points() -> torch.Tensor:
    return torch.tensor(list(itertools.product(EDGE_COORDS, repeat=3)), dtype=torch.float32)


# -- the spec itself ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SPECS))
def test_specs_mix_dense_and_hashed_levels(name: str) -> None:
    spec = SPECS[name]
    dense = [ref_dense(spec, lv) for lv in range(spec.n_levels)]
    assert any(dense) and not all(dense), dense
    assert [spec.is_dense(lv) for lv in range(spec.n_levels)] == dense
    for lv in range(spec.n_levels):
        assert spec.scale(lv) == pytest.approx(ref_scale(spec, lv), rel=1e-12)
        assert spec.side(lv) == ref_side(spec, lv)
    assert spec.scale(spec.n_levels - 1) == pytest.approx(spec.max_resolution - 1.0)
    # Level slices: ordered, disjoint, each big enough for its indices.
    for lv in range(spec.n_levels):
        size = spec.offsets[lv + 1] - spec.offsets[lv]
        needed = ref_side(spec, lv) ** 3 if dense[lv] else spec.table_size
        assert size >= needed
    assert spec.offsets[0] == 0 and spec.n_params_rows == spec.offsets[-1]
    assert spec.output_dim == spec.n_levels * spec.n_features


# -- values and gradients against the reference -------------------------------------------------
@pytest.mark.parametrize("impl", ["native", "torch"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_encoding_matches_reference(name: str, impl: str) -> None:
    spec = SPECS[name]
    enc = make_encoding(spec, impl)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(160, 3, generator=gen)
    x[:8] = x[:8] * 1.4 - 0.2  # a few points outside the box: clamped like the reference does
    out = enc(x)
    assert out.shape == (160, spec.output_dim) and out.dtype == torch.float32
    expected = ref_encode(spec, enc.table.detach(), x)
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=0)

    grad_out = torch.randn(out.shape, generator=gen)
    (out * grad_out).sum().backward()
    expected_grad = ref_table_grad(spec, enc.table.shape[0], x, grad_out)
    assert enc.table.grad is not None and enc.table.grad.shape == enc.table.shape
    torch.testing.assert_close(enc.table.grad.double(), expected_grad, atol=2e-5, rtol=0)
    # The gradient reaches rows of dense and of hashed levels alike.
    for lv in range(spec.n_levels):
        assert enc.table.grad[spec.offsets[lv] : spec.offsets[lv + 1]].abs().sum() > 0


def test_native_and_torch_agree_on_a_large_batch() -> None:
    if load_native() is None:
        pytest.skip("the fused C++ kernels could not be built here (no compiler?)")
    spec = HashGridSpec(n_levels=8, n_features=2, log2_table_size=12, base_resolution=4, max_resolution=256)
    native, reference = make_encoding(spec, "native"), make_encoding(spec, "torch")
    x = torch.rand(20000, 3, generator=torch.Generator().manual_seed(2))
    out_n, out_t = native(x), reference(x)
    torch.testing.assert_close(out_n, out_t, atol=1e-5, rtol=0)
    g = torch.randn(out_n.shape, generator=torch.Generator().manual_seed(3))
    (out_n * g).sum().backward()
    (out_t * g).sum().backward()
    torch.testing.assert_close(native.table.grad, reference.table.grad, atol=1e-4, rtol=1e-5)


# -- the box boundary ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SPECS))
def test_boundary_positions_index_inside_their_level(name: str) -> None:
    spec = SPECS[name]
    x = edge_points()
    index, weights = corner_indices_and_weights(x, spec, _LevelConstants(spec, torch.device("cpu")))
    assert index.shape == (x.shape[0], spec.n_levels, 8)
    assert int(index.max()) < spec.n_params_rows and int(index.min()) >= 0
    for lv in range(spec.n_levels):
        rows = index[:, lv]
        assert int(rows.min()) >= spec.offsets[lv]
        limit = spec.offsets[lv] + (ref_side(spec, lv) ** 3 if ref_dense(spec, lv) else spec.table_size)
        assert int(rows.max()) < limit, f"level {lv}: row {int(rows.max())} >= {limit}"
    assert torch.isfinite(weights).all() and (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(x.shape[0], spec.n_levels))


@pytest.mark.parametrize("impl", ["native", "torch"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_boundary_positions_encode_and_backprop_safely(name: str, impl: str) -> None:
    spec = SPECS[name]
    enc = make_encoding(spec, impl, seed=5)
    x = edge_points()
    out = enc(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref_encode(spec, enc.table.detach(), x), atol=2e-5, rtol=0)
    # Positions a hair outside encode exactly like the face they are clamped to.
    torch.testing.assert_close(enc(x.clamp(0.0, 1.0)), out, atol=0, rtol=0)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(6))
    (out * grad_out).sum().backward()
    grad = enc.table.grad
    assert grad is not None and grad.shape == enc.table.shape and torch.isfinite(grad).all()
    # Trilinear weights sum to 1, so each level's slice receives exactly the upstream gradient mass:
    # a scatter outside the level (or outside the table) would break this.
    f = spec.n_features
    for lv in range(spec.n_levels):
        got = grad[spec.offsets[lv] : spec.offsets[lv + 1]].double().sum(0)
        want = grad_out[:, lv * f : (lv + 1) * f].double().sum(0)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(grad.double(), ref_table_grad(spec, grad.shape[0], x, grad_out), atol=2e-5, rtol=0)


# -- the memory-lean graph ----------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["native", "torch"])
def test_graph_saves_only_the_positions(impl: str) -> None:
    enc = make_encoding(SPEC_A, impl)
    x = torch.rand(1000, 3, generator=torch.Generator().manual_seed(7))
    with GraphBytesMeter(enc.parameters()) as meter:
        out = enc(x)
    assert out.requires_grad
    assert meter.bytes == 1000 * 3 * 4  # 12 bytes per sample


# -- the build lock ---------------------------------------------------------------------------------
def test_a_stale_build_lock_is_removed_with_a_warning(tmp_path) -> None:
    lock = tmp_path / "lock"
    lock.touch()
    old = time.time() - STALE_LOCK_S - 10
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match="stale build lock"):
        clear_stale_lock(tmp_path, sleep=lambda s: pytest.fail("must not wait for a stale lock"))
    assert not lock.exists()


def test_a_fresh_build_lock_is_waited_for_until_released_or_stale(tmp_path) -> None:
    lock = tmp_path / "lock"
    lock.touch()
    waits = []

    def sleep(seconds: float) -> None:  # another process finishes its build after three polls
        waits.append(seconds)
        if len(waits) == 3:
            lock.unlink()

    clear_stale_lock(tmp_path, sleep=sleep)
    assert len(waits) == 3
    lock.touch()
    clock = iter(time.time() + 100.0 * k for k in range(10))  # a holder that never finishes: goes stale
    with pytest.warns(UserWarning, match="stale"):
        clear_stale_lock(tmp_path, stale_s=250.0, sleep=lambda s: None, now=lambda: next(clock))
    assert not lock.exists()
    clear_stale_lock(tmp_path, sleep=lambda s: pytest.fail("no lock: nothing to wait for"))
