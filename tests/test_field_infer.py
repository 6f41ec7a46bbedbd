"""The fused no-graph field evaluation (csrc/field_infer_cpu.cpp) against the module path it replaces."""

from __future__ import annotations

import pytest
import torch

from ngp_ohem.field.hashgrid import CONVENTIONS, HashGridSpec
from ngp_ohem.field.native import load_field_native, load_native
from ngp_ohem.field.ngp import FieldSpec, NGPField, _transposed_weights

pytestmark = pytest.mark.skipif(
    load_native() is None or load_field_native() is None, reason="native CPU kernels unavailable (no compiler)"
)


def random_field(seed: int, convention: str, log2_table: int = 14, hidden: int = 64) -> NGPField:
    """A field with non-trivial weights and table (not the near-zero initial table)."""
    torch.manual_seed(seed)
    grid = HashGridSpec(n_levels=16, log2_table_size=log2_table, max_resolution=512, convention=convention)
    spec = FieldSpec(grid, hidden=hidden)
    field = NGPField(spec, bound=1.5, fused_inference=True)
    with torch.no_grad():
        field.encoding.table.uniform_(-1.0, 1.0)
        for p in list(field.density_net.parameters()) + list(field.color_net.parameters()):
            p.mul_(1.5)
    return field


def inputs(n: int, seed: int, spill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, generator=g) * 2 - 1) * (1.5 + spill)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return x, d


def reference(field: NGPField, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    field.fused_inference = False
    try:
        with torch.no_grad():
            return field(x, d), field.density_raw(x)
    finally:
        field.fused_inference = True


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize(("n", "seed"), [(1, 0), (63, 1), (64, 2), (1000, 3), (4097, 4)])
def test_fused_matches_the_module_path(n: int, seed: int, convention: str) -> None:
    field = random_field(seed, convention)
    x, d = inputs(n, seed)
    want, want_density = reference(field, x, d)
    with torch.no_grad():
        assert field.inference_kernel() is not None
        got, got_density = field(x, d), field.density_raw(x)
    scale = want.abs().max()
    torch.testing.assert_close(got, want, atol=2e-5 * float(scale), rtol=1e-4)
    torch.testing.assert_close(got_density, want_density, atol=2e-5 * float(scale), rtol=1e-4)
    assert got.shape == (n, 4) and got_density.shape == (n,)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_positions_outside_the_box_are_encoded_like_the_reference(convention: str) -> None:
    """Clamped to the box (tcnn) or zero (gridencoder), as the module path does."""
    field = random_field(7, convention)
    x, d = inputs(500, 7, spill=0.5)
    want, _ = reference(field, x, d)
    with torch.no_grad():
        torch.testing.assert_close(field(x, d), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_other_widths_and_no_samples(convention: str) -> None:
    field = random_field(8, convention, log2_table=12, hidden=32)
    x, d = inputs(130, 8)
    want, _ = reference(field, x, d)
    with torch.no_grad():
        torch.testing.assert_close(field(x, d), want, atol=1e-4, rtol=1e-4)
        assert field(x[:0], d[:0]).shape == (0, 4)


def test_grad_mode_keeps_the_autograd_path() -> None:
    """With autograd on, the module path runs (the fused kernel has no backward)."""
    field = random_field(9, "gridencoder")
    x, d = inputs(50, 9)
    assert field.inference_kernel() is None
    out = field(x, d)
    assert out.requires_grad
    out.sum().backward()
    assert field.encoding.table.grad is not None


needs_bf16 = pytest.mark.skipif(
    load_field_native() is None or not load_field_native().has_bf16_dot(), reason="no AVX-512 BF16 build here"
)


@needs_bf16
@pytest.mark.parametrize("amx", [False, True])
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize(("n", "hidden"), [(1, 64), (67, 64), (3000, 64), (130, 32)])
def test_bf16_kernel_matches_bf16_autocast_and_bounds_its_error_against_fp32(n, hidden, convention, amx) -> None:
    """Under bf16 autocast the fused kernel runs bf16 MLPs with fp32 accumulation (AVX-512 BF16 dot
    products, or AMX tiles), as autocast does; its error against fp32 stays within what the module
    path under autocast makes (raw outputs within 1 % of their spread, measured 0.3-0.5 %)."""
    if amx and not load_field_native().has_amx():
        pytest.skip("no AMX here (CPU or OS)")
    field = random_field(10 + n, convention, hidden=hidden)
    field.use_amx = amx
    x, d = inputs(n, n)
    exact, _ = reference(field, x, d)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        module, module_density = reference(field, x, d)
        with torch.no_grad():
            assert field.inference_kernel() is not None
            fused, fused_density = field(x, d), field.density_raw(x)
    spread = float(reference(field, *inputs(3000, 99))[0].abs().max())  # the outputs' scale, not one sample's
    assert float((fused - exact).abs().max()) <= 0.01 * spread
    assert float((module.float() - exact).abs().max()) <= 0.01 * spread
    assert float((fused - module.float()).abs().max()) <= 0.01 * spread
    torch.testing.assert_close(fused_density, fused[:, 0], atol=1e-6 * spread, rtol=0)
    assert fused.dtype == torch.float32 and fused_density.shape == (n,)
    assert float((module_density.float() - exact[:, 0]).abs().max()) <= 0.01 * spread


@needs_bf16
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize(("n", "levels"), [(1, 16), (67, 16), (1000, 16), (4097, 16), (300, 12)])
def test_level_major_bf16_route_gives_the_sample_major_routes_bits(n: int, levels: int, convention: str) -> None:
    """On AVX-512 BF16 the first layer reads the encoding as level-major bf16 pairs, where the encoder wrote
    them; encoding to sample-major rows and converting them (the route AMX tiles take) must give the same
    bits, kept features included: batches of 16 and the one-by-one tail, 12 levels (zero pairs up to the
    layer's padded input), positions outside the box."""
    torch.manual_seed(n)
    grid = HashGridSpec(n_levels=levels, log2_table_size=14, max_resolution=512, convention=convention)
    field = NGPField(FieldSpec(grid), bound=1.5, fused_inference=True)
    with torch.no_grad():
        field.encoding.table.uniform_(-1.0, 1.0)
    x, d = inputs(n, n, spill=0.2)
    x01 = field.normalise(x).contiguous()
    args = (x01, d, field.encoding.table.detach(), *field.encoding.constants().kernel_args())
    weights = _transposed_weights(field.density_net), _transposed_weights(field.color_net)
    kernel = load_field_native()
    for density_only in (False, True):
        for keep in (False, True):
            level_major = kernel.field_forward(*args, *weights, density_only, True, keep, False, sample_major=False)
            sample_major = kernel.field_forward(*args, *weights, density_only, True, keep, False, sample_major=True)
            assert torch.equal(level_major[0], sample_major[0]), (density_only, keep)
            assert torch.equal(level_major[1], sample_major[1]), (density_only, keep)
    assert level_major[0].shape == (n,) and sample_major[1].shape == (n, 2 * levels)


@pytest.mark.parametrize("bf16", [False, True])
def test_kept_features_are_the_training_encoders_and_feed_the_same_hard_pass(bf16: bool) -> None:
    """The first pass's features are bit-identical to the encoder's, so the hard pass that reuses
    them computes the same outputs and the same parameter gradients as one that encodes again."""
    if bf16 and not load_field_native().has_bf16_dot():
        pytest.skip("no AVX-512 BF16 build here")
    field = random_field(21, "tcnn")
    x, d = inputs(777, 21)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    with context:
        with torch.no_grad():
            raw, features = field.infer_keeping_features(x, d)
        assert features is not None
        assert torch.equal(features, field.encoding(field.normalise(x)).detach())
        index = torch.arange(0, 777, 3)
        grads = []
        for reuse in (False, True):
            field.zero_grad()
            out = field(x[index], d[index], features=features[index] if reuse else None)
            (out.float() * torch.linspace(-1, 1, 4)).sum().backward()
            grads.append([p.grad.clone() for p in field.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)
    assert raw.shape == (777, 4)
