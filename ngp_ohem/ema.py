"""An exponential moving average of the weights, evaluated in their place (the authors' recipe).

The authors evaluate an EMA of all network parameters (hash tables included) kept by ``torch_ema``
with decay 0.95, updated once per epoch (one pass over the training images, so every
``len(train images)`` steps with their one-image batches). ``torch_ema`` warms up: its n-th update
uses ``min(decay, (1 + n) / (10 + n))``, so the average starts close to the latest weights (0.18 at
the first update) and reaches 0.95 only after about 170 updates. The shadow starts as a copy of the
initial weights, and until the first update evaluation sees those. The occupancy grid is not
averaged: it is refreshed from the raw weights, as in their code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class WeightAverage:
    """EMA of ``parameters`` with torch_ema's warm-up; ``applied()`` swaps it in for evaluation."""

    def __init__(self, parameters: list[torch.nn.Parameter], decay: float, every: int) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if every < 1:
            raise ValueError(f"EMA update interval must be >= 1 step, got {every}")
        self.parameters = list(parameters)
        self.decay = decay
        self.every = every
        self.updates = 0
        self.shadow = [p.detach().clone() for p in self.parameters]

    def current_decay(self) -> float:
        """The decay the next update uses (torch_ema's ``use_num_updates``)."""
        n = self.updates + 1
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self) -> None:
        keep = self.current_decay()
        self.updates += 1
        for s, p in zip(self.shadow, self.parameters, strict=True):
            s.lerp_(p.detach(), 1.0 - keep)

    def after_step(self, step: int) -> None:
        """Update when ``step`` (1-based, just taken) closes an epoch."""
        if step % self.every == 0:
            self.update()

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in place of the raw ones, restored afterwards even on an exception."""
        with torch.no_grad():
            raw = [p.detach().clone() for p in self.parameters]
            for p, s in zip(self.parameters, self.shadow, strict=True):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(self.parameters, raw, strict=True):
                    p.copy_(r)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        shadow = state["shadow"]
        if len(shadow) != len(self.shadow) or any(a.shape != b.shape for a, b in zip(shadow, self.shadow, strict=True)):
            raise ValueError("EMA state does not match the network's parameters")
        self.updates = int(state["updates"])
        self.shadow = [s.to(p.device).clone() for s, p in zip(shadow, self.parameters, strict=True)]


@contextmanager
def maybe_applied(average: WeightAverage | None) -> Iterator[None]:
    """``average.applied()``, or nothing when the run keeps no average."""
    if average is None:
        yield
    else:
        with average.applied():
            yield
