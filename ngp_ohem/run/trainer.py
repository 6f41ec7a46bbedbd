"""The training loop: a wall-clock budget of training time, evaluations, traces and checkpoints.

One step: draw random pixels (the ray count adapts so that marching yields about
``render.target_samples`` samples), march them through the occupancy grid, let the strategy
(baseline or hard sample mining) run its forward/backward, take an Adam step, and every
``grid_update_every`` steps refresh the occupancy grid. The training clock runs only during steps;
evaluation, checkpointing and logging pause it. A run writes into its output folder ``trace.csv``
and ``summary.json`` (:mod:`ngp_ohem.run.records`) and ``checkpoint.pt``
(:mod:`ngp_ohem.run.checkpoint`: :meth:`Trainer.state_dict`, refreshed every ``checkpoint_every_s``
training seconds, on SIGTERM and at the end). A run restarted on the same folder resumes from it
with the remaining budget.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ngp_ohem import protocol, recipe
from ngp_ohem.allocator import keep_freed_memory
from ngp_ohem.clock import (
    CONTENTION_THRESHOLD,
    ContentionMeter,
    CpuWindow,
    PhaseClock,
    TrainingClock,
    geometric_schedule,
    is_contended,
)
from ngp_ohem.config import RunConfig
from ngp_ohem.data.scene import Scene
from ngp_ohem.errors import ClockContendedError, DivergenceError
from ngp_ohem.io import FolderLock, lock_run_folder, save_png, write_json
from ngp_ohem.memory import CudaPeakMeter
from ngp_ohem.metrics import lpips_unavailable_reason
from ngp_ohem.provenance import environment_info
from ngp_ohem.rays import RaySampler
from ngp_ohem.render.march import march_rays
from ngp_ohem.run import checkpoint
from ngp_ohem.run.build import build_model, build_strategy
from ngp_ohem.run.evaluation import Evaluator
from ngp_ohem.run.records import Progress, Trace, trace_row
from ngp_ohem.threads import ThreadGovernor


class Preempted(Exception):
    """SIGTERM arrived (e.g. SLURM preemption): checkpoint and exit at the next safe point."""


class StopRequest:
    """The signal that asked the run to stop (set by the SIGTERM handler); checked at safe points."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def handle(self, signum: int, frame: object = None) -> None:
        self.signal = signum

    def check(self) -> None:
        if self.signal is not None:
            raise Preempted


class Trainer:
    """Trains one (scene, method, seed) run into ``out_dir``."""

    def __init__(self, cfg: RunConfig, scene: Scene, out_dir: str | Path, progress: bool = True) -> None:
        keep_freed_memory()  # before the first step's buffers (ngp_ohem/allocator.py)
        self.cfg = cfg
        self.model = build_model(cfg, scene)
        self.scene = scene = self.model.scene  # framed for the run
        self.out = Path(out_dir)
        self.progress = progress
        self.device = self.model.device
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        o = cfg.optim
        self.optimizer = torch.optim.Adam(
            self.model.field.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=True
        )
        self.train_background = protocol.train_background_kind(cfg.render.train_background, scene.kind)
        self.strategy = build_strategy(cfg, self.generator)
        self.sampler = RaySampler(scene.train, self.device, self.generator)
        self.evaluator = Evaluator(cfg, self.model)
        self.meter = ContentionMeter()
        self.clock = TrainingClock(self.device, meter=self.meter)
        # The configured thread count (governor.threads); the governor may run fewer while cores are taken.
        self.governor = ThreadGovernor(torch.get_num_threads(), len(self.meter.cpus))
        self.schedule = geometric_schedule(cfg.budget_s, cfg.eval.n_evals, cfg.eval.first_fraction)
        self.trace = Trace(self.out / "trace.csv")
        self.step = 0
        self.n_rays = float(cfg.render.initial_rays)
        self.samples_total = 0
        self.samples_in_graph = 0
        self.next_eval = 0  # index into schedule of the first intermediate evaluation not yet recorded
        self.final_recorded = False
        self.stop = StopRequest()
        self.wall_start = time.time()

    # -- one training step ------------------------------------------------------------------------
    def learning_rate(self) -> float:
        o = self.cfg.optim
        progress = min(1.0, self.clock.seconds / self.cfg.budget_s)
        return o.lr * o.lr_final_factor**progress

    def train_step(self) -> None:
        m, r = self.model, self.cfg.render
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        phases = PhaseClock(self.cfg.profile, self.device)  # the shared parts; strategies time their own
        n_rays = int(self.n_rays)
        # Pixel-level strategies choose the pixels (draw_pixels); None keeps the uniform draw.
        origins, dirs, pixels, cameras = self.sampler.sample(n_rays, self.strategy.draw_pixels)
        jitter = torch.rand(n_rays, device=self.device, generator=self.generator)
        limits = None if m.train_limits is None else m.train_limits.for_rays(origins, dirs, cameras)
        samples = march_rays(
            origins, dirs, m.grid, self.scene.near, r.max_steps, jitter, max_samples=r.target_samples,
            stepping=m.stepping, limits=limits,
        )  # fmt: skip
        kept = samples.n_rays
        background = protocol.train_background(self.train_background, kept, self.device, self.generator)
        target = protocol.composite_target(pixels[:kept], background)
        phases.lap("sample_and_march")
        with CudaPeakMeter(self.device) as peak:
            result = self.strategy.backward(m.network, samples, target, background, m.precision.scale)
            loss = float(result.loss)  # one sync per step (the trace logs the mean loss anyway)
            if not math.isfinite(loss):  # before the optimizer spreads NaN gradients to every parameter
                raise self.divergence(f"the loss is {loss}", step=self.step + 1)
            phases.skip()
            if result.n_hard > 0:  # no sample in a graph, no gradient: no Adam step (as with no .grad at all)
                m.precision.step(self.optimizer)
            # In place: the native hash-grid backward adds into the table's .grad (field/hashgrid.py); a fresh
            # (rows, 2) gradient per step cost 1.5-4.5 ms of zeroing in a lego step, a resident one 0.4 ms.
            self.optimizer.zero_grad(set_to_none=False)
            phases.lap("optimizer")
        self.step += 1
        if m.average is not None:
            m.average.after_step(self.step)
        self.samples_total += result.n_samples
        self.samples_in_graph += result.n_hard
        self.trace.window.add(result, kept, peak.bytes)
        self.trace.window.loss += loss
        # Size the next batch from the samples per kept ray (the cap hides how many more rays would fit).
        per_ray = max(result.n_samples, 1) / max(kept, 1)
        self.n_rays = min(max(r.target_samples / per_ray, r.min_rays), r.max_rays)
        if m.grid.due(self.step):
            self.check_finite()
            m.grid.update(self.step, lambda x: activate_density(m.network, x), self.generator)
            if not bool(m.grid.occupied.any()):
                # No cell holds density any more: marching would return no samples from now on.
                densest = float(m.grid.density.max())
                raise self.divergence(f"the density collapsed (occupancy grid empty, max grid density {densest:.3g})")
            phases.lap("grid_update")
        self.trace.window.add_phases(phases.seconds)

    def nonfinite_parameters(self) -> list[str]:
        return [name for name, p in self.model.field.named_parameters() if not bool(torch.isfinite(p).all())]

    def check_finite(self) -> None:
        """Raise DivergenceError when a parameter holds NaN/inf (run at occupancy-grid updates)."""
        if self.nonfinite_parameters():
            raise self.divergence("a parameter became NaN/inf")

    def divergence(self, what: str, step: int | None = None) -> DivergenceError:
        """A one-line DivergenceError naming the step, the symptom and the non-finite parameters."""
        bad = self.nonfinite_parameters()
        culprits = f"; non-finite parameters: {', '.join(bad)}" if bad else ""
        at = self.step if step is None else step
        rows = self.trace.rows
        kept = f"{len(rows)} trace rows kept in {self.trace.path}" if rows else "no trace rows yet"
        return DivergenceError(
            f"training diverged at step {at} (lr {self.learning_rate():.3g}): {what}{culprits}; stopped, {kept}"
        )

    # -- evaluation and records -------------------------------------------------------------------
    def evaluate(self, final: bool) -> tuple[float, float, int]:
        """(PSNR, SSIM, views) of an evaluation; the final one also saves its first view's render."""
        result = self.evaluator.evaluate(final, before_view=self.stop.check)
        if final:
            self.save_render(*result.first)
        return result.psnr, result.ssim, result.n_views

    def save_render(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        save_png(self.out / "render_test0.png", pred)
        save_png(self.out / "gt_test0.png", gt)

    def record_due(self) -> None:
        """Record one evaluation when the clock has passed scheduled times not yet recorded.

        One evaluation even when a long step crossed several scheduled times; the schedule position
        is checkpointed, so an evaluation that a preemption interrupted is redone after the restart.
        """
        passed = self.next_eval
        while passed < len(self.schedule) - 1 and self.clock.seconds >= self.schedule[passed]:
            passed += 1
        if passed > self.next_eval:
            self.record(final=False)
            self.next_eval = passed

    def identity(self) -> dict[str, Any]:
        """The trace columns that name the run and where it ran."""
        return {
            "dataset": self.scene.kind, "scene": self.scene.name, "method": self.cfg.method, "seed": self.cfg.seed,
            "backend": self.model.backend, "device": self.device.type,
        }  # fmt: skip

    def record(self, final: bool) -> None:
        scores = self.evaluate(final)
        progress = Progress(self.step, self.clock.seconds, self.samples_total, self.samples_in_graph)
        row = trace_row(
            self.identity(), progress, scores, self.trace.window, getattr(self.strategy, "tau_ema", 1.0),
            self.model.grid.occupancy_fraction(),
            self.meter.take_window().figures(self.governor.threads, len(self.meter.cpus)),
        )  # fmt: skip
        self.trace.close_window(row)

    # -- checkpoint state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (live references: the checkpoint copies by writing)."""
        return {
            **self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "strategy": self.strategy.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "clock_seconds": self.clock.seconds,
            "step": self.step,
            "n_rays": self.n_rays,
            "samples_total": self.samples_total,
            "samples_in_graph": self.samples_in_graph,
            **self.trace.state_dict(),
            "next_eval": self.next_eval,
            "final_recorded": self.final_recorded,
            "cpu_total": dataclasses.asdict(self.meter.total),
            "governor": self.governor.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.strategy.load_state_dict(state["strategy"])
        self.generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        seconds = float(state["clock_seconds"])
        self.clock.seconds = seconds
        self.step = int(state["step"])
        self.n_rays = float(state["n_rays"])
        self.samples_total = int(state["samples_total"])
        self.samples_in_graph = int(state["samples_in_graph"])
        self.trace.load_state_dict(state)
        # Checkpoints written before the schedule position was saved: every time up to the clock was recorded.
        self.next_eval = int(state.get("next_eval", sum(1 for t in self.schedule[:-1] if t <= seconds)))
        self.final_recorded = bool(state.get("final_recorded", False))
        # Older checkpoints did not carry it: that session's seconds count as unmeasured.
        self.meter.total = CpuWindow(**state["cpu_total"]) if "cpu_total" in state else CpuWindow(wall=seconds)
        self.governor.load_state_dict(state.get("governor", {"reductions": 0, "reduced_seconds": 0.0}))

    def save_checkpoint(self) -> None:
        checkpoint.save(checkpoint.path_in(self.out), self.cfg.to_dict(), self.state_dict())

    def resume(self) -> bool:
        """Restore from the folder's checkpoint; False when starting fresh."""
        return checkpoint.resume(checkpoint.path_in(self.out), self, self.cfg.to_dict(), self.device)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, lock: FolderLock | None = None) -> dict[str, Any]:
        """Train (or resume, or finish) the run; ``lock``: the folder's lock when the caller holds it."""
        self.out.mkdir(parents=True, exist_ok=True)
        held = lock or lock_run_folder(self.out)  # before the resume, which removes stale temp files
        try:
            return self._run()
        finally:
            if lock is None:
                held.release()

    def _run(self) -> dict[str, Any]:
        resumed = self.resume()
        if resumed or self.trace.path.exists():
            # Drop rows of a lost session (evaluated after the last checkpoint, or an abandoned run).
            self.trace.write()
        if self.model.precision.note and self.progress:  # information, on stdout: stderr is for errors
            print(f"ngp-ohem: {self.model.precision.note}")
        previous = signal.signal(signal.SIGTERM, self.stop.handle)
        try:
            self._loop()
            return self.finish(resumed)
        except Preempted:
            self.save_checkpoint()
            stopped_by = self.stop.signal or signal.SIGTERM
            print(
                f"ngp-ohem: stopped by signal {stopped_by} at step {self.step} "
                f"({self.clock.seconds:.1f} of {self.cfg.budget_s:g} training s); checkpoint saved in "
                f"{checkpoint.path_in(self.out)}; rerun the same command to resume",
                file=sys.stderr,
            )
            raise SystemExit(128 + stopped_by) from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _loop(self) -> None:
        budget = self.cfg.budget_s
        last_ckpt = self.clock.seconds
        bar = tqdm(
            total=round(budget, 1), unit="s", desc=f"{self.scene.name}/{self.cfg.method}/seed{self.cfg.seed}",
            disable=not self.progress, file=sys.stderr, leave=False,
        )  # fmt: skip
        bar.update(round(self.clock.seconds, 1))
        step_limit = self.cfg.step_limit or math.inf
        self.record_due()  # after a resume: an evaluation the preemption interrupted
        while self.clock.seconds < budget and self.step < step_limit:
            before = self.clock.seconds
            with self.clock.running():
                self.train_step()
            if self.cfg.adaptive_threads:
                self.governor.check(self.meter.total)
            bar.update(round(self.clock.seconds, 1) - round(before, 1))
            self.record_due()
            self.stop.check()
            if self.clock.seconds - last_ckpt >= self.cfg.checkpoint_every_s:
                self.save_checkpoint()
                last_ckpt = self.clock.seconds
        bar.close()

    def ensure_render(self) -> None:
        """Re-render the final test view when a finished checkpoint outlived its PNGs (a workflow that was
        interrupted after the final checkpoint deletes the declared outputs on rerun)."""
        if (self.out / "render_test0.png").exists() and (self.out / "gt_test0.png").exists():
            return
        self.save_render(*self.evaluator.first_final_view())

    def clock_report(self) -> dict[str, Any]:
        """The training clock's quality over the whole run (all sessions), for summary.json."""
        figures = self.meter.total.figures(self.governor.threads, len(self.meter.cpus))
        return {
            **figures,
            "contended": is_contended(figures),
            "threshold": CONTENTION_THRESHOLD,
            "rule": "contended when other processes plus steal took more than threshold of the run's cores "
            "(other_cpu_share + steal_share, from /proc/stat over the training time)",
            "cpus": self.meter.cpus,
            **self.governor.report(),
            "adaptive_threads": self.cfg.adaptive_threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        }

    def finish(self, resumed: bool) -> dict[str, Any]:
        if not self.final_recorded:  # a restart after the final checkpoint must not add a second final row
            self.record(final=True)
            self.final_recorded = True
            self.save_checkpoint()
        clock = self.clock_report()
        if clock["contended"] and self.cfg.strict_clock:
            for name in (checkpoint.NAME, "trace.csv", "render_test0.png", "gt_test0.png"):
                (self.out / name).unlink(missing_ok=True)
            raise ClockContendedError(
                f"{self.out}: other processes took {clock['other_cpu_share']:.0%} (steal {clock['steal_share']:.0%}) "
                f"of cores {clock['cpus']} during training (threshold {CONTENTION_THRESHOLD:.0%}); "
                "strict_clock discards the run so that a rerun trains it again"
            )
        self.ensure_render()
        summary = self.summary(resumed, clock)
        write_json(self.out / "summary.json", summary)
        return summary

    def summary(self, resumed: bool, clock: dict[str, Any]) -> dict[str, Any]:
        """summary.json: configuration, protocol, versions, hardware, clock quality and final metrics."""
        rows, m, average = self.trace.rows, self.model, self.model.average
        config = self.cfg.to_dict()
        final = rows[-1]
        return {
            "status": "complete",
            "config": config,
            "dataset": self.scene.kind,
            "scene": self.scene.name,
            "data_path": self.scene.path,
            "protocol": protocol.__doc__.strip(),
            "backend": m.backend,
            "encoding_implementation": m.encoding_impl,
            "device": self.device.type,
            "environment": environment_info(self.device),
            "steps": self.step,
            "train_seconds": self.clock.seconds,
            "wall_seconds_last_session": time.time() - self.wall_start,
            "resumed": resumed,
            "final": {k: final[k] for k in ("psnr", "ssim", "samples_total", "samples_in_graph", "step")},
            "max_graph_bytes": max(r["graph_bytes"] for r in rows),
            "max_peak_mem_bytes": max(r["peak_mem_bytes"] for r in rows),
            "phase_seconds": self.trace.phase_totals,
            "lpips": lpips_unavailable_reason() or "available (not computed by default)",
            "clock": clock,
            "clock_contended": clock["contended"],
            "preset": self.cfg.preset,
            "precision": m.precision.label,
            "precision_note": m.precision.note,
            "weight_average": None
            if average is None
            else {"decay": average.decay, "every_steps": average.every, "updates": average.updates},
            "recipe_deviations": recipe.deviations(config),
            "data_notes": list(self.scene.notes),
        }


def activate_density(field: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Density (after the truncated exp) at world positions, for the occupancy grid."""
    return torch.exp(field.density_raw(x))
