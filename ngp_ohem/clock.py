"""The training clock: wall-clock seconds spent training, paused for everything else, and how much
those seconds were worth (did other processes take CPU from the cores the run trains on?)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

PROC_STAT = "/proc/stat"
# A run's clock counts as contended when, over its training time, other processes (or the hypervisor,
# as steal) took more than this share of the cores the run may use. An idle 2-core VM measures
# 0.00-0.03; one busy process on one of two cores 0.4-0.5; a partner run on the same two cores ~0.5.
CONTENTION_THRESHOLD = 0.10


def run_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def read_cpu_jiffies(cpus: list[int], path: str = PROC_STAT) -> tuple[int, int] | None:
    """(busy, steal) clock ticks summed over ``cpus`` from /proc/stat, or None where it is unreadable or
    lacks one of them (containers that renumber CPUs, offline CPUs: then nothing is claimed).

    busy = user + nice + system + irq + softirq (guest time is already inside user); idle and iowait
    are not busy.
    """
    wanted = {f"cpu{c}" for c in cpus}
    busy = steal = found = 0
    try:
        with open(path) as fh:
            for line in fh:
                if not line.startswith("cpu"):
                    break  # the per-CPU lines come first; skip the long interrupt lines
                parts = line.split()
                if parts[0] in wanted:
                    v = [int(x) for x in parts[1:9]]
                    busy += v[0] + v[1] + v[2] + v[5] + v[6]
                    steal += v[7]
                    found += 1
    except (OSError, ValueError, IndexError):
        return None
    return (busy, steal) if found == len(wanted) else None


@dataclass
class CpuWindow:
    """Wall seconds, this process's CPU seconds, and other processes' / steal CPU seconds on our cores.

    ``others`` is signed per part: /proc/stat counts in ticks (4-10 ms) while our own CPU time is exact,
    so a short step reads a tick too many or too few; clamping each part at zero would keep only the
    positive noise. Shares are clamped once, over the summed window. ``measured_wall`` is the wall time
    of the parts whose /proc/stat reads succeeded (the shares cover those).
    """

    wall: float = 0.0
    own: float = 0.0
    others: float = 0.0
    steal: float = 0.0
    measured_wall: float = 0.0

    def add(self, other: CpuWindow) -> None:
        self.wall += other.wall
        self.own += other.own
        self.others += other.others
        self.steal += other.steal
        self.measured_wall += other.measured_wall

    def figures(self, threads: int, n_cpus: int) -> dict[str, float | None]:
        """cpu_utilization = own CPU / (wall x threads); other_cpu_share and steal_share of our cores
        (None where nothing could be measured: JSON has no NaN)."""
        if self.wall <= 0:
            return {"cpu_utilization": None, "other_cpu_share": None, "steal_share": None}
        out: dict[str, float | None] = {"cpu_utilization": round(self.own / (self.wall * max(threads, 1)), 4)}
        if self.measured_wall <= 0:
            return {**out, "other_cpu_share": None, "steal_share": None}
        capacity = self.measured_wall * max(n_cpus, 1)
        out["other_cpu_share"] = round(max(0.0, self.others / capacity), 4)
        out["steal_share"] = round(max(0.0, self.steal / capacity), 4)
        return out


@dataclass
class ContentionMeter:
    """Samples process CPU time and /proc/stat around each running block of the training clock.

    Other processes' CPU on our cores = busy ticks on the CPUs of our affinity minus our own CPU
    time (our threads can only run there). Two /proc/stat reads per step (~0.1 ms each). The share is
    meaningful for a run pinned to its cores (``--pin-cores``, as the workflow runs): unpinned on a
    large machine, a busy neighbour on our core is diluted by every other core in the affinity.
    """

    cpus: list[int] = field(default_factory=run_cpus)
    window: CpuWindow = field(default_factory=CpuWindow)
    total: CpuWindow = field(default_factory=CpuWindow)
    hz: int = field(default_factory=lambda: os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)

    def __post_init__(self) -> None:
        self._start: tuple[float, float, tuple[int, int] | None] | None = None

    def start(self) -> None:
        self._start = (time.perf_counter(), time.process_time(), read_cpu_jiffies(self.cpus))

    def stop(self) -> None:
        if self._start is None:
            return
        wall0, own0, jiffies0 = self._start
        self._start = None
        jiffies1 = read_cpu_jiffies(self.cpus)
        own = time.process_time() - own0
        part = CpuWindow(wall=time.perf_counter() - wall0, own=own)
        if jiffies0 is not None and jiffies1 is not None:
            part.measured_wall = part.wall
            part.others = (jiffies1[0] - jiffies0[0]) / self.hz - own
            part.steal = (jiffies1[1] - jiffies0[1]) / self.hz
        self.window.add(part)
        self.total.add(part)

    def take_window(self) -> CpuWindow:
        """The window since the previous call (one trace row), and start a new one."""
        out, self.window = self.window, CpuWindow()
        return out


def is_contended(figures: dict[str, float | None], threshold: float = CONTENTION_THRESHOLD) -> bool:
    """True when other processes plus steal took more than ``threshold`` of the run's cores (False where
    it could not be measured: the summary then says None)."""
    other, steal = figures.get("other_cpu_share"), figures.get("steal_share")
    if other is None:
        return False
    return bool(other + (steal or 0.0) > threshold)


class TrainingClock:
    """Accumulates only the time spent inside :meth:`running` blocks.

    On CUDA the block end synchronises the device, so queued kernels are charged to training and
    not to the evaluation that follows (one sync per step; the step already syncs for packing).
    """

    def __init__(self, device: torch.device, seconds: float = 0.0, meter: ContentionMeter | None = None) -> None:
        self.device = device
        self.seconds = seconds
        self.meter = meter

    @contextmanager
    def running(self) -> Iterator[None]:
        if self.meter is not None:
            self.meter.start()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds += time.perf_counter() - start
            if self.meter is not None:
                self.meter.stop()


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
