"""The same Instant-NGP field through tiny-cuda-nn (optional GPU backend).

Only the config translation is importable without tiny-cuda-nn; it is unit-tested so that both
backends train the same architecture (same levels, features, table size, growth factor, widths).
tiny-cuda-nn places the lattice one way only (``field.grid_convention=tcnn``); the authors'
``gridencoder`` convention is rejected with a ConfigError naming the key.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ngp_ohem.errors import ConfigError
from ngp_ohem.field.hashgrid import HashGridSpec
from ngp_ohem.field.ngp import FieldSpec


def tcnn_available() -> bool:
    """True when tinycudann imports and a CUDA device exists."""
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401
    except ImportError:
        return False
    return True


def require_tcnn_convention(convention: str) -> None:
    """tcnn's HashGrid has one lattice convention, ours called "tcnn"; gridencoder's has no tcnn form."""
    if convention != "tcnn":
        raise ConfigError(
            f"invalid config value at 'field.grid_convention': '{convention}' is not available on backend "
            "'tcnn' (tiny-cuda-nn has only the tcnn lattice); set field.grid_convention=tcnn or backend=torch"
        )


def hashgrid_config(grid: HashGridSpec) -> dict[str, Any]:
    require_tcnn_convention(grid.convention)
    return {
        "otype": "HashGrid",
        "n_levels": grid.n_levels,
        "n_features_per_level": grid.n_features,
        "log2_hashmap_size": grid.log2_table_size,
        "base_resolution": grid.base_resolution,
        "per_level_scale": grid.growth,
    }


def mlp_config(hidden: int, n_layers: int) -> dict[str, Any]:
    return {
        "otype": "FullyFusedMLP",
        "activation": "ReLU",
        "output_activation": "None",
        "n_neurons": hidden,
        "n_hidden_layers": n_layers,
    }


SH_CONFIG: dict[str, Any] = {"otype": "SphericalHarmonics", "degree": 4}


class TcnnNGPField(nn.Module):
    """Instant-NGP field on tiny-cuda-nn; same interface as :class:`ngp_ohem.field.ngp.NGPField`."""

    backend = "tcnn"

    def __init__(self, spec: FieldSpec, bound: float) -> None:
        super().__init__()
        import tinycudann as tcnn

        self.spec = spec
        self.bound = float(bound)
        self.density_net = tcnn.NetworkWithInputEncoding(
            3, 1 + spec.geo_features, hashgrid_config(spec.grid), mlp_config(spec.hidden, spec.density_layers)
        )
        self.dir_encoding = tcnn.Encoding(3, SH_CONFIG)
        self.color_net = tcnn.Network(16 + spec.geo_features, 3, mlp_config(spec.color_width, spec.color_layers))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + self.bound) / (2.0 * self.bound)).clamp(0.0, 1.0)

    def density_raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.density_net(self.normalise(x))[:, 0].float()

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        h = self.density_net(self.normalise(x)).float()
        sh = self.dir_encoding((d + 1.0) / 2.0).float()
        rgb = self.color_net(torch.cat([sh, h[:, 1:]], dim=-1)).float()
        return torch.cat([h[:, :1], rgb], dim=-1)
