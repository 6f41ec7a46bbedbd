"""Checkpoints that make a run resumable after preemption or a crash.

A checkpoint holds the model, optimizer, occupancy grid, mining state, weight average, loss scaler,
RNG states, the training clock, the adaptive ray count, the trace rows so far and the position in the
evaluation schedule; it is written atomically (a crash mid-write leaves the previous checkpoint). On start a trainer
resumes from ``checkpoint.pt`` in its folder unless the run is already complete. A checkpoint that
cannot be read (truncated, corrupt, or from another configuration) is moved aside to
``checkpoint.pt.corrupt`` with a warning and the run starts cleanly from step 0: nothing of it is
left in the trainer, even when it failed half-way through restoring.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ngp_ohem.clock import CpuWindow
from ngp_ohem.io import save_torch

if TYPE_CHECKING:
    from ngp_ohem.train import Trainer

FORMAT = 1


def path_of(trainer: Trainer) -> Path:
    return trainer.out / "checkpoint.pt"


def _stateful_parts(trainer: Trainer) -> dict:
    """The trainer's parts that a checkpoint restores in place (live references, not copies)."""
    return {
        "field": trainer.field.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "grid": trainer.grid.state_dict(),
        "strategy": trainer.strategy.state_dict(),
        "generator": trainer.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "weight_average": None if trainer.average is None else trainer.average.state_dict(),
        "loss_scaler": trainer.precision.state_dict(),
    }


def save(trainer: Trainer) -> None:
    state = {
        "format": FORMAT,
        "config": trainer.cfg.raw,
        **_stateful_parts(trainer),
        "clock_seconds": trainer.clock.seconds,
        "step": trainer.step,
        "n_rays": trainer.n_rays,
        "samples_total": trainer.samples_total,
        "samples_in_graph": trainer.samples_in_graph,
        "rows": trainer.rows,
        "phase_totals": trainer.phase_totals,
        "next_eval": trainer.next_eval,
        "final_recorded": trainer.final_recorded,
        "cpu_total": dataclasses.asdict(trainer.meter.total),
        "governor": trainer.governor.state_dict(),
    }
    save_torch(path_of(trainer), state)


def _stateful(trainer: Trainer) -> dict:
    """A deep copy of the restorable parts, to roll back to when a restore fails half-way."""
    return copy.deepcopy(_stateful_parts(trainer))


def _restore_stateful(trainer: Trainer, state: dict) -> None:
    trainer.field.load_state_dict(state["field"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.grid.load_state_dict(state["grid"])
    trainer.strategy.load_state_dict(state["strategy"])
    trainer.generator.set_state(state["generator"].cpu())
    torch.set_rng_state(state["torch_rng"].cpu())
    if trainer.average is not None:
        trainer.average.load_state_dict(state["weight_average"])
    trainer.precision.load_state_dict(state["loss_scaler"])


def try_resume(trainer: Trainer) -> bool:
    """Restore ``trainer`` from its folder's checkpoint; False when starting fresh."""
    path = path_of(trainer)
    for tmp in trainer.out.glob(".*.tmp"):  # left by an atomic write that was killed (SIGKILL) mid-way
        tmp.unlink(missing_ok=True)
    if not path.exists():
        return False
    fresh = _stateful(trainer)
    try:
        state = torch.load(path, map_location=trainer.device, weights_only=False)
        if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("config") != trainer.cfg.raw:
            raise ValueError("it was written by a different configuration or format")
        _restore_stateful(trainer, state)
        scalars = {
            "seconds": float(state["clock_seconds"]),
            "step": int(state["step"]),
            "n_rays": float(state["n_rays"]),
            "samples_total": int(state["samples_total"]),
            "samples_in_graph": int(state["samples_in_graph"]),
            "rows": list(state["rows"]),
            "phase_totals": dict(state["phase_totals"]),
            # Checkpoints written before the schedule position was saved: every time up to the clock was recorded.
            "next_eval": int(
                state.get("next_eval", sum(1 for t in trainer.schedule[:-1] if t <= float(state["clock_seconds"])))
            ),
            "final_recorded": bool(state.get("final_recorded", False)),
            # Older checkpoints did not carry it: that session's seconds count as unmeasured.
            "cpu_total": CpuWindow(**state["cpu_total"])
            if "cpu_total" in state
            else CpuWindow(wall=float(state["clock_seconds"])),
            "governor": state.get("governor", {"reductions": 0, "reduced_seconds": 0.0}),
        }
    except Exception as exc:
        _restore_stateful(trainer, fresh)
        aside = path.with_suffix(".pt.corrupt")
        path.replace(aside)
        warnings.warn(
            f"ignoring checkpoint {path} ({type(exc).__name__}: {exc}); moved to {aside.name}, restarting from step 0",
            stacklevel=2,
        )
        return False
    trainer.clock.seconds = scalars["seconds"]
    trainer.step = scalars["step"]
    trainer.n_rays = scalars["n_rays"]
    trainer.samples_total = scalars["samples_total"]
    trainer.samples_in_graph = scalars["samples_in_graph"]
    trainer.rows = scalars["rows"]
    trainer.phase_totals = scalars["phase_totals"]
    trainer.next_eval = scalars["next_eval"]
    trainer.final_recorded = scalars["final_recorded"]
    trainer.meter.total = scalars["cpu_total"]
    trainer.governor.load_state_dict(scalars["governor"])
    return True
