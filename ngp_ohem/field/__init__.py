"""The Instant-NGP radiance field and its encodings, with backend selection."""

from __future__ import annotations

import torch

from ngp_ohem.errors import ConfigError
from ngp_ohem.field.ngp import FieldSpec, NGPField
from ngp_ohem.field.tcnn import TcnnNGPField, require_tcnn_convention, tcnn_available

BACKENDS = ("auto", "torch", "tcnn")


def resolve_backend(backend: str, device: torch.device, convention: str = "tcnn") -> str:
    """'auto' picks tiny-cuda-nn on CUDA when importable and the lattice convention is tcnn's (the only
    one it has), else the pure-PyTorch reference."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "tcnn" if device.type == "cuda" and tcnn_available() and convention == "tcnn" else "torch"
    if backend == "tcnn" and (device.type != "cuda" or not tcnn_available()):
        raise ConfigError("backend 'tcnn' needs CUDA and the tinycudann package (pip install ngp-ohem[cuda])")
    if backend == "tcnn":
        require_tcnn_convention(convention)
    return backend


def build_field(spec: FieldSpec, bound: float, backend: str, device: torch.device) -> torch.nn.Module:
    """Construct the field for a resolved backend name on a device."""
    cls = TcnnNGPField if resolve_backend(backend, device, spec.grid.convention) == "tcnn" else NGPField
    return cls(spec, bound).to(device)
