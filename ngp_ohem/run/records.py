"""What a run writes about itself: per-step window statistics, trace rows and the summary.

* ``trace.csv`` — one row per evaluation, columns :data:`ngp_ohem.names.TRACE_COLUMNS` (the report
  reads exactly these);
* ``summary.json`` — config, protocol, versions, hardware and final metrics (written last: its
  presence with ``status == "complete"`` marks a finished run, which is never retrained).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ngp_ohem.io import write_csv
from ngp_ohem.memory import peak_rss_bytes
from ngp_ohem.mining import StepResult
from ngp_ohem.names import TRACE_COLUMNS


@dataclass
class WindowStats:
    """Per-step statistics accumulated between two trace rows."""

    steps: int = 0
    samples: int = 0
    hard: int = 0
    rays: int = 0
    loss: float = 0.0
    peak_mem: int = 0
    graph_bytes: int = 0
    phases: dict[str, float] = field(default_factory=dict)

    def add(self, result: StepResult, n_rays: int, peak_mem: int) -> None:
        self.steps += 1
        self.samples += result.n_samples
        self.hard += result.n_hard
        self.rays += n_rays
        self.peak_mem = max(self.peak_mem, peak_mem)
        self.graph_bytes = max(self.graph_bytes, result.graph_bytes)
        self.add_phases(result.phase_seconds)

    def add_phases(self, seconds: dict[str, float]) -> None:
        for k, v in seconds.items():
            self.phases[k] = self.phases.get(k, 0.0) + v


@dataclass
class Progress:
    """Where training stands when a row is recorded."""

    step: int
    train_seconds: float
    samples_total: int
    samples_in_graph: int


def trace_row(
    identity: Mapping[str, Any],
    progress: Progress,
    scores: tuple[float, float, int],
    window: WindowStats,
    tau_ema: float,
    occupancy: float,
    cpu: Mapping[str, float],
) -> dict[str, Any]:
    """One trace row: the run's identity (dataset .. device), progress, the evaluation's (psnr, ssim,
    views), the window's means and maxima since the previous row, and the CPU shares of that window."""
    psnr, ssim, n_views = scores
    w = window
    steps = max(w.steps, 1)
    return {
        **identity,
        "step": progress.step,
        "train_seconds": round(progress.train_seconds, 4),
        "samples_total": progress.samples_total,
        "samples_in_graph": progress.samples_in_graph,
        "psnr": round(psnr, 4),
        "ssim": round(ssim, 5),
        "peak_mem_bytes": w.peak_mem,
        "graph_bytes": w.graph_bytes,
        "rss_bytes": peak_rss_bytes(),
        "hard_fraction": round(w.hard / w.samples, 5) if w.samples else 1.0,
        "samples_per_step": round(w.samples / steps, 1),
        "hard_samples_per_step": round(w.hard / steps, 1),
        "rays_per_step": round(w.rays / steps, 1),
        "tau_ema": round(tau_ema, 5),
        "loss": w.loss / steps,
        "eval_views": n_views,
        "occupancy": round(occupancy, 5),
        **cpu,
    }


class Trace:
    """The trace rows so far, the open window of step statistics, and the phase times of closed windows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self.phase_totals: dict[str, float] = {}
        self.window = WindowStats()

    def close_window(self, row: dict[str, Any]) -> None:
        """Append the row that describes the open window, start a new window, rewrite trace.csv."""
        self.rows.append(row)
        self.phase_totals = {k: self.phase_totals.get(k, 0.0) + v for k, v in self.window.phases.items()}
        self.window = WindowStats()
        self.write()

    def write(self) -> None:
        write_csv(self.path, TRACE_COLUMNS, self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "phase_totals": self.phase_totals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])
        self.phase_totals = dict(state["phase_totals"])
