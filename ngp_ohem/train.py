"""The training loop: a wall-clock budget of training time, evaluations, traces and checkpoints.

One step: draw random pixels (the ray count adapts so that marching yields about
``render.target_samples`` samples), march them through the occupancy grid, let the strategy
(baseline or hard sample mining) run its forward/backward, take an Adam step, and every
``grid_update_every`` steps refresh the occupancy grid. The training clock runs only during steps;
evaluation, checkpointing and logging pause it. A run writes into its output folder:

* ``trace.csv`` — one row per evaluation (columns :data:`TRACE_COLUMNS`);
* ``summary.json`` — config, protocol, versions, hardware and final metrics (written last: its
  presence with ``status == "complete"`` marks a finished run, which is never retrained);
* ``checkpoint.pt`` — everything needed to resume (model, optimizer, occupancy grid, strategy, RNG,
  clock, trace so far), refreshed every ``checkpoint_every_s`` training seconds, on SIGTERM and at
  the end. A run restarted on the same folder resumes from it with the remaining budget.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ngp_ohem import checkpoint as ckpt
from ngp_ohem import protocol, recipe, strategies
from ngp_ohem.clock import (
    CONTENTION_THRESHOLD,
    ContentionMeter,
    PhaseClock,
    TrainingClock,
    geometric_schedule,
    is_contended,
)
from ngp_ohem.config import RunConfig
from ngp_ohem.data.rescale import framed_for_run
from ngp_ohem.data.scene import Scene
from ngp_ohem.ema import WeightAverage, maybe_applied
from ngp_ohem.errors import ClockContendedError, DatasetError, DivergenceError
from ngp_ohem.field import build_field, resolve_backend
from ngp_ohem.field.hashgrid import HashGridSpec
from ngp_ohem.field.native import load_field_native, load_native, load_render_native
from ngp_ohem.field.ngp import FieldSpec, activate
from ngp_ohem.io import FolderLock, lock_run_folder, save_png, write_csv, write_json
from ngp_ohem.memory import CudaPeakMeter, peak_rss_bytes
from ngp_ohem.metrics import lpips_unavailable_reason, psnr, ssim
from ngp_ohem.mining import StepResult, Strategy
from ngp_ohem.precision import Precision, network
from ngp_ohem.provenance import environment_info
from ngp_ohem.rays import RaySampler, image_rays
from ngp_ohem.render.inference import render_rays
from ngp_ohem.render.limits import RayLimits
from ngp_ohem.render.march import Stepping, march_rays, step_size
from ngp_ohem.render.occupancy import OccupancyGrid, auto_cascades
from ngp_ohem.threads import ThreadGovernor

TRACE_COLUMNS = (
    "dataset", "scene", "method", "seed", "backend", "device", "step", "train_seconds",
    "samples_total", "samples_in_graph", "psnr", "ssim", "peak_mem_bytes", "graph_bytes", "rss_bytes",
    "hard_fraction", "samples_per_step", "hard_samples_per_step", "rays_per_step", "tau_ema", "loss",
    "eval_views", "occupancy", "cpu_utilization", "other_cpu_share", "steal_share",
)  # fmt: skip
# The smallest image side SSIM can score (torchmetrics' 11x11 Gaussian window).
MIN_IMAGE_SIDE = 11


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from ngp_ohem.errors import ConfigError

        raise ConfigError("device 'cuda' requested but torch sees no CUDA device")
    return torch.device(name)


def field_spec(cfg: RunConfig, bound: float) -> FieldSpec:
    f = cfg.field
    grid = HashGridSpec(
        n_levels=f["n_levels"],
        n_features=f["n_features"],
        log2_table_size=f["log2_table_size"],
        base_resolution=f["base_resolution"],
        max_resolution=max(f["base_resolution"] + 1, round(f["max_resolution_per_bound"] * bound)),
        convention=f["grid_convention"],
    )
    return FieldSpec(
        grid=grid, hidden=f["hidden"], geo_features=f["geo_features"], density_layers=f["density_layers"],
        color_layers=f["color_layers"], color_hidden=f["color_hidden"],
    )  # fmt: skip


def build_strategy(cfg: RunConfig, generator: torch.Generator) -> Strategy:
    """The run's arm, from the strategy registry (ngp_ohem/strategies; issue 15)."""
    entry = strategies.get(cfg.method)
    return entry.load().from_settings(entry.settings_of(cfg.raw), generator=generator, profile=cfg.profile)


class Preempted(Exception):
    """SIGTERM arrived (e.g. SLURM preemption): checkpoint and exit at the next safe point."""


def check_scene_size(scene: Scene) -> None:
    """Reject, before any training, images too small for the metrics (SSIM would fail after the budget)."""
    for split, name in ((scene.train, "train"), (scene.test, "test")):
        k = split.intrinsics
        if min(k.width, k.height) < MIN_IMAGE_SIDE:
            raise DatasetError(
                f"{scene.path}: {name} images are {k.width}x{k.height}; SSIM needs at least "
                f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels"
            )


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


class Trainer:
    """Trains one (scene, method, seed) run into ``out_dir``."""

    def __init__(self, cfg: RunConfig, scene: Scene, out_dir: str | Path, progress: bool = True) -> None:
        self.cfg = cfg
        scene = framed_for_run(scene, cfg.bound, cfg.frame["blender_scale"])
        self.scene = scene
        self.out = Path(out_dir)
        self.progress = progress
        check_scene_size(scene)
        self.device = resolve_device(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.backend = resolve_backend(cfg.backend, self.device, cfg.field["grid_convention"])
        self.field = build_field(field_spec(cfg, scene.bound), scene.bound, self.backend, self.device)
        self.encoding_impl = prepare_kernels(self.field)
        self.precision = Precision(cfg.precision, self.device)
        self.network = network(self.field, self.precision)  # what every network call goes through
        self.average = weight_average(cfg, self.field, len(scene.train))
        o = cfg.optim
        self.optimizer = torch.optim.Adam(
            self.field.parameters(), lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"], fused=True
        )
        r = cfg.render
        cameras = torch.cat([scene.train.poses[:, :3, 3], scene.test.poses[:, :3, 3]])
        cone = protocol.cone_angle(scene.kind, r["cone_angle"], r["llff_cone_angle"])
        self.train_background = protocol.train_background_kind(r["train_background"], scene.kind)
        self.stepping = Stepping(
            scene.bound, r["max_steps"], cone, start=scene.near, horizon=float(cameras.norm(dim=-1).max()),
            min_step=step_size(1.0 if r["min_step"] == "unit" else scene.bound, r["max_steps"]),
        )  # fmt: skip
        self.grid = OccupancyGrid(
            scene.bound,
            r["grid_resolution"],
            self.stepping.dt_min,
            warmup_steps=r["grid_warmup_steps"],
            update_every=r["grid_update_every"],
            ramp=r["grid_ramp"],
            max_threshold=r["grid_max_density"],
            device=self.device,
            cascades=auto_cascades(scene.bound) if r["grid_cascades"] == "auto" else r["grid_cascades"],
        )
        k = scene.train.intrinsics
        self.grid.mark_unseen(scene.train.poses, k.fx, k.fy, k.cx, k.cy, k.width, k.height)
        near_far = protocol.camera_near_far(r["camera_near_far"], scene.kind)
        self.train_limits, self.test_limits = (
            RayLimits.of_split(split.poses, split.depth_bounds, scene.content_box, scene.near, near_far)
            for split in (scene.train, scene.test)
        )
        self.strategy = build_strategy(cfg, self.generator)
        self.sampler = RaySampler(scene.train, self.device, self.generator)
        self.meter = ContentionMeter()
        self.clock = TrainingClock(self.device, meter=self.meter)
        # The configured thread count (governor.threads); the governor may run fewer while cores are taken.
        self.governor = ThreadGovernor(torch.get_num_threads(), len(self.meter.cpus))
        self.schedule = geometric_schedule(cfg.budget_s, cfg.eval["n_evals"], cfg.eval["first_fraction"])
        self.step = 0
        self.n_rays = float(r["initial_rays"])
        self.samples_total = 0
        self.samples_in_graph = 0
        self.rows: list[dict[str, Any]] = []
        self.next_eval = 0  # index into schedule of the first intermediate evaluation not yet recorded
        self.final_recorded = False
        self.window = WindowStats()
        self.wall_start = time.time()
        self._stop_signal: int | None = None

    # -- one training step ------------------------------------------------------------------------
    def learning_rate(self) -> float:
        o = self.cfg.optim
        progress = min(1.0, self.clock.seconds / self.cfg.budget_s)
        return o["lr"] * o["lr_final_factor"] ** progress

    def train_step(self) -> None:
        r = self.cfg.render
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        phases = PhaseClock(self.cfg.profile, self.device)  # the shared parts; strategies time their own
        n_rays = int(self.n_rays)
        # Hook (issue 15): pixel-level strategies choose the pixels; None keeps the uniform draw.
        origins, dirs, pixels, cameras = self.sampler.sample(n_rays, self.strategy.draw_pixels)
        jitter = torch.rand(n_rays, device=self.device, generator=self.generator)
        limits = None if self.train_limits is None else self.train_limits.for_rays(origins, dirs, cameras)
        samples = march_rays(
            origins, dirs, self.grid, self.scene.near, r["max_steps"], jitter, max_samples=r["target_samples"],
            stepping=self.stepping, limits=limits,
        )  # fmt: skip
        kept = samples.n_rays
        background = protocol.train_background(self.train_background, kept, self.device, self.generator)
        target = protocol.composite_target(pixels[:kept], background)
        phases.lap("sample_and_march")
        with CudaPeakMeter(self.device) as peak:
            result = self.strategy.backward(self.network, samples, target, background, self.precision.scale)
            loss = float(result.loss)  # one sync per step (the trace logs the mean loss anyway)
            if not math.isfinite(loss):  # before the optimizer spreads NaN gradients to every parameter
                raise self.divergence(f"the loss is {loss}", step=self.step + 1)
            phases.skip()
            self.precision.step(self.optimizer)
            self.optimizer.zero_grad(set_to_none=True)
            phases.lap("optimizer")
        self.step += 1
        if self.average is not None:
            self.average.after_step(self.step)
        self.samples_total += result.n_samples
        self.samples_in_graph += result.n_hard
        self.window.add(result, kept, peak.bytes)
        self.window.loss += loss
        # Size the next batch from the samples per kept ray (the cap hides how many more rays would fit).
        per_ray = max(result.n_samples, 1) / max(kept, 1)
        self.n_rays = min(max(r["target_samples"] / per_ray, r["min_rays"]), r["max_rays"])
        if self.grid.due(self.step):
            self.check_finite()
            self.grid.update(self.step, lambda x: activate_density(self.network, x), self.generator)
            if not bool(self.grid.occupied.any()):
                # No cell holds density any more: marching would return no samples from now on.
                densest = float(self.grid.density.max())
                raise self.divergence(f"the density collapsed (occupancy grid empty, max grid density {densest:.3g})")
            phases.lap("grid_update")
        self.window.add_phases(phases.seconds)

    def nonfinite_parameters(self) -> list[str]:
        return [name for name, p in self.field.named_parameters() if not bool(torch.isfinite(p).all())]

    def check_finite(self) -> None:
        """Raise DivergenceError when a parameter holds NaN/inf (run at occupancy-grid updates)."""
        if self.nonfinite_parameters():
            raise self.divergence("a parameter became NaN/inf")

    def divergence(self, what: str, step: int | None = None) -> DivergenceError:
        """A one-line DivergenceError naming the step, the symptom and the non-finite parameters."""
        bad = self.nonfinite_parameters()
        culprits = f"; non-finite parameters: {', '.join(bad)}" if bad else ""
        at = self.step if step is None else step
        kept = f"{len(self.rows)} trace rows kept in {self.out / 'trace.csv'}" if self.rows else "no trace rows yet"
        return DivergenceError(
            f"training diverged at step {at} (lr {self.learning_rate():.3g}): {what}{culprits}; stopped, {kept}"
        )

    # -- evaluation -------------------------------------------------------------------------------
    @torch.no_grad()
    def render_image(self, view: int) -> torch.Tensor:
        """Render test view ``view`` (H, W, 3) on the evaluation background."""
        intr = self.scene.test.intrinsics
        origins, dirs = image_rays(self.scene.test.poses[view].to(self.device), intr)
        chunk = self.cfg.eval["chunk_rays"]
        out = []
        for s in range(0, origins.shape[0], chunk):
            o, d = origins[s : s + chunk], dirs[s : s + chunk]
            bg = protocol.eval_background(o.shape[0], self.device)
            limits = None
            if self.test_limits is not None:  # this camera's near/far and the content box (render/limits.py)
                cams = torch.full((o.shape[0],), view, dtype=torch.int64, device=self.device)
                limits = self.test_limits.for_rays(o, d, cams)
            out.append(
                render_rays(
                    self.activated_field, o, d, self.grid, self.scene.near, self.cfg.render["max_steps"], bg,
                    self.cfg.render["t_threshold"], stepping=self.stepping, limits=limits,
                )
            )  # fmt: skip
        return torch.cat(out).reshape(intr.height, intr.width, 3).clamp(0, 1).cpu()

    def activated_field(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return activate(chunked_forward(self.network, x, d))

    def eval_views(self, final: bool) -> list[int]:
        n = len(self.scene.test)
        want = self.cfg.eval["final_views"] if final else self.cfg.eval["subset_views"]
        if want == 0 or want >= n:
            return list(range(n))
        return sorted({round(i * (n - 1) / max(want - 1, 1)) for i in range(want)})

    def render_view(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rendered and ground-truth test view ``i`` (H, W, 3), both on the evaluation background."""
        image = self.scene.test.images[i]
        bg = torch.tensor(protocol.EVAL_BACKGROUND).expand(*image.shape[:2], 3)
        return self.render_image(i), protocol.composite_target(image, bg)

    def evaluate(self, final: bool) -> tuple[float, float, int]:
        views = self.eval_views(final)
        psnrs, ssims = [], []
        self.field.eval()
        with maybe_applied(self.average):
            for i in views:
                if self._stop_signal is not None:
                    raise Preempted
                pred, gt = self.render_view(i)
                psnrs.append(psnr(pred, gt))
                ssims.append(ssim(pred, gt))
                if final and i == views[0]:
                    self.save_render(pred, gt)
        self.field.train()
        return sum(psnrs) / len(psnrs), sum(ssims) / len(ssims), len(views)

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

    def record(self, final: bool) -> None:
        p, s, n_views = self.evaluate(final)
        w = self.window
        steps = max(w.steps, 1)
        self.rows.append(
            {
                "dataset": self.scene.kind,
                "scene": self.scene.name,
                "method": self.cfg.method,
                "seed": self.cfg.seed,
                "backend": self.backend,
                "device": self.device.type,
                "step": self.step,
                "train_seconds": round(self.clock.seconds, 4),
                "samples_total": self.samples_total,
                "samples_in_graph": self.samples_in_graph,
                "psnr": round(p, 4),
                "ssim": round(s, 5),
                "peak_mem_bytes": w.peak_mem,
                "graph_bytes": w.graph_bytes,
                "rss_bytes": peak_rss_bytes(),
                "hard_fraction": round(w.hard / w.samples, 5) if w.samples else 1.0,
                "samples_per_step": round(w.samples / steps, 1),
                "hard_samples_per_step": round(w.hard / steps, 1),
                "rays_per_step": round(w.rays / steps, 1),
                "tau_ema": round(getattr(self.strategy, "tau_ema", 1.0), 5),
                "loss": w.loss / steps,
                "eval_views": n_views,
                "occupancy": round(self.grid.occupancy_fraction(), 5),
                **self.meter.take_window().figures(self.governor.threads, len(self.meter.cpus)),
            }
        )
        self.phase_totals = {k: self.phase_totals.get(k, 0.0) + v for k, v in w.phases.items()}
        self.window = WindowStats()
        write_csv(self.out / "trace.csv", TRACE_COLUMNS, self.rows)

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
        self.phase_totals: dict[str, float] = {}
        resumed = ckpt.try_resume(self)
        if resumed or (self.out / "trace.csv").exists():
            # Drop rows of a lost session (evaluated after the last checkpoint, or an abandoned run).
            write_csv(self.out / "trace.csv", TRACE_COLUMNS, self.rows)
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            self._loop()
            return self.finish(resumed)
        except Preempted:
            ckpt.save(self)
            print(
                f"ngp-ohem: stopped by signal {self._stop_signal or signal.SIGTERM} at step {self.step} "
                f"({self.clock.seconds:.1f} of {self.cfg.budget_s:g} training s); checkpoint saved in "
                f"{ckpt.path_of(self)}; rerun the same command to resume",
                file=sys.stderr,
            )
            raise SystemExit(128 + (self._stop_signal or signal.SIGTERM)) from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self._stop_signal = signum

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
            if self._stop_signal is not None:
                raise Preempted
            if self.clock.seconds - last_ckpt >= self.cfg.checkpoint_every_s:
                ckpt.save(self)
                last_ckpt = self.clock.seconds
        bar.close()

    def ensure_render(self) -> None:
        """Re-render the final test view when a finished checkpoint outlived its PNGs (a workflow that was
        interrupted after the final checkpoint deletes the declared outputs on rerun)."""
        if (self.out / "render_test0.png").exists() and (self.out / "gt_test0.png").exists():
            return
        self.field.eval()
        with maybe_applied(self.average):
            self.save_render(*self.render_view(self.eval_views(final=True)[0]))
        self.field.train()

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
            ckpt.save(self)
        clock = self.clock_report()
        if clock["contended"] and self.cfg.strict_clock:
            for name in ("checkpoint.pt", "trace.csv", "render_test0.png", "gt_test0.png"):
                (self.out / name).unlink(missing_ok=True)
            raise ClockContendedError(
                f"{self.out}: other processes took {clock['other_cpu_share']:.0%} (steal {clock['steal_share']:.0%}) "
                f"of cores {clock['cpus']} during training (threshold {CONTENTION_THRESHOLD:.0%}); "
                "strict_clock discards the run so that a rerun trains it again"
            )
        self.ensure_render()
        final = self.rows[-1]
        summary = {
            "status": "complete",
            "config": self.cfg.raw,
            "dataset": self.scene.kind,
            "scene": self.scene.name,
            "data_path": self.scene.path,
            "protocol": protocol.__doc__.strip(),
            "backend": self.backend,
            "encoding_implementation": self.encoding_impl,
            "device": self.device.type,
            "environment": environment_info(self.device),
            "steps": self.step,
            "train_seconds": self.clock.seconds,
            "wall_seconds_last_session": time.time() - self.wall_start,
            "resumed": resumed,
            "final": {k: final[k] for k in ("psnr", "ssim", "samples_total", "samples_in_graph", "step")},
            "max_graph_bytes": max(r["graph_bytes"] for r in self.rows),
            "max_peak_mem_bytes": max(r["peak_mem_bytes"] for r in self.rows),
            "phase_seconds": self.phase_totals,
            "lpips": lpips_unavailable_reason() or "available (not computed by default)",
            "clock": clock,
            "clock_contended": clock["contended"],
            "preset": self.cfg.raw.get("preset"),
            "precision": self.precision.label,
            "weight_average": None
            if self.average is None
            else {"decay": self.average.decay, "every_steps": self.average.every, "updates": self.average.updates},
            "recipe_deviations": recipe.deviations(self.cfg.raw),
            "data_notes": list(self.scene.notes),
        }
        write_json(self.out / "summary.json", summary)
        return summary


def weight_average(cfg: RunConfig, field: torch.nn.Module, n_train_images: int) -> WeightAverage | None:
    """The EMA of the weights that evaluation uses, or None (``eval.ema_decay`` 0); ``ema_every``
    "epoch" is one pass over the training images (the authors' one-image steps)."""
    decay, every = cfg.eval["ema_decay"], cfg.eval["ema_every"]
    if decay == 0:
        return None
    return WeightAverage(list(field.parameters()), decay, n_train_images if every == "epoch" else int(every))


def prepare_kernels(field: torch.nn.Module) -> str:
    """Build/load the fused CPU kernels now, so a first-use compile never runs on the training clock
    (it would take a minute of the budget, and the compiler's CPU would read as contention). The
    builds are independent compiler processes: run them side by side (a first run waits ~half as long)."""
    encoding = getattr(field, "encoding", None)
    if encoding is None:
        return "tcnn"
    if encoding.table.device.type == "cpu":
        loaders = [load_native, load_render_native]
        if getattr(field, "fused_inference", False):
            loaders.append(load_field_native)
        with ThreadPoolExecutor(len(loaders)) as pool:
            list(pool.map(lambda load: load(), loaders))
    return encoding.implementation


def chunked_forward(field: torch.nn.Module, x: torch.Tensor, d: torch.Tensor, chunk: int = 1 << 17) -> torch.Tensor:
    """Inference-mode field outputs for many samples without materialising huge intermediates."""
    return torch.cat([field(x[s : s + chunk], d[s : s + chunk]) for s in range(0, x.shape[0], chunk)])


def activate_density(field: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Density (after the truncated exp) at world positions, for the occupancy grid."""
    return torch.exp(field.density_raw(x))
