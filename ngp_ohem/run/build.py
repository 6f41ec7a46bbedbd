"""Building a run from its configuration: device, field, occupancy grid, ray geometry, strategy.

Training and evaluation share :class:`Model` (everything that renders a view); the trainer adds the
optimizer, the ray sampler and the strategy. The build order is fixed: the field's initial weights
come from the global RNG right after ``torch.manual_seed(cfg.seed)``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from ngp_ohem import protocol, strategies
from ngp_ohem.config import RunConfig
from ngp_ohem.data.rescale import framed_for_run
from ngp_ohem.data.scene import Scene
from ngp_ohem.ema import WeightAverage
from ngp_ohem.errors import ConfigError, DatasetError
from ngp_ohem.field import build_field, resolve_backend
from ngp_ohem.field.hashgrid import HashGridSpec
from ngp_ohem.field.native import load_field_native, load_native, load_render_native
from ngp_ohem.field.ngp import FieldSpec
from ngp_ohem.mining import Strategy
from ngp_ohem.precision import Precision, network
from ngp_ohem.render.limits import RayLimits
from ngp_ohem.render.march import Stepping, step_size
from ngp_ohem.render.occupancy import OccupancyGrid, auto_cascades

# The smallest image side SSIM can score (torchmetrics' 11x11 Gaussian window).
MIN_IMAGE_SIDE = 11


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch sees no CUDA device")
    return torch.device(name)


def field_spec(cfg: RunConfig, bound: float) -> FieldSpec:
    f = cfg.field
    grid = HashGridSpec(
        n_levels=f.n_levels,
        n_features=f.n_features,
        log2_table_size=f.log2_table_size,
        base_resolution=f.base_resolution,
        max_resolution=max(f.base_resolution + 1, round(f.max_resolution_per_bound * bound)),
        convention=f.grid_convention,
    )
    return FieldSpec(
        grid=grid, hidden=f.hidden, geo_features=f.geo_features, density_layers=f.density_layers,
        color_layers=f.color_layers, color_hidden=f.color_hidden,
    )  # fmt: skip


def build_strategy(cfg: RunConfig, generator: torch.Generator) -> Strategy:
    """The configured method's strategy, from the strategy registry (ngp_ohem/strategies)."""
    entry = strategies.get(cfg.method)
    return entry.load().from_settings(cfg.strategy_settings(), generator=generator, profile=cfg.profile)


def check_scene_size(scene: Scene) -> None:
    """Reject, before any training, images too small for the metrics (SSIM would fail after the budget)."""
    for split, name in ((scene.train, "train"), (scene.test, "test")):
        k = split.intrinsics
        if min(k.width, k.height) < MIN_IMAGE_SIDE:
            raise DatasetError(
                f"{scene.path}: {name} images are {k.width}x{k.height}; SSIM needs at least "
                f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels"
            )


def weight_average(cfg: RunConfig, field: torch.nn.Module, n_train_images: int) -> WeightAverage | None:
    """The EMA of the weights that evaluation uses, or None (``eval.ema_decay`` 0); ``ema_every``
    "epoch" is one pass over the training images (the authors' one-image steps)."""
    decay, every = cfg.eval.ema_decay, cfg.eval.ema_every
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


@dataclass
class Model:
    """What renders a view of the run's scene: the field and how it is called, the occupancy grid and
    the ray geometry (marching steps, per-camera limits). Its state is what evaluation needs from a
    checkpoint."""

    scene: Scene  # framed for the run (data/rescale.py)
    device: torch.device
    backend: str
    field: torch.nn.Module
    encoding_impl: str
    precision: Precision
    network: torch.nn.Module  # what every network call goes through (precision.network)
    average: WeightAverage | None
    stepping: Stepping
    grid: OccupancyGrid
    train_limits: RayLimits | None
    test_limits: RayLimits | None

    def state_dict(self) -> dict[str, Any]:
        return {
            "field": self.field.state_dict(),
            "grid": self.grid.state_dict(),
            "weight_average": None if self.average is None else self.average.state_dict(),
            "loss_scaler": self.precision.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.field.load_state_dict(state["field"])
        self.grid.load_state_dict(state["grid"])
        if self.average is not None:
            self.average.load_state_dict(state["weight_average"])
        self.precision.load_state_dict(state["loss_scaler"])


def build_model(cfg: RunConfig, scene: Scene) -> Model:
    """Frame the scene for the run, seed torch and build the model (sets torch's thread count)."""
    scene = framed_for_run(scene, cfg.bound, cfg.frame.blender_scale)
    check_scene_size(scene)
    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    backend = resolve_backend(cfg.backend, device, cfg.field.grid_convention)
    field = build_field(field_spec(cfg, scene.bound), scene.bound, backend, device)
    encoding_impl = prepare_kernels(field)
    precision = Precision(cfg.precision, device)
    r = cfg.render
    cameras = torch.cat([scene.train.poses[:, :3, 3], scene.test.poses[:, :3, 3]])
    cone = protocol.cone_angle(scene.kind, r.cone_angle, r.llff_cone_angle)
    stepping = Stepping(
        scene.bound, r.max_steps, cone, start=scene.near, horizon=float(cameras.norm(dim=-1).max()),
        min_step=step_size(1.0 if r.min_step == "unit" else scene.bound, r.max_steps),
    )  # fmt: skip
    grid = OccupancyGrid(
        scene.bound,
        r.grid_resolution,
        stepping.dt_min,
        warmup_steps=r.grid_warmup_steps,
        update_every=r.grid_update_every,
        ramp=r.grid_ramp,
        max_threshold=r.grid_max_density,
        device=device,
        cascades=auto_cascades(scene.bound) if r.grid_cascades == "auto" else r.grid_cascades,
    )
    k = scene.train.intrinsics
    grid.mark_unseen(scene.train.poses, k.fx, k.fy, k.cx, k.cy, k.width, k.height)
    near_far = protocol.camera_near_far(r.camera_near_far, scene.kind)
    train_limits, test_limits = (
        RayLimits.of_split(split.poses, split.depth_bounds, scene.content_box, scene.near, near_far)
        for split in (scene.train, scene.test)
    )
    return Model(
        scene=scene, device=device, backend=backend, field=field, encoding_impl=encoding_impl, precision=precision,
        network=network(field, precision), average=weight_average(cfg, field, len(scene.train)), stepping=stepping,
        grid=grid, train_limits=train_limits, test_limits=test_limits,
    )  # fmt: skip
