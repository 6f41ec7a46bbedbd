"""Memory meters for a training step.

* ``GraphBytesMeter``: the bytes the autograd graph saves for backward (via
  ``torch.autograd.graph.saved_tensors_hooks``), counted once per distinct storage and excluding the
  model's parameters (static load). Exact, deterministic and device-independent: the meter the
  regression checks use.
* ``CudaPeakMeter``: on CUDA, the allocator's peak during the step minus what was allocated when the
  step began (the paper's "peak minus static load", reset every step).
* ``peak_rss_bytes``: the process's peak resident set size (CPU runs).
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterable

import torch


class GraphBytesMeter:
    """Context manager that adds up the distinct storages saved for backward inside it."""

    def __init__(self, parameters: Iterable[torch.Tensor] = ()) -> None:
        self._static = {p.untyped_storage().data_ptr() for p in parameters}
        self._seen: set[int] = set()
        self.bytes = 0
        self._hooks: torch.autograd.graph.saved_tensors_hooks | None = None

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self._static and ptr not in self._seen:
            self._seen.add(ptr)
            self.bytes += storage.nbytes()
        return t

    def __enter__(self) -> GraphBytesMeter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._hooks is not None
        self._hooks.__exit__(*exc)


class CudaPeakMeter:
    """Peak CUDA allocation during a block minus the allocation at its start (0 on CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.enabled = device.type == "cuda"
        self.device = device
        self.bytes = 0
        self._base = 0

    def __enter__(self) -> CudaPeakMeter:
        if self.enabled:
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._base


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
