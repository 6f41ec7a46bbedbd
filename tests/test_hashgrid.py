"""Multiresolution hash encoding: both implementations against a slow reference written here.

The reference follows the module docstring of ``ngp_ohem.field.hashgrid`` literally, one point, one
level and one corner at a time in plain Python numbers (float64), for both conventions:

* tcnn: ``b = exp(ln(N_max / N_min) / (L - 1))``, ``s_l = N_min * b**l - 1``,
  ``p = clamp(x, 0, 1) * s_l + 0.5``; dense when ``(ceil(s_l) + 2)**3 <= T``, lattice side
  ``ceil(s_l) + 2``;
* gridencoder: ``b = 2**(log2(N_max / N_min) / (L - 1))``, ``r_l = ceil(N_min * b**l)``,
  ``p = clamp(x * r_l - 0.5, 0, r_l - 1)``, upper corner clamped to ``r_l - 1``; dense when ``r_l**3``
  fits in ``min(T, r_l**3)`` rounded up to 8, i.e. when ``r_l**3 <= T``; a point with a coordinate
  outside [0, 1] contributes nothing;
* trilinear interpolation over the 8 integer corners around ``p``; dense row
  ``c_x + c_y * side + c_z * side**2``, otherwise ``(c_x * 1 XOR c_y * 2654435761 XOR c_z * 805459861) mod T``.

Only the start row of each level in the concatenated table (``spec.offsets``) is taken from the
module; the test checks that every level's slice is large enough and that slices do not overlap
(and, for gridencoder, :func:`test_gridencoder_by_hand` checks the row counts themselves).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time

import numpy as np
import pytest
import torch

from ngp_ohem.field.hashgrid import (
    CONVENTIONS,
    HashGridEncoding,
    HashGridSpec,
    _LevelConstants,
    corner_indices_and_weights,
)
from ngp_ohem.field.native import STALE_LOCK_S, clear_stale_lock, load_native
from ngp_ohem.memory import GraphBytesMeter

PRIMES = (1, 2654435761, 805459861)

# Two specs with both dense and hashed levels: A has integer grid scales (growth exactly 2, F = 2,
# the fused kernel's special case), B has fractional scales and F = 3 (the generic path); each under
# both conventions.
SPEC_A = HashGridSpec(n_levels=4, n_features=2, log2_table_size=10, base_resolution=4, max_resolution=32)
SPEC_B = HashGridSpec(n_levels=5, n_features=3, log2_table_size=11, base_resolution=3, max_resolution=40)
SPECS = {
    f"{name}-{conv}": dataclasses.replace(spec, convention=conv)
    for name, spec in (("A", SPEC_A), ("B", SPEC_B))
    for conv in CONVENTIONS
}

# Coordinates exactly on the faces of the unit box and a hair outside it (and inside it).
EDGE_COORDS = (-1e-7, 0.0, 1e-7, 0.5, 1.0 - 6e-8, 1.0, 1.0 + 1e-6)


# -- the reference ------------------------------------------------------------------------------
def ref_growth(spec: HashGridSpec) -> float:
    if spec.convention == "gridencoder":
        return 2.0 ** (math.log2(spec.max_resolution / spec.base_resolution) / (spec.n_levels - 1))
    return math.exp(math.log(spec.max_resolution / spec.base_resolution) / (spec.n_levels - 1))


def ref_scale(spec: HashGridSpec, level: int) -> float:
    """The factor of x: s_l (tcnn) or r_l (gridencoder)."""
    if spec.convention == "gridencoder":
        return float(math.ceil(spec.base_resolution * ref_growth(spec) ** level))
    return spec.base_resolution * ref_growth(spec) ** level - 1.0


def ref_side(spec: HashGridSpec, level: int) -> int:
    if spec.convention == "gridencoder":
        return int(ref_scale(spec, level))
    return math.ceil(ref_scale(spec, level)) + 2


def ref_dense(spec: HashGridSpec, level: int) -> bool:
    return ref_side(spec, level) ** 3 <= 2**spec.log2_table_size


def ref_corners(spec: HashGridSpec, level: int, point: list[float]) -> list[tuple[int, float]]:
    """(global table row, trilinear weight) of the 8 corners of one point at one level (none for a
    gridencoder point outside the box)."""
    scale = ref_scale(spec, level)
    side = ref_side(spec, level)
    table_size = 2**spec.log2_table_size
    if spec.convention == "gridencoder":
        if any(v < 0.0 or v > 1.0 for v in point):
            return []
        pos = [min(max(v * scale - 0.5, 0.0), side - 1.0) for v in point]
    else:
        pos = [min(max(v, 0.0), 1.0) * scale + 0.5 for v in point]
    base = [math.floor(p) for p in pos]
    frac = [p - b for p, b in zip(pos, base)]
    out = []
    for dx, dy, dz in itertools.product((0, 1), repeat=3):
        cx, cy, cz = (b + o for b, o in zip(base, (dx, dy, dz)))
        if spec.convention == "gridencoder":
            cx, cy, cz = min(cx, side - 1), min(cy, side - 1), min(cz, side - 1)
        weight = 1.0
        for offset, f in zip((dx, dy, dz), frac):
            weight *= f if offset else 1.0 - f
        if ref_dense(spec, level):
            local = cx + cy * side + cz * side * side
        else:
            local = ((cx * PRIMES[0]) ^ (cy * PRIMES[1]) ^ (cz * PRIMES[2])) % table_size
        out.append((spec.offsets[level] + local, weight))
    return out


def ref_inside(spec: HashGridSpec, x: torch.Tensor) -> torch.Tensor:
    """(N,) True where a point contributes (always under tcnn, which clamps)."""
    if spec.convention == "gridencoder":
        return ((x >= 0) & (x <= 1)).all(-1)
    return torch.ones(x.shape[0], dtype=torch.bool)


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
    top = spec.scale(spec.n_levels - 1)
    if spec.convention == "gridencoder":
        assert top == spec.max_resolution and spec.shift() == -0.5 and spec.zero_outside
    else:
        assert top == pytest.approx(spec.max_resolution - 1.0) and spec.shift() == 0.5 and not spec.zero_outside
    # Level slices: ordered, disjoint, each big enough for its indices.
    for lv in range(spec.n_levels):
        size = spec.offsets[lv + 1] - spec.offsets[lv]
        needed = ref_side(spec, lv) ** 3 if dense[lv] else spec.table_size
        assert size >= needed
    assert spec.offsets[0] == 0 and spec.n_params_rows == spec.offsets[-1]
    assert spec.output_dim == spec.n_levels * spec.n_features


def test_unknown_convention_is_rejected() -> None:
    with pytest.raises(ValueError, match="convention"):
        HashGridSpec(convention="ngp")


# -- values and gradients against the reference -------------------------------------------------
@pytest.mark.parametrize("impl", ["native", "torch"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_encoding_matches_reference(name: str, impl: str) -> None:
    spec = SPECS[name]
    enc = make_encoding(spec, impl)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(160, 3, generator=gen)
    x[:8] = x[:8] * 1.4 - 0.2  # a few points outside the box: clamped (tcnn) or zeroed (gridencoder)
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


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_native_and_torch_agree_on_a_large_batch(convention: str) -> None:
    if load_native() is None:
        pytest.skip("the fused C++ kernels could not be built here (no compiler?)")
    spec = HashGridSpec(
        n_levels=8, n_features=2, log2_table_size=12, base_resolution=4, max_resolution=256, convention=convention
    )
    native, reference = make_encoding(spec, "native"), make_encoding(spec, "torch")
    x = torch.rand(20000, 3, generator=torch.Generator().manual_seed(2)) * 1.02 - 0.01  # some just outside
    out_n, out_t = native(x), reference(x)
    torch.testing.assert_close(out_n, out_t, atol=1e-5, rtol=0)
    g = torch.randn(out_n.shape, generator=torch.Generator().manual_seed(3))
    (out_n * g).sum().backward()
    (out_t * g).sum().backward()
    torch.testing.assert_close(native.table.grad, reference.table.grad, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_vector_and_scalar_corners_agree_bit_for_bit(convention: str) -> None:
    """The vector path (16 samples at a time with AVX-512, 8 with AVX2: csrc/hashgrid_simd.h) and the
    scalar tail must be the same arithmetic: a batch encoded at once equals its samples encoded one by one (a batch of 1
    takes the scalar path), forward and table gradient, including NaN, outside and boundary points."""
    native = load_native()
    if native is None:
        pytest.skip("the fused C++ kernels could not be built here (no compiler?)")
    spec = HashGridSpec(
        n_levels=6, n_features=2, log2_table_size=10, base_resolution=4, max_resolution=300, convention=convention
    )
    enc = make_encoding(spec, "native")
    c = enc.constants()
    g = torch.Generator().manual_seed(7)
    x = torch.rand(37, 3, generator=g) * 1.2 - 0.1
    x[0] = torch.tensor([0.0, 1.0, 1.0])
    x[1, 2] = float("nan")
    x[2] = torch.tensor([1.0 + 1e-7, -1e-7, 0.5])
    table = enc.table.detach()
    batch = native.forward(x, table, *c.kernel_args())
    one_by_one = torch.cat([native.forward(x[i : i + 1].contiguous(), table, *c.kernel_args()) for i in range(37)])
    assert torch.equal(batch, one_by_one)
    grad_out = torch.randn(batch.shape, generator=g)
    rows = table.shape[0]
    grad_batch = native.backward(grad_out, x, rows, *c.kernel_args())
    grad_sum = sum(
        native.backward(grad_out[i : i + 1].contiguous(), x[i : i + 1].contiguous(), rows, *c.kernel_args())
        for i in range(37)
    )
    # the batch accumulates rows in sample order; summing per-sample tables reorders the additions
    torch.testing.assert_close(grad_batch, grad_sum, atol=1e-6, rtol=1e-6)


# -- the gridencoder convention by hand ---------------------------------------------------------
def _hand_trilinear(table: np.ndarray, res: int, rows: int, dense: bool, point: tuple[float, ...]) -> np.ndarray:
    """One level of the authors' encoder for one point, in numpy float64 from their formulas."""
    x = np.asarray(point, dtype=np.float64)
    if ((x < 0) | (x > 1)).any():
        return np.zeros(table.shape[1])
    pos = np.clip(x * res - 0.5, 0.0, res - 1.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, res - 1)
    t = pos - lo
    acc = np.zeros(table.shape[1])
    for corner in itertools.product((0, 1), repeat=3):
        c = [hi[d] if corner[d] else lo[d] for d in range(3)]
        w = np.prod([t[d] if corner[d] else 1.0 - t[d] for d in range(3)])
        hashed = (c[0] ^ (c[1] * 2654435761) ^ (c[2] * 805459861)) % 2**32
        acc += w * table[(c[0] + c[1] * res + c[2] * res * res if dense else hashed) % rows]
    return acc


@pytest.mark.parametrize("impl", ["native", "torch"])
@pytest.mark.parametrize(("base", "log2_t", "dense"), [(5, 8, True), (12, 8, False)])
def test_gridencoder_by_hand(impl: str, base: int, log2_t: int, dense: bool) -> None:
    """One level, res = N_min: 5^3 = 125 lattice points in 128 rows (dense), 12^3 > 256 (hashed)."""
    spec = HashGridSpec(n_levels=1, n_features=2, log2_table_size=log2_t, base_resolution=base,
                        max_resolution=base + 1, convention="gridencoder")  # fmt: skip
    rows = min(2**log2_t, base**3)
    rows = (rows + 7) // 8 * 8
    assert spec.n_params_rows == rows and spec.is_dense(0) == dense and spec.side(0) == base
    enc = make_encoding(spec, impl, seed=11)
    table = enc.table.detach().double().numpy()
    points = [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.5, 0.5, 0.5), (0.3, 0.7, 0.95), (0.05, 0.999, 0.5),
              (0.23, 0.61, 0.48), (0.9, 0.1, 0.2), (1.0 + 1e-6, 0.5, 0.5), (0.5, -1e-7, 0.5)]  # fmt: skip
    x = torch.tensor(points, dtype=torch.float32)
    got = enc(x).detach().double().numpy()
    want = np.stack([_hand_trilinear(table, base, rows, dense, tuple(float(v) for v in p)) for p in x])
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert (got[-2:] == 0).all()  # outside the box: zero, not clamped
    if dense:  # corners of the box read the first and the last lattice point alone
        np.testing.assert_array_equal(got[0], table[0].astype(np.float32))
        np.testing.assert_array_equal(got[1], table[base**3 - 1].astype(np.float32))


def test_gridencoder_levels_by_hand() -> None:
    """b = 2^(log2(N_max / N_min) / (L - 1)), res = ceil(N_min b^l), rows = min(T, res^3) rounded to 8."""
    spec = HashGridSpec(n_levels=3, log2_table_size=9, base_resolution=4, max_resolution=9, convention="gridencoder")
    assert spec.growth == 1.5
    assert [spec.resolution(lv) for lv in range(3)] == [4, 6, 9]
    assert spec.offsets == (0, 64, 64 + 216, 64 + 216 + 512)
    assert [spec.is_dense(lv) for lv in range(3)] == [True, True, False]
    odd = HashGridSpec(n_levels=2, log2_table_size=9, base_resolution=5, max_resolution=7, convention="gridencoder")
    assert odd.offsets == (0, 128, 128 + 344)  # 125 -> 128, 343 -> 344
    # The authors' encoder of the paper: 6,098,120 rows of 2 features (what torch-ngp's GridEncoder prints).
    paper = HashGridSpec(convention="gridencoder")
    assert paper.n_params_rows == 6_098_120 and paper.resolution(15) == 2048
    assert [paper.is_dense(lv) for lv in range(16)] == [True] * 5 + [False] * 11
    # Their kernel recomputes res in float32: at 4096 (bound 2) it reads 4096 where float64 ceil says 4097.
    bound2 = HashGridSpec(max_resolution=4096, convention="gridencoder")
    assert math.ceil(16 * bound2.growth**15) == 4097 and bound2.resolution(15) == 4096


# -- tcnn: unchanged, bit for bit ---------------------------------------------------------------
def _old_tcnn_encode(spec: HashGridSpec, table: torch.Tensor, x01: torch.Tensor) -> torch.Tensor:
    """The torch encoding as it was before conventions existed (ngp_ohem@6298998), verbatim formulas."""
    c = _LevelConstants(spec, torch.device("cpu"))
    x01 = x01.clamp(0.0, 1.0)
    pos = x01[:, None, :] * c.scale[None, :, None] + 0.5
    base = pos.floor()
    frac = pos - base
    corner = base.to(torch.int64)[:, :, None, :] + c.corners[None, None]
    side = c.side[None, :, None]
    dense_index = corner[..., 0] + corner[..., 1] * side + corner[..., 2] * side * side
    hashed = (corner[..., 0] * PRIMES[0]) ^ (corner[..., 1] * PRIMES[1]) ^ (corner[..., 2] * PRIMES[2])
    index = torch.where(c.dense[None, :, None], dense_index, hashed & c.mask) + c.offset[None, :, None]
    k = c.corners.to(frac.dtype)
    f = frac[:, :, None, :]
    weights = (k * f + (1 - k) * (1 - f)).prod(-1)
    return (table[index] * weights[..., None]).sum(2).reshape(x01.shape[0], -1)


# SPEC_B's native forward on GOLDEN_POINTS (every 4th output) with the table below, from the kernel
# before conventions existed (ngp_ohem@6298998).
GOLDEN_POINTS = [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.25, 0.75], [0.123, 0.456, 0.789], [0.9, 0.01, 0.33],
                 [1.0000001, -0.2, 0.6]]  # fmt: skip
GOLDEN_NATIVE = [
    "-0x1.5dc84p-4", "0x1.958b64p-6", "-0x1.958b64p-4", "-0x1.8df0c8p-3", "-0x1.a9d26p-5", "0x1.9b633ap-3",
    "0x1.d7e1p-4", "-0x1.16cfd8p-3", "0x1.b3f5dcp-3", "0x1.14d5p-4", "-0x1.95be56p-3", "0x1.3a4c0ep-4",
    "-0x1.d8c728p-7", "-0x1.1394b6p-3", "-0x1.a1ea5ap-4", "0x1.a0a894p-6", "0x1.dab6fp-7", "0x1.999a52p-3",
    "-0x1.88baa4p-3", "-0x1.a1e6ep-5", "0x1.6af66p-4", "0x1.2550fcp-4", "0x1.4927a4p-4", "-0x1.f2d22cp-4",
]  # fmt: skip


@pytest.mark.parametrize("impl", ["native", "torch"])
def test_tcnn_convention_is_bit_identical_to_before(impl: str) -> None:
    enc = make_encoding(SPEC_B, impl)
    assert SPEC_B.convention == "tcnn"  # the default of a bare spec
    x = torch.cat([torch.tensor(GOLDEN_POINTS), torch.rand(500, 3, generator=torch.Generator().manual_seed(4))])
    out = enc(x).detach()
    if impl == "torch":
        assert torch.equal(out, _old_tcnn_encode(SPEC_B, enc.table.detach(), x))
    with torch.no_grad():
        n = enc.table.numel()
        enc.table.copy_(((torch.arange(n) * 37 % 101).float() / 101.0 - 0.5).reshape(enc.table.shape))
    if impl == "native":
        golden = torch.tensor([float.fromhex(v) for v in GOLDEN_NATIVE])
        assert torch.equal(enc(torch.tensor(GOLDEN_POINTS)).detach()[:, ::4].flatten(), golden)


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
    inside = ref_inside(spec, x).float()[:, None].expand(-1, spec.n_levels)
    torch.testing.assert_close(weights.sum(-1), inside)


@pytest.mark.parametrize("impl", ["native", "torch"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_boundary_positions_encode_and_backprop_safely(name: str, impl: str) -> None:
    spec = SPECS[name]
    enc = make_encoding(spec, impl, seed=5)
    x = edge_points()
    out = enc(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref_encode(spec, enc.table.detach(), x), atol=2e-5, rtol=0)
    inside = ref_inside(spec, x)
    clamped = enc(x.clamp(0.0, 1.0))
    if spec.convention == "tcnn":  # positions a hair outside encode exactly like the face they are clamped to
        torch.testing.assert_close(clamped, out, atol=0, rtol=0)
    else:  # ... or to exactly zero, and the inside ones are untouched
        assert not inside.all() and (out[~inside] == 0).all()
        torch.testing.assert_close(clamped[inside], out[inside], atol=0, rtol=0)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(6))
    (out * grad_out).sum().backward()
    grad = enc.table.grad
    assert grad is not None and grad.shape == enc.table.shape and torch.isfinite(grad).all()
    # Trilinear weights sum to 1, so each level's slice receives exactly the upstream gradient mass of
    # the points that contribute: a scatter outside the level (or outside the table) would break this.
    f = spec.n_features
    for lv in range(spec.n_levels):
        got = grad[spec.offsets[lv] : spec.offsets[lv + 1]].double().sum(0)
        want = grad_out[inside, lv * f : (lv + 1) * f].double().sum(0)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(grad.double(), ref_table_grad(spec, grad.shape[0], x, grad_out), atol=2e-5, rtol=0)


# -- the memory-lean graph ----------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["native", "torch"])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_graph_saves_only_the_positions(impl: str, convention: str) -> None:
    enc = make_encoding(dataclasses.replace(SPEC_A, convention=convention), impl)
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
