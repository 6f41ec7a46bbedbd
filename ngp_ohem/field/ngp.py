"""The Instant-NGP radiance field ``(x, d) -> raw`` with raw = (density_pre, r_pre, g_pre, b_pre).

Activations (truncated exp for density, sigmoid for colour) are applied *outside* the field by
:func:`activate`, so that hard sample mining can differentiate the loss with respect to the four
pre-activation outputs of every sample without touching the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ngp_ohem.field.hashgrid import HashGridEncoding, HashGridSpec
from ngp_ohem.field.native import load_field_native
from ngp_ohem.field.sh import spherical_harmonics_deg4

RAW_DIM = 4  # density_pre + 3 colour pre-activations


@dataclass(frozen=True)
class FieldSpec:
    """Network hyper-parameters (Instant-NGP / torch-ngp defaults)."""

    grid: HashGridSpec
    hidden: int = 64
    geo_features: int = 15
    density_layers: int = 1  # hidden layers of the density MLP
    color_layers: int = 2  # hidden layers of the colour MLP
    color_hidden: int = 0  # width of the colour MLP's hidden layers (0: ``hidden``)

    @property
    def color_width(self) -> int:
        return self.color_hidden or self.hidden


class _TruncExp(torch.autograd.Function):
    """exp(x) whose gradient is clamped at exp(15), as in torch-ngp, to keep early training stable."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


def activate(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Density (N,) and colour (N, 3) from the field's pre-activation outputs (N, 4)."""
    return trunc_exp(raw[:, 0]), torch.sigmoid(raw[:, 1:4])


def mlp(n_in: int, n_hidden: int, n_layers: int, n_out: int) -> nn.Sequential:
    """Bias-free ReLU MLP (tiny-cuda-nn's FullyFusedMLP has no biases either)."""
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(n_layers):
        layers += [nn.Linear(width, n_hidden, bias=False), nn.ReLU(inplace=True)]
        width = n_hidden
    layers.append(nn.Linear(width, n_out, bias=False))
    return nn.Sequential(*layers)


def _transposed_weights(net: nn.Sequential) -> list[torch.Tensor]:
    """The (in, out) weight matrices of a bias-free MLP, as the fused kernel reads them."""
    return [m.weight.detach().t().contiguous() for m in net if isinstance(m, nn.Linear)]


def mlp_rows(n: int) -> int:
    """Rows the CPU's graph MLPs run on for a batch of n: n rounded up to a sixteenth of its power of two
    (at least 64), so at most ~6 % more.

    oneDNN, which runs the CPU's bf16 matmuls, JIT-compiles a kernel for every new matrix shape, and a
    training batch has a new sample count every step. A bias-free 32-64-16 MLP's forward and backward at
    changing counts, plain vs rounded (2 threads, ``benchmarks/adhoc/mm_shapes.py``): bf16 4.1x slower at
    18k rows, 2.0x at 60k; fp32 1.6x at 18k. Rounding keeps the shapes to a few dozen, compiled once."""
    if n <= 64:
        return 64 if n else 0
    quantum = max(64, (1 << (n.bit_length() - 1)) // 16)
    return -(-n // quantum) * quantum


def _pad_rows(t: torch.Tensor, m: int) -> torch.Tensor:
    """``t`` (n, ...) with its last row repeated up to m rows: finite, and discarded after the MLPs."""
    n = t.shape[0]
    return t if m == n else torch.cat([t, t[-1:].expand(m - n, *t.shape[1:])])


def bf16_autocast() -> bool:
    """Whether the current CPU calls run under bf16 autocast (``precision: mixed`` on the CPU)."""
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


class NGPField(nn.Module):
    """Pure-PyTorch Instant-NGP field; positions are world coordinates inside [-bound, bound]^3.

    Evaluations without autograd (``torch.no_grad`` / ``inference_mode``: mining's first pass,
    occupancy-grid queries, evaluation renders) on the CPU run the whole field through one fused native
    kernel (``csrc/field_infer_cpu.cpp``) that stores nothing for backward and keeps each tile's
    intermediates in cache; under bf16 autocast its MLPs run in bf16 with fp32 accumulation (on AMX
    tiles where the CPU and OS allow, ``use_amx``; else AVX-512 BF16 dot products), as autocast runs the
    module path. The tests compare it with the module path;
    ``fused_inference=False`` turns it off. Its encoding is the training encoder's, bit for bit, so
    :meth:`infer_keeping_features` can hand it to the hard pass (``forward(..., features=)``).
    """

    backend = "torch"

    def __init__(self, spec: FieldSpec, bound: float, fused_inference: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.bound = float(bound)
        self.fused_inference = fused_inference
        self.use_amx = True  # bf16 MLPs on AMX tiles where the CPU and OS allow (else AVX-512 BF16)
        self.encoding = HashGridEncoding(spec.grid)
        self.density_net = mlp(spec.grid.output_dim, spec.hidden, spec.density_layers, 1 + spec.geo_features)
        self.color_net = mlp(16 + spec.geo_features, spec.color_width, spec.color_layers, 3)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.bound) / (2.0 * self.bound)

    def inference_kernel(self):
        """The fused no-graph kernel when it applies (CPU, autograd off, built, bf16 if autocast asks), else None."""
        if not self.fused_inference or torch.is_grad_enabled() or self.encoding.table.device.type != "cpu":
            return None
        if self.encoding.implementation != "native":
            return None
        kernel = load_field_native()
        if kernel is None:
            return None
        if torch.is_autocast_enabled("cpu") and not (bf16_autocast() and kernel.has_bf16_dot()):
            return None  # an autocast the kernel does not do (fp16, or bf16 without AVX-512 BF16)
        return kernel

    def _fused(self, kernel, x: torch.Tensor, d: torch.Tensor | None, keep_features: bool = False):
        c = self.encoding.constants()
        x01 = self.normalise(x).float().contiguous()
        dirs = x01 if d is None else d.float().contiguous()
        return kernel.field_forward(
            x01, dirs, self.encoding.table.detach(), *c.kernel_args(),
            _transposed_weights(self.density_net), _transposed_weights(self.color_net), d is None,
            bf16_autocast(), keep_features, self.use_amx,
        )  # fmt: skip

    def density_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation density (N,) only: what the occupancy grid update needs."""
        kernel = self.inference_kernel()
        if kernel is not None:
            return self._fused(kernel, x, None)[0]
        n = x.shape[0]
        x = _pad_rows(x, mlp_rows(n)) if x.device.type == "cpu" else x
        return self.density_net(self.encoding(self.normalise(x)))[:n, 0]

    def infer_keeping_features(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """No-graph outputs (N, 4) and, when the fused kernel ran, the hash-grid features (N, L * F) it
        computed on the way: exactly what the training encoder would compute for these positions."""
        kernel = self.inference_kernel()
        if kernel is None:
            return self(x, d), None
        raw, features = self._fused(kernel, x, d, keep_features=True)
        return raw, features  # (the kernel returns a list)

    def forward(self, x: torch.Tensor, d: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """``features``: these positions' hash-grid features from :meth:`infer_keeping_features`.

        On the CPU the module path runs on :func:`mlp_rows` rows, the last sample repeated; the extra
        rows' outputs are dropped, so they get zero gradient and change nothing else."""
        kernel = self.inference_kernel() if features is None else None
        if kernel is not None:
            return self._fused(kernel, x, d)[0]
        n = x.shape[0]
        if x.device.type == "cpu":
            m = mlp_rows(n)
            x, d = _pad_rows(x, m), _pad_rows(d, m)
            features = None if features is None else _pad_rows(features, m)
        h = self.density_net(self.encoding(self.normalise(x), features))
        color_in = torch.cat([spherical_harmonics_deg4(d), h[:, 1:]], dim=-1)
        return torch.cat([h[:, :1], self.color_net(color_in)], dim=-1)[:n]
