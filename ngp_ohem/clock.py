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


def geometric_schedule(budget_s: float, n_evals: int, first_fraction: float) -> list[float]:
    """Evaluation times from ``first_fraction * budget`` to ``budget``, evenly spaced in log time."""
    if n_evals == 1:
        return [budget_s]
    return [budget_s * first_fraction ** ((n_evals - 1 - k) / (n_evals - 1)) for k in range(n_evals)]
