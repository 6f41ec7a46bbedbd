"""Multiresolution hash encoding (Müller et al. 2022) in PyTorch, for CPU and CUDA.

Two conventions place the lattice of level l (``HashGridSpec.convention``):

``"tcnn"`` (Instant-NGP / tiny-cuda-nn): grid scale ``s_l = N_min * b**l - 1`` with
``b = exp(ln(N_max / N_min) / (L - 1))``; a position x in [0, 1]^3 maps to ``p = x * s_l + 0.5``. A
level whose corner lattice ``(ceil(s_l) + 2)^3`` fits in the table is indexed densely, and gets that
many rows rounded up to 8.

``"gridencoder"`` (torch-ngp's ``gridencoder``, the HSM authors' code): ``b = 2**(log2(N_max / N_min)
/ (L - 1))``, resolution ``r_l = ceil(N_min * b**l)`` (as their CUDA kernel computes it, in float32:
``ceil(exp2f(l * float(log2 b)) * N_min)``), ``p = clamp(x * r_l - 0.5, 0, r_l - 1)``, upper corner
``min(floor(p) + 1, r_l - 1)``. Level l gets ``min(T, R_l^3)`` rows rounded up to 8, with ``R_l`` their
float64 ``ceil(N_min * b**l)``, and is dense when ``r_l^3`` fits in its rows. A position with any
coordinate outside [0, 1] encodes to 0 at every level (and gets no gradient).

Both: trilinear interpolation from the 8 integer corners around p; dense row ``c_x + c_y r + c_z r^2``
(r the lattice side); hashed row ``(c_x * 1 XOR c_y * 2654435761 XOR c_z * 805459861) mod T``.
Positions are clamped to [0, 1] first, so marching round-off a hair outside the box can
never produce an out-of-range index.

The autograd function saves only the input positions and recomputes corner indices and weights in
backward (as the fused CUDA encoders do): the graph then holds 12 bytes per sample for the encoding,
which keeps the memory meters honest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from ngp_ohem.field.native import load_native

HASH_PRIMES = (1, 2654435761, 805459861)

# Offsets of the 8 corners of a unit cube, shape (8, 3), in the order (x fastest).
_CORNERS = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=torch.int64)


CONVENTIONS = ("tcnn", "gridencoder")


@dataclass(frozen=True)
class HashGridSpec:
    """Hyper-parameters of the encoding (paper defaults: L=16, F=2, T=2^19, N_min=16) and the lattice
    convention (module docstring; ``"tcnn"`` here so that a bare spec keeps its old meaning)."""

    n_levels: int = 16
    n_features: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 2048
    convention: str = "tcnn"

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise ValueError(f"unknown hash-grid convention {self.convention!r}; choose one of {CONVENTIONS}")
        for level in range(self.n_levels):
            if not self.is_dense(level) and self.level_size(level) != self.table_size:
                # Only when gridencoder's float64 and float32 resolutions straddle a dense/hashed boundary.
                raise ValueError(f"hash-grid level {level}: hashed, but its slice is not the table size")

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
        if self.convention == "gridencoder":  # their per_level_scale, through numpy's exp2 / log2
            return float(np.exp2(np.log2(self.max_resolution / self.base_resolution) / (self.n_levels - 1)))
        return math.exp((math.log(self.max_resolution) - math.log(self.base_resolution)) / (self.n_levels - 1))

    def resolution(self, level: int) -> int:
        """gridencoder's r_l as its kernel computes it: ceil(exp2f(l * float32(log2 b)) * N_min), float32."""
        s = np.float32(np.log2(self.growth))
        return int(np.ceil(np.exp2(np.float32(level) * s) * np.float32(self.base_resolution)))

    def scale(self, level: int) -> float:
        """The factor of x in p = x * scale + shift."""
        if self.convention == "gridencoder":
            return float(self.resolution(level))
        return self.base_resolution * self.growth**level - 1.0

    def shift(self) -> float:
        return -0.5 if self.convention == "gridencoder" else 0.5

    def side(self, level: int) -> int:
        """Lattice points per axis: the row stride of a dense level, and one more than the largest corner
        coordinate (the clamps at side - 1 never bind under tcnn)."""
        if self.convention == "gridencoder":
            return self.resolution(level)
        return math.ceil(self.scale(level)) + 2

    def is_dense(self, level: int) -> bool:
        if self.convention == "gridencoder":  # their kernel: dense while the lattice fits in the level's rows
            return self.side(level) ** 3 <= self.level_size(level)
        return self.side(level) ** 3 <= self.table_size

    def level_size(self, level: int) -> int:
        """Rows of level l in the concatenated table, a multiple of 8."""
        if self.convention == "gridencoder":  # their allocation, in float64, before the kernel's float32
            size = min(self.table_size, math.ceil(self.base_resolution * self.growth**level) ** 3)
        else:
            size = self.side(level) ** 3 if self.is_dense(level) else self.table_size
        return (size + 7) // 8 * 8

    @property
    def zero_outside(self) -> bool:
        """gridencoder encodes a position outside [0, 1]^3 to 0; tcnn clamps it to the box."""
        return self.convention == "gridencoder"

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
        self.shift = torch.full((spec.n_levels,), spec.shift(), dtype=torch.float32, device=device)
        self.side = torch.tensor([spec.side(lv) for lv in levels], dtype=torch.int64, device=device)
        self.dense = torch.tensor([spec.is_dense(lv) for lv in levels], dtype=torch.bool, device=device)
        self.offset = torch.tensor(spec.offsets[:-1], dtype=torch.int64, device=device)
        self.corners = _CORNERS.to(device)
        self.mask = spec.table_size - 1
        self.zero_outside = spec.zero_outside
        self.clamp_to_side = spec.convention == "gridencoder"

    def kernel_args(self) -> tuple:
        """The level constants as the C++ kernels take them (hashgrid_levels.h, read_levels)."""
        return self.scale, self.shift, self.side, self.dense, self.offset, self.zero_outside, self.mask


def corner_indices_and_weights(
    x01: torch.Tensor, spec: HashGridSpec, consts: _LevelConstants
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global table rows (N, L, 8) and trilinear weights (N, L, 8) for positions in [0, 1]^3."""
    outside = ((x01 < 0.0) | (x01 > 1.0)).any(-1) if consts.zero_outside else None  # (N,)
    x01 = x01.clamp(0.0, 1.0)
    pos = x01[:, None, :] * consts.scale[None, :, None] + consts.shift[None, :, None]  # (N, L, 3)
    top = (consts.side - 1)[None, :, None]  # the largest corner coordinate
    if consts.clamp_to_side:  # the kernels clamp always; under tcnn neither clamp can bind, so skip the passes
        pos = torch.minimum(pos.clamp(min=0.0), top.to(pos.dtype))
    base = pos.floor()
    frac = pos - base
    corner = base.to(torch.int64)[:, :, None, :] + consts.corners[None, None]  # (N, L, 8, 3)
    if consts.clamp_to_side:
        corner = torch.minimum(corner, top[..., None])
    side = consts.side[None, :, None]
    dense_index = corner[..., 0] + corner[..., 1] * side + corner[..., 2] * side * side
    hashed = (corner[..., 0] * HASH_PRIMES[0]) ^ (corner[..., 1] * HASH_PRIMES[1]) ^ (corner[..., 2] * HASH_PRIMES[2])
    hashed = hashed & consts.mask
    local = torch.where(consts.dense[None, :, None], dense_index, hashed)
    index = local + consts.offset[None, :, None]
    c = consts.corners.to(frac.dtype)  # (8, 3)
    f = frac[:, :, None, :]  # (N, L, 1, 3)
    weights = (c * f + (1 - c) * (1 - f)).prod(-1)  # (N, L, 8)
    if outside is not None:
        weights = weights.masked_fill(outside[:, None, None], 0.0)
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
    """The same computation through the fused C++ kernels (CPU); same saved tensors.

    ``features``, when given, are these positions' encodings already computed by the same kernel code
    (the fused no-graph pass keeps them, bit-identical): the forward returns them instead of gathering
    again, the backward is unchanged.

    The backward adds the table gradient straight into ``table.grad`` (created zero when absent), as
    autograd's accumulation would, and hands autograd nothing for the table: a fresh (rows, F) gradient
    per step, zeroed, filled and then added into ``.grad``, was a fixed cost of every step whatever the
    number of samples (the trainer zeroes ``.grad`` in place instead, ``zero_grad(set_to_none=False)``).
    Hooks on the table therefore do not see this gradient."""

    @staticmethod
    def forward(ctx, x01: torch.Tensor, table: torch.Tensor, consts: _LevelConstants, native, features=None):
        ctx.save_for_backward(x01)
        ctx.consts, ctx.native, ctx.table = consts, native, table
        if features is not None:
            return features.view_as(features)  # a new tensor object on the same memory: no copy
        return native.forward(x01, table.contiguous(), *consts.kernel_args())

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x01,) = ctx.saved_tensors
        table, args = ctx.table, ctx.consts.kernel_args()
        if table.grad is None:
            table.grad = torch.zeros_like(table, memory_format=torch.contiguous_format)
        grad = table.grad
        if grad.is_contiguous() and grad.dtype == torch.float32 and grad.shape == table.shape:
            ctx.native.backward_into(grad_out.contiguous(), x01, grad, *args)
        else:  # a .grad someone else made (another layout or dtype): add a fresh gradient into it
            grad += ctx.native.backward(grad_out.contiguous(), x01, table.shape[0], *args)
        return None, None, None, None, None


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

    def forward(self, x01: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """``features``: the encodings of ``x01`` computed earlier by the native kernels (native only)."""
        x01 = x01.float().contiguous()
        if self.implementation == "native":
            return _NativeHashGridFunction.apply(x01, self.table, self.constants(), load_native(), features)
        if features is not None:
            raise ValueError("reused hash-grid features need the native encoding")
        return _HashGridFunction.apply(x01, self.table, self.spec, self.constants())
