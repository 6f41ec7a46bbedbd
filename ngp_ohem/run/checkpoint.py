"""Checkpoints that make a run resumable after preemption or a crash.

A checkpoint is one object's ``state_dict()`` (for a training run: :meth:`Trainer.state_dict`, which
holds the model, optimizer, occupancy grid, strategy, RNG states, clock, trace rows and schedule
position) plus the format and the run's configuration; it is written atomically (a crash mid-write
leaves the previous checkpoint). :func:`resume` restores an object in place from its folder's
checkpoint. One that cannot be read (truncated, corrupt, or from another configuration) is moved
aside to ``checkpoint.pt.corrupt`` with a warning and the object is left as it was, even when the
restore failed half-way. This module knows nothing of what the state holds.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any, Protocol

import torch

from ngp_ohem.io import save_torch

FORMAT = 1
NAME = "checkpoint.pt"


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def path_in(folder: Path) -> Path:
    return folder / NAME


def save(path: Path, config: dict[str, Any], state: dict[str, Any]) -> None:
    """Write ``state`` for a run of ``config`` atomically."""
    save_torch(path, {"format": FORMAT, "config": config, **state})


def read(path: Path, config: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The state in ``path``; ValueError when it was written by another format or configuration."""
    state = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("config") != config:
        raise ValueError("it was written by a different configuration or format")
    return state


def resume(path: Path, target: Stateful, config: dict[str, Any], device: torch.device) -> bool:
    """Restore ``target`` from ``path``; False (target untouched) when starting fresh."""
    for tmp in path.parent.glob(".*.tmp"):  # left by an atomic write that was killed (SIGKILL) mid-way
        tmp.unlink(missing_ok=True)
    if not path.exists():
        return False
    fresh = copy.deepcopy(target.state_dict())  # to roll back to when a restore fails half-way
    try:
        target.load_state_dict(read(path, config, device))
    except Exception as exc:
        target.load_state_dict(fresh)
        aside = path.with_suffix(".pt.corrupt")
        path.replace(aside)
        warnings.warn(
            f"ignoring checkpoint {path} ({type(exc).__name__}: {exc}); moved to {aside.name}, restarting from step 0",
            stacklevel=2,
        )
        return False
    return True
