"""Mixed precision for the network calls (the authors' ``-O``: fp16 autocast and a GradScaler on CUDA).

``precision: mixed`` runs every network call (training forwards, occupancy-grid density queries,
evaluation) under autocast and hands its outputs back in fp32, so compositing and the loss stay in
fp32 as in the authors' code (their compositing kernels cast inputs to fp32). On CUDA the autocast
type is fp16 and the loss is scaled by a ``GradScaler`` (an overflowing step is skipped and the
scale lowered); on a CPU that multiplies bf16 in hardware (AVX-512 BF16 or AMX) it is bf16, which has
fp32's exponent range and needs no scaler. The fused no-graph CPU field kernel reads the autocast
state and runs its MLPs in bf16 under it. On any other CPU ``mixed`` runs in fp32 and says so: there
torch emulates bf16, and the field's forward + backward costs several times fp32's (:data:`EMULATED_BF16_NOTE`).
``fp32`` leaves every call untouched.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from ngp_ohem.names import PRECISIONS

# Measured on a 2-core AMD EPYC (Zen 3, AVX2, no AVX-512), 2^16 samples, cpu preset field
# (benchmarks/adhoc/no_graph_precision.py): graph forward + backward fp32 218 ms, bf16 1015 ms;
# no-graph forward 99 / 312 ms.
EMULATED_BF16_NOTE = (
    "precision mixed runs in fp32 on this CPU: it has no native bf16 (AVX-512 BF16 or AMX), and emulated "
    "bf16 made the field's graph forward + backward ~4.7x slower than fp32 (benchmarks/adhoc/no_graph_precision.py)"
)


def cpu_bf16_is_native() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX tiles), as torch detects it."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


class Precision:
    """Autocast and loss scaling for one run: ``dtype`` None means fp32 throughout; ``note`` says why
    ``mixed`` fell back to fp32 (None when it did not)."""

    def __init__(
        self, mode: str, device: torch.device, dtype: torch.dtype | None = None, native_bf16: bool | None = None
    ) -> None:
        """``dtype`` forces an autocast type (tests); ``native_bf16`` overrides the CPU probe (tests)."""
        if mode not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {mode!r}")
        self.mode = mode
        self.device_type = device.type
        self.note: str | None = None
        if mode == "fp32":
            self.dtype = None
        elif dtype is not None:
            self.dtype = dtype
        elif device.type == "cuda":
            self.dtype = torch.float16  # the authors' -O
        elif cpu_bf16_is_native() if native_bf16 is None else native_bf16:
            self.dtype = torch.bfloat16
        else:
            self.dtype, self.note = None, EMULATED_BF16_NOTE
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

    def forward(self, x: torch.Tensor, d: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        with self.precision.autocast():
            if features is None:
                return self.field(x, d).float()
            return self.field(x, d, features=features).float()

    def infer_keeping_features(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with self.precision.autocast():
            raw, features = first_pass(self.field, x, d)
            return raw.float(), features

    def density_raw(self, x: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast():
            return self.field.density_raw(x).float()


def first_pass(field: torch.nn.Module, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A no-graph evaluation and the hash-grid features it computed, where the field can keep them."""
    keep = getattr(field, "infer_keeping_features", None)
    return keep(x, d) if keep is not None else (field(x, d), None)


def network(field: torch.nn.Module, precision: Precision) -> torch.nn.Module:
    """What the strategies, the grid and the renderer call: the field itself in fp32, else wrapped."""
    return field if precision.dtype is None else AutocastField(field, precision)
