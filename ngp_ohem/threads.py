"""A thread count that follows the CPU the run actually has.

OpenMP threads that spin at barriers collapse when another process holds one of their cores: a
2-thread run made 0.23-0.40x its idle steps with a busy loop on one of two cores, where losing half
the CPU should cost about half. Sleeping at barriers (``OMP_WAIT_POLICY=PASSIVE``) degrades gracefully
but costs 17 % of the idle speed. The governor keeps libgomp's fast default and instead drops to as
many threads as there are free cores while other processes hold some (read from the same /proc/stat
window the contention meter keeps), and returns to the configured count when they leave. Such a run's
clock is contended anyway (summary.json says so); the governor only keeps it from collapsing.
Measured in benchmarks/README.md ("Shared cores").
"""

from __future__ import annotations

import dataclasses

import torch

from ngp_ohem.clock import CpuWindow

CHECK_EVERY_S = 1.0  # training seconds between decisions (/proc/stat ticks are 4-10 ms)


@dataclasses.dataclass
class ThreadGovernor:
    """Sets torch's thread count from other processes' CPU on the run's cores, once per check period."""

    threads: int  # the configured count, the most the governor uses
    n_cpus: int  # cores the run may use (its affinity)
    current: int = 0
    reductions: int = 0  # times the count went down
    reduced_seconds: float = 0.0  # training seconds run below the configured count
    _seen: CpuWindow | None = None  # the meter's total at the last decision (None: not yet seen)

    def __post_init__(self) -> None:
        self.current = self.current or self.threads

    def target(self, window: CpuWindow) -> int:
        """Threads for the free cores over ``window``: cores minus others' and steal's share, rounded."""
        if window.measured_wall <= 0:
            return self.current
        taken = max(0.0, (window.others + window.steal) / window.measured_wall)
        return max(1, min(self.threads, round(self.n_cpus - taken)))

    def check(self, total: CpuWindow) -> None:
        """Look at the meter's running total; act once ``CHECK_EVERY_S`` training seconds have passed."""
        if self._seen is None:  # the first look (also after a resume): start the window here
            self._seen = dataclasses.replace(total)
            return
        if total.wall - self._seen.wall < CHECK_EVERY_S:  # the common case, once per step: nothing to do
            return
        window = CpuWindow(
            *(getattr(total, f.name) - getattr(self._seen, f.name) for f in dataclasses.fields(CpuWindow))
        )
        self._seen = dataclasses.replace(total)
        if self.current < self.threads:
            self.reduced_seconds += window.wall
        want = self.target(window)
        if want != self.current:
            self.reductions += want < self.current
            self.current = want
            torch.set_num_threads(want)

    def state_dict(self) -> dict[str, float]:
        return {"reductions": self.reductions, "reduced_seconds": self.reduced_seconds}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.reductions, self.reduced_seconds = int(state["reductions"]), float(state["reduced_seconds"])

    def report(self) -> dict[str, float | int]:
        return {
            "threads": self.threads,
            "thread_reductions": self.reductions,
            "reduced_thread_seconds": round(self.reduced_seconds, 2),
        }
