"""Multiresolution hash encoding (Müller et al. 2022) in PyTorch, for CPU and CUDA.

Level l has the grid scale ``s_l = N_min * b**l - 1`` with ``b = exp(ln(N_max / N_min) / (L - 1))``;
a position x in [0, 1]^3 maps to ``p = x * s_l + 0.5`` and is trilinearly interpolated from the 8
integer corners around p (the convention of Instant-NGP and torch-ngp). A level whose corner lattice
``(ceil(s_l) + 2)^3`` fits in the table is indexed densely; larger levels use the spatial hash
``(c_x * 1 XOR c_y * 2654435761 XOR c_z * 805459861) mod T``. Positions are clamped to [0, 1] first,
so marching round-off a hair outside the box can never produce an out-of-range index.

The autograd function saves only the input positions and recomputes corner indices and weights in
backward (as the fused CUDA encoders do): the graph then holds 12 bytes per sample for the encoding,
which keeps the memory meters honest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from ngp_ohem.field.native import load_native

HASH_PRIMES = (1, 2654435761, 805459861)

# Offsets of the 8 corners of a unit cube, shape (8, 3), in the order (x fastest).
_CORNERS = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=torch.int64)


@dataclass(frozen=True)
class HashGridSpec:
    """Hyper-parameters of the encoding (paper defaults: L=16, F=2, T=2^19, N_min=16)."""

    n_levels: int = 16
    n_features: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 2048

    @property
    def table_size(self) -> int:
        return 1 << self.log2_table_size

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.n_features

    @cached_property
    def growth(self) -> float:
        if self.n_levels == 1:
            return 1.0
        return math.exp((math.log(self.max_resolution) - math.log(self.base_resolution)) / (self.n_levels - 1))

    def scale(self, level: int) -> float:
        return self.base_resolution * self.growth**level - 1.0

    def side(self, level: int) -> int:
        """Number of lattice points per axis that a dense level needs."""
        return math.ceil(self.scale(level)) + 2

    def is_dense(self, level: int) -> bool:
        return self.side(level) ** 3 <= self.table_size

    def level_size(self, level: int) -> int:
        size = self.side(level) ** 3 if self.is_dense(level) else self.table_size
        return (size + 7) // 8 * 8

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """Start row of every level in the concatenated parameter table, plus the total at the end."""
        starts = [0]
        for level in range(self.n_levels):
            starts.append(starts[-1] + self.level_size(level))
        return tuple(starts)

    @property
    def n_params_rows(self) -> int:
        return self.offsets[-1]


class _LevelConstants:
    """Per-level tensors used by the vectorised index computation, cached per device."""

    def __init__(self, spec: HashGridSpec, device: torch.device) -> None:
        levels = range(spec.n_levels)
        self.scale = torch.tensor([spec.scale(lv) for lv in levels], dtype=torch.float32, device=device)
        self.side = torch.tensor([spec.side(lv) for lv in levels], dtype=torch.int64, device=device)
        self.dense = torch.tensor([spec.is_dense(lv) for lv in levels], dtype=torch.bool, device=device)
        self.offset = torch.tensor(spec.offsets[:-1], dtype=torch.int64, device=device)
        self.corners = _CORNERS.to(device)
        self.mask = spec.table_size - 1


def corner_indices_and_weights(
    x01: torch.Tensor, spec: HashGridSpec, consts: _LevelConstants
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global table rows (N, L, 8) and trilinear weights (N, L, 8) for positions in [0, 1]^3."""
    x01 = x01.clamp(0.0, 1.0)
    pos = x01[:, None, :] * consts.scale[None, :, None] + 0.5  # (N, L, 3)
    base = pos.floor()
    frac = pos - base
    corner = base.to(torch.int64)[:, :, None, :] + consts.corners[None, None]  # (N, L, 8, 3)
    side = consts.side[None, :, None]
    dense_index = corner[..., 0] + corner[..., 1] * side + corner[..., 2] * side * side
    hashed = (corner[..., 0] * HASH_PRIMES[0]) ^ (corner[..., 1] * HASH_PRIMES[1]) ^ (corner[..., 2] * HASH_PRIMES[2])
    hashed = hashed & consts.mask
    local = torch.where(consts.dense[None, :, None], dense_index, hashed)
    index = local + consts.offset[None, :, None]
    c = consts.corners.to(frac.dtype)  # (8, 3)
    f = frac[:, :, None, :]  # (N, L, 1, 3)
    weights = (c * f + (1 - c) * (1 - f)).prod(-1)  # (N, L, 8)
    return index, weights


class _HashGridFunction(torch.autograd.Function):
    """Encoding with a memory-lean graph: saves the positions, recomputes indices in backward."""

    @staticmethod
    def forward(ctx, x01: torch.Tensor, table: torch.Tensor, spec: HashGridSpec, consts: _LevelConstants):
        index, weights = corner_indices_and_weights(x01, spec, consts)
        feats = table[index]  # (N, L, 8, F)
        out = (feats * weights[..., None]).sum(2)
        ctx.save_for_backward(x01)
        ctx.spec, ctx.consts, ctx.table_shape = spec, consts, table.shape
        return out.reshape(x01.shape[0], -1)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x01,) = ctx.saved_tensors
        spec, consts = ctx.spec, ctx.consts
        index, weights = corner_indices_and_weights(x01, spec, consts)
        grad = grad_out.reshape(x01.shape[0], spec.n_levels, 1, spec.n_features) * weights[..., None]
        grad_table = torch.zeros(ctx.table_shape, dtype=grad_out.dtype, device=grad_out.device)
        grad_table.index_add_(0, index.reshape(-1), grad.reshape(-1, spec.n_features))
        return None, grad_table, None, None


class _NativeHashGridFunction(torch.autograd.Function):
    """The same computation through the fused C++ kernels (CPU); same saved tensors."""

    @staticmethod
    def forward(ctx, x01: torch.Tensor, table: torch.Tensor, consts: _LevelConstants, native):
        ctx.save_for_backward(x01)
        ctx.consts, ctx.native, ctx.n_rows = consts, native, table.shape[0]
        c = consts
        return native.forward(x01, table.contiguous(), c.scale, c.side, c.dense, c.offset, c.mask)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x01,) = ctx.saved_tensors
        c = ctx.consts
        grad_table = ctx.native.backward(
            grad_out.contiguous(), x01, ctx.n_rows, c.scale, c.side, c.dense, c.offset, c.mask
        )
        return None, grad_table, None, None


class HashGridEncoding(torch.nn.Module):
    """Maps positions in [0, 1]^3 (N, 3) to concatenated level features (N, L * F)."""

    def __init__(self, spec: HashGridSpec, init_scale: float = 1e-4, use_native: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.use_native = use_native
        self.table = torch.nn.Parameter(
            torch.empty(spec.n_params_rows, spec.n_features).uniform_(-init_scale, init_scale)
        )
        self._consts: _LevelConstants | None = None

    def constants(self) -> _LevelConstants:
        device = self.table.device
        if self._consts is None or self._consts.scale.device != device:
            self._consts = _LevelConstants(self.spec, device)
        return self._consts

    @property
    def implementation(self) -> str:
        """'native' (fused C++ kernels, CPU) or 'torch' (vectorised PyTorch, CPU and CUDA)."""
        if self.use_native and self.table.device.type == "cpu" and load_native() is not None:
            return "native"
        return "torch"

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        x01 = x01.float().contiguous()
        if self.implementation == "native":
            return _NativeHashGridFunction.apply(x01, self.table, self.constants(), load_native())
        return _HashGridFunction.apply(x01, self.table, self.spec, self.constants())
