"""Mixed precision for the network calls (the authors' ``-O``: fp16 autocast and a GradScaler on CUDA).

``precision: mixed`` runs every network call (training forwards, occupancy-grid density queries,
evaluation) under autocast and hands its outputs back in fp32, so compositing and the loss stay in
fp32 as in the authors' code (their compositing kernels cast inputs to fp32). On CUDA the autocast
type is fp16 and the loss is scaled by a ``GradScaler`` (an overflowing step is skipped and the
scale lowered); on the CPU it is bf16, which has fp32's exponent range and needs no scaler. The
fused no-graph CPU field kernel is fp32 whatever the setting (autocast does not reach it).
``fp32`` leaves every call untouched.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from ngp_ohem.config import PRECISIONS


class Precision:
    """Autocast and loss scaling for one run: ``dtype`` None means fp32 throughout."""

    def __init__(self, mode: str, device: torch.device, dtype: torch.dtype | None = None) -> None:
        if mode not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {mode!r}")
        self.mode = mode
        self.device_type = device.type
        if mode == "fp32":
            self.dtype = None
        else:  # the CUDA default is the authors' fp16; the CPU's is bf16 (``dtype`` forces one, for tests)
            self.dtype = dtype or (torch.float16 if device.type == "cuda" else torch.bfloat16)
        self.scaler = torch.amp.GradScaler(self.device_type) if self.dtype == torch.float16 else None

    @property
    def label(self) -> str:
        return "fp32" if self.dtype is None else str(self.dtype).removeprefix("torch.")

    def autocast(self) -> AbstractContextManager:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scale(self, tensor: torch.Tensor) -> torch.Tensor:
        """What ``backward`` is called on: the tensor times the loss scale (itself without a scaler)."""
        return tensor if self.scaler is None else self.scaler.scale(tensor)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer step; with a scaler, unscaled and skipped when a gradient overflowed."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict | None:
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


class AutocastField(torch.nn.Module):
    """``field`` with its calls under ``precision``'s autocast and its outputs in fp32."""

    def __init__(self, field: torch.nn.Module, precision: Precision) -> None:
        super().__init__()
        self.field = field
        self.precision = precision

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast():
            return self.field(x, d).float()

    def density_raw(self, x: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast():
            return self.field.density_raw(x).float()


def network(field: torch.nn.Module, precision: Precision) -> torch.nn.Module:
    """What the strategies, the grid and the renderer call: the field itself in fp32, else wrapped."""
    return field if precision.dtype is None else AutocastField(field, precision)
