"""The radiance field: SH encoding, network shapes and activations, tiny-cuda-nn config translation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ngp_ohem.errors import ConfigError
from ngp_ohem.field import build_field, resolve_backend
from ngp_ohem.field.hashgrid import CONVENTIONS, HashGridSpec
from ngp_ohem.field.ngp import RAW_DIM, FieldSpec, NGPField, activate, trunc_exp
from ngp_ohem.field.sh import spherical_harmonics_deg4
from ngp_ohem.field.tcnn import SH_CONFIG, hashgrid_config, mlp_config

GRID = HashGridSpec(n_levels=6, n_features=2, log2_table_size=12, base_resolution=8, max_resolution=128)
SPEC = FieldSpec(grid=GRID, hidden=32, geo_features=15)
BOUND = 1.5


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


# -- spherical harmonics ------------------------------------------------------------------------
def hand_sh(x: float, y: float, z: float) -> list[float]:
    """The 16 real SH (l <= 3, Condon-Shortley phase, the tcnn/torch-ngp ordering) from closed forms."""
    pi = math.pi
    c0 = 0.5 * math.sqrt(1 / pi)
    c1 = math.sqrt(3 / (4 * pi))
    c2a = 0.5 * math.sqrt(15 / pi)
    c20 = 0.25 * math.sqrt(5 / pi)
    c22 = 0.25 * math.sqrt(15 / pi)
    c33 = 0.25 * math.sqrt(35 / (2 * pi))
    c32 = 0.5 * math.sqrt(105 / pi)
    c31 = 0.25 * math.sqrt(21 / (2 * pi))
    c30 = 0.25 * math.sqrt(7 / pi)
    c32b = 0.25 * math.sqrt(105 / pi)
    return [
        c0,
        -c1 * y,
        c1 * z,
        -c1 * x,
        c2a * x * y,
        -c2a * y * z,
        c20 * (3 * z * z - 1),
        -c2a * x * z,
        c22 * (x * x - y * y),
        -c33 * y * (3 * x * x - y * y),
        c32 * x * y * z,
        -c31 * y * (5 * z * z - 1),
        c30 * z * (5 * z * z - 3),
        -c31 * x * (5 * z * z - 1),
        c32b * z * (x * x - y * y),
        -c33 * x * (x * x - 3 * y * y),
    ]


def test_sh_hand_computed_values() -> None:
    # On the axes most functions vanish; the survivors are simple numbers.
    at_z = spherical_harmonics_deg4(torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64))[0]
    expected_z = [0.0] * 16
    expected_z[0] = 0.28209479177387814  # 1 / (2 sqrt(pi))
    expected_z[2] = 0.48860251190291987  # sqrt(3 / (4 pi))
    expected_z[6] = 0.6307831305050401  # sqrt(5 / pi) / 2
    expected_z[12] = 0.7463526651802308  # sqrt(7 / pi) / 2
    torch.testing.assert_close(at_z, torch.tensor(expected_z, dtype=torch.float64), atol=1e-12, rtol=0)

    at_x = spherical_harmonics_deg4(torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))[0]
    expected_x = [0.0] * 16
    expected_x[0] = 0.28209479177387814
    expected_x[3] = -0.48860251190291987
    expected_x[6] = -0.31539156525252005  # -sqrt(5 / pi) / 4
    expected_x[8] = 0.5462742152960396  # sqrt(15 / pi) / 4
    expected_x[13] = 0.4570457994644658  # sqrt(21 / (2 pi)) / 4
    expected_x[15] = -0.5900435899266435  # -sqrt(35 / (2 pi)) / 4
    torch.testing.assert_close(at_x, torch.tensor(expected_x, dtype=torch.float64), atol=1e-12, rtol=0)


def test_sh_matches_closed_forms_at_random_directions() -> None:
    d = unit(torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    got = spherical_harmonics_deg4(d)
    expected = torch.tensor([hand_sh(*row) for row in d.tolist()], dtype=torch.float64)
    assert got.shape == (50, 16)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_sh_orthonormal_on_the_sphere() -> None:
    n = 400_000
    d = unit(torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    y = spherical_harmonics_deg4(d)
    gram = (4.0 * math.pi / n) * (y.T @ y)  # Monte-Carlo estimate of the integral of Y_i Y_j over S^2
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=0.03, rtol=0)


# -- the field ----------------------------------------------------------------------------------
@pytest.fixture(params=CONVENTIONS)
def field(request) -> NGPField:
    torch.manual_seed(0)
    return NGPField(dataclasses.replace(SPEC, grid=dataclasses.replace(GRID, convention=request.param)), BOUND)


def test_field_output_shape_and_activations(field: NGPField) -> None:
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(500, 3, generator=gen) * 2 - 1) * BOUND
    d = unit(torch.randn(500, 3, generator=gen))
    raw = field(x, d)
    assert raw.shape == (500, RAW_DIM) == (500, 4) and raw.dtype == torch.float32
    assert torch.isfinite(raw).all()
    sigma, rgb = activate(raw)
    assert sigma.shape == (500,) and rgb.shape == (500, 3)
    assert (sigma > 0).all()
    assert (rgb > 0).all() and (rgb < 1).all()
    # density_raw is the density column of the full forward, without needing directions.
    torch.testing.assert_close(field.density_raw(x), raw[:, 0])
    # The density does not depend on the view direction; the colour does.
    raw2 = field(x, -d)
    torch.testing.assert_close(raw2[:, 0], raw[:, 0])
    assert not torch.allclose(raw2[:, 1:], raw[:, 1:])


def test_field_gradients_reach_every_parameter(field: NGPField) -> None:
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(256, 3, generator=gen) * 2 - 1) * BOUND
    d = unit(torch.randn(256, 3, generator=gen))
    sigma, rgb = activate(field(x, d))
    (sigma.sum() + rgb.sum()).backward()
    for name, p in field.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_field_positions_outside_the_box_are_finite(field: NGPField) -> None:
    x = torch.tensor([[BOUND + 1e-4, -BOUND - 1e-4, 0.0], [3 * BOUND, 3 * BOUND, -3 * BOUND]])
    d = unit(torch.ones(2, 3))
    assert torch.isfinite(field(x, d)).all()


def test_activate_and_trunc_exp() -> None:
    raw = torch.tensor([[0.0, 0.0, 2.0, -2.0], [-3.0, 10.0, -10.0, 0.5]], requires_grad=True)
    sigma, rgb = activate(raw)
    torch.testing.assert_close(sigma, torch.exp(raw[:, 0]))
    torch.testing.assert_close(rgb, torch.sigmoid(raw[:, 1:]))
    # trunc_exp: exact exp forward, gradient clamped at exp(15).
    x = torch.tensor([0.0, 5.0, 20.0], requires_grad=True)
    y = trunc_exp(x)
    torch.testing.assert_close(y, torch.exp(x.detach()))
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.exp(torch.tensor([0.0, 5.0, 15.0])))


def test_backend_resolution_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == "torch"
    assert resolve_backend("torch", cpu) == "torch"
    with pytest.raises(ConfigError, match="tcnn"):
        resolve_backend("tcnn", cpu)
    with pytest.raises(ConfigError, match="nope"):
        resolve_backend("nope", cpu)
    assert isinstance(build_field(SPEC, BOUND, "auto", cpu), NGPField)


def test_gridencoder_convention_never_runs_on_tcnn(monkeypatch) -> None:
    """tcnn has only its own lattice: 'auto' falls back to torch, an explicit 'tcnn' names the key."""
    import ngp_ohem.field as field_module

    monkeypatch.setattr(field_module, "tcnn_available", lambda: True)
    cuda = torch.device("cuda")
    assert resolve_backend("auto", cuda) == resolve_backend("auto", cuda, "tcnn") == "tcnn"
    assert resolve_backend("auto", cuda, "gridencoder") == "torch"
    with pytest.raises(ConfigError, match=r"'field\.grid_convention'"):
        resolve_backend("tcnn", cuda, "gridencoder")
    with pytest.raises(ConfigError, match=r"'field\.grid_convention'"):
        hashgrid_config(dataclasses.replace(GRID, convention="gridencoder"))
    grid = dataclasses.replace(GRID, convention="gridencoder")
    built = build_field(dataclasses.replace(SPEC, grid=grid), BOUND, "auto", torch.device("cpu"))
    assert isinstance(built, NGPField) and built.encoding.spec.convention == "gridencoder"


# -- tiny-cuda-nn config translation ------------------------------------------------------------
@pytest.mark.parametrize(
    "grid",
    [GRID, HashGridSpec(), HashGridSpec(n_levels=16, n_features=2, log2_table_size=17, base_resolution=16,
                                        max_resolution=3072)],
)  # fmt: skip
def test_tcnn_hashgrid_config_matches_spec(grid: HashGridSpec) -> None:
    cfg = hashgrid_config(grid)
    assert cfg["otype"] == "HashGrid"
    assert cfg["n_levels"] == grid.n_levels
    assert cfg["n_features_per_level"] == grid.n_features
    assert cfg["log2_hashmap_size"] == grid.log2_table_size
    assert cfg["base_resolution"] == grid.base_resolution
    assert cfg["per_level_scale"] == grid.growth
    # tcnn's level scale is base_resolution * per_level_scale**l - 1, so its coarsest level spans
    # base_resolution - 1 cells and its finest max_resolution - 1: ours must be the same lattice.
    assert grid.convention == "tcnn"
    assert grid.scale(0) == pytest.approx(grid.base_resolution - 1.0, rel=1e-12)
    assert grid.scale(grid.n_levels - 1) == pytest.approx(grid.max_resolution - 1.0, rel=1e-9)
    assert grid.shift() == 0.5
    top = cfg["base_resolution"] * cfg["per_level_scale"] ** (grid.n_levels - 1)
    assert top == pytest.approx(grid.max_resolution, rel=1e-9)


def linear_widths(net: torch.nn.Sequential) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in net if isinstance(m, torch.nn.Linear)]


def test_tcnn_mlp_config_matches_torch_networks(field: NGPField) -> None:
    density = mlp_config(SPEC.hidden, SPEC.density_layers)
    color = mlp_config(SPEC.hidden, SPEC.color_layers)
    for cfg in (density, color):
        assert cfg["otype"] == "FullyFusedMLP" and cfg["activation"] == "ReLU"
        assert cfg["output_activation"] == "None" and cfg["n_neurons"] == SPEC.hidden
    assert density["n_hidden_layers"] == SPEC.density_layers
    assert color["n_hidden_layers"] == SPEC.color_layers
    # The torch networks have exactly those hidden layers, widths and inputs/outputs.
    d_widths = linear_widths(field.density_net)
    c_widths = linear_widths(field.color_net)
    assert len(d_widths) == density["n_hidden_layers"] + 1
    assert len(c_widths) == color["n_hidden_layers"] + 1
    assert d_widths[0] == (GRID.output_dim, SPEC.hidden) and d_widths[-1] == (SPEC.hidden, 1 + SPEC.geo_features)
    assert c_widths[0] == (16 + SPEC.geo_features, SPEC.hidden) and c_widths[-1] == (SPEC.hidden, 3)
    assert all(w == (SPEC.hidden, SPEC.hidden) for w in d_widths[1:-1] + c_widths[1:-1])
    assert not any(m.bias is not None for m in field.modules() if isinstance(m, torch.nn.Linear))
    # SH degree 4 in tcnn terms = 16 outputs, what the colour net's input expects.
    assert SH_CONFIG == {"otype": "SphericalHarmonics", "degree": 4}
    assert SH_CONFIG["degree"] ** 2 == spherical_harmonics_deg4(torch.ones(1, 3)).shape[1] == 16
