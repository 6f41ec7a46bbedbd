"""Checkpoints that make a run resumable after preemption or a crash.

A checkpoint holds the model, optimizer, occupancy grid, mining state, RNG states, the training
clock, the adaptive ray count and the trace rows so far; it is written atomically. On start a
trainer resumes from ``checkpoint.pt`` in its folder unless the run is already complete. A
checkpoint that cannot be read (truncated, corrupt, or from another configuration) is moved aside
with a warning and the run starts cleanly from step 0.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ngp_ohem.io import save_torch

if TYPE_CHECKING:
    from ngp_ohem.train import Trainer

FORMAT = 1


def path_of(trainer: Trainer) -> Path:
    return trainer.out / "checkpoint.pt"


def save(trainer: Trainer) -> None:
    state = {
        "format": FORMAT,
        "config": trainer.cfg.raw,
        "field": trainer.field.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "grid": trainer.grid.state_dict(),
        "strategy": trainer.strategy.state_dict(),
        "generator": trainer.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "clock_seconds": trainer.clock.seconds,
        "step": trainer.step,
        "n_rays": trainer.n_rays,
        "samples_total": trainer.samples_total,
        "samples_in_graph": trainer.samples_in_graph,
        "rows": trainer.rows,
        "phase_totals": trainer.phase_totals,
    }
    save_torch(path_of(trainer), state)


def try_resume(trainer: Trainer) -> bool:
    """Restore ``trainer`` from its folder's checkpoint; False when starting fresh."""
    path = path_of(trainer)
    if not path.exists():
        return False
    try:
        state = torch.load(path, map_location=trainer.device, weights_only=False)
        if state.get("format") != FORMAT or state.get("config") != trainer.cfg.raw:
            raise ValueError("it was written by a different configuration or format")
        trainer.field.load_state_dict(state["field"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.grid.load_state_dict(state["grid"])
        trainer.strategy.load_state_dict(state["strategy"])
        trainer.generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
    except Exception as exc:
        aside = path.with_suffix(".pt.corrupt")
        path.replace(aside)
        warnings.warn(
            f"ignoring checkpoint {path} ({exc}); moved to {aside.name}, restarting from step 0", stacklevel=2
        )
        return False
    trainer.clock.seconds = float(state["clock_seconds"])
    trainer.step = int(state["step"])
    trainer.n_rays = float(state["n_rays"])
    trainer.samples_total = int(state["samples_total"])
    trainer.samples_in_graph = int(state["samples_in_graph"])
    trainer.rows = list(state["rows"])
    trainer.phase_totals = dict(state["phase_totals"])
    return True
