"""The training clock: wall-clock seconds spent training, paused for everything else."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class TrainingClock:
    """Accumulates only the time spent inside :meth:`running` blocks.

    On CUDA the block end synchronises the device, so queued kernels are charged to training and
    not to the evaluation that follows (one sync per step; the step already syncs for packing).
    """

    def __init__(self, device: torch.device, seconds: float = 0.0) -> None:
        self.device = device
        self.seconds = seconds

    @contextmanager
    def running(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds += time.perf_counter() - start


class PhaseClock:
    """Wall-clock seconds per named phase of a step, when profiling; free (no syncs) otherwise.

    ``lap(name)`` charges the time since the previous lap to ``name``; ``skip()`` restarts the lap
    without charging (for a span another clock measures). CUDA is synchronised at each lap, which
    slows the step: profile numbers explain where time goes, the training clock measures speed.
    """

    def __init__(self, enabled: bool, device: torch.device) -> None:
        self.enabled, self.device = enabled, device
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def lap(self, name: str) -> None:
        if not self.enabled:
            return
        now = self._now()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._t
        self._t = now

    def skip(self) -> None:
        if self.enabled:
            self._t = self._now()


def geometric_schedule(budget_s: float, n_evals: int, first_fraction: float) -> list[float]:
    """Evaluation times from ``first_fraction * budget`` to ``budget``, evenly spaced in log time."""
    if n_evals == 1:
        return [budget_s]
    return [budget_s * first_fraction ** ((n_evals - 1 - k) / (n_evals - 1)) for k in range(n_evals)]
