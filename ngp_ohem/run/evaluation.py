"""Rendering and scoring test views: the trainer's evaluations and ``ngp-ohem eval`` on its own.

An :class:`Evaluator` needs only the run's :class:`~ngp_ohem.run.build.Model` (field, occupancy grid,
ray geometry, weight average): no optimizer, no ray sampler, no strategy. Views are rendered on the
evaluation background and scored against the test images composited on it (``protocol.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ngp_ohem import protocol
from ngp_ohem.config import RunConfig
from ngp_ohem.ema import maybe_applied
from ngp_ohem.errors import NgpOhemError
from ngp_ohem.field.ngp import activate
from ngp_ohem.io import write_json
from ngp_ohem.metrics import psnr, ssim
from ngp_ohem.rays import image_rays
from ngp_ohem.render.inference import render_rays
from ngp_ohem.run import checkpoint
from ngp_ohem.run.build import Model, build_model


@dataclass
class Evaluation:
    """Mean PSNR and SSIM over the evaluated views, and the first view's render and ground truth."""

    psnr: float
    ssim: float
    n_views: int
    first: tuple[torch.Tensor, torch.Tensor]


def chunked_forward(field: torch.nn.Module, x: torch.Tensor, d: torch.Tensor, chunk: int = 1 << 17) -> torch.Tensor:
    """Inference-mode field outputs for many samples without materialising huge intermediates."""
    return torch.cat([field(x[s : s + chunk], d[s : s + chunk]) for s in range(0, x.shape[0], chunk)])


class Evaluator:
    """Renders and scores the test views of one run's model."""

    def __init__(self, cfg: RunConfig, model: Model) -> None:
        self.cfg = cfg
        self.model = model

    @torch.no_grad()
    def render_image(self, view: int) -> torch.Tensor:
        """Render test view ``view`` (H, W, 3) on the evaluation background."""
        m = self.model
        intr = m.scene.test.intrinsics
        origins, dirs = image_rays(m.scene.test.poses[view].to(m.device), intr)
        chunk = self.cfg.eval.chunk_rays
        out = []
        for s in range(0, origins.shape[0], chunk):
            o, d = origins[s : s + chunk], dirs[s : s + chunk]
            bg = protocol.eval_background(o.shape[0], m.device)
            limits = None
            if m.test_limits is not None:  # this camera's near/far and the content box (render/limits.py)
                cams = torch.full((o.shape[0],), view, dtype=torch.int64, device=m.device)
                limits = m.test_limits.for_rays(o, d, cams)
            out.append(
                render_rays(
                    self.activated_field, o, d, m.grid, m.scene.near, self.cfg.render.max_steps, bg,
                    self.cfg.render.t_threshold, stepping=m.stepping, limits=limits,
                )
            )  # fmt: skip
        return torch.cat(out).reshape(intr.height, intr.width, 3).clamp(0, 1).cpu()

    def activated_field(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return activate(chunked_forward(self.model.network, x, d))

    def eval_views(self, final: bool) -> list[int]:
        """The test views an evaluation scores: ``eval.final_views`` or ``eval.subset_views``, evenly spread."""
        n = len(self.model.scene.test)
        want = self.cfg.eval.final_views if final else self.cfg.eval.subset_views
        if want == 0 or want >= n:
            return list(range(n))
        return sorted({round(i * (n - 1) / max(want - 1, 1)) for i in range(want)})

    def render_view(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rendered and ground-truth test view ``i`` (H, W, 3), both on the evaluation background."""
        image = self.model.scene.test.images[i]
        bg = torch.tensor(protocol.EVAL_BACKGROUND).expand(*image.shape[:2], 3)
        return self.render_image(i), protocol.composite_target(image, bg)

    def evaluate(self, final: bool, before_view: Callable[[], None] | None = None) -> Evaluation:
        """Score the views of an intermediate (``final`` False) or the final evaluation with the
        evaluation weights; ``before_view`` runs before each view (the trainer's stop check)."""
        views = self.eval_views(final)
        psnrs, ssims = [], []
        first = None
        with evaluation_weights(self.model):
            for i in views:
                if before_view is not None:
                    before_view()
                pred, gt = self.render_view(i)
                psnrs.append(psnr(pred, gt))
                ssims.append(ssim(pred, gt))
                if first is None:
                    first = (pred, gt)
        assert first is not None  # eval_views is never empty
        return Evaluation(sum(psnrs) / len(psnrs), sum(ssims) / len(ssims), len(views), first)

    def first_final_view(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Render and ground truth of the first view of the final evaluation."""
        with evaluation_weights(self.model):
            return self.render_view(self.eval_views(final=True)[0])


@contextmanager
def evaluation_weights(model: Model) -> Iterator[None]:
    """Inference mode with the weight average applied, both undone on exit (also on an exception)."""
    model.field.eval()
    try:
        with maybe_applied(model.average):
            yield
    finally:
        model.field.train()


def evaluate_run(run_dir: Path, data: str | None = None) -> dict[str, Any]:
    """Re-evaluate a finished (or checkpointed) run on its final views; writes ``eval.json``."""
    from ngp_ohem.data import load_scene

    summary_path, checkpoint_path = run_dir / "summary.json", checkpoint.path_in(run_dir)
    if not summary_path.exists() or not checkpoint_path.exists():
        raise NgpOhemError(f"{run_dir} is not a run folder (needs summary.json and checkpoint.pt)")
    summary = json.loads(summary_path.read_text())
    cfg = RunConfig.from_dict(summary["config"])  # a key it lacks or does not know is an error naming it
    scene = load_scene(data or summary["data_path"], downscale=cfg.downscale, bound=cfg.bound)
    model = build_model(cfg, scene)
    try:
        state = checkpoint.read(checkpoint_path, summary["config"], model.device)
        model.load_state_dict(state)
    except Exception as exc:
        raise NgpOhemError(f"cannot restore {checkpoint_path} ({type(exc).__name__}: {exc})") from None
    result = Evaluator(cfg, model).evaluate(final=True)
    record = {
        "psnr": result.psnr,
        "ssim": result.ssim,
        "views": result.n_views,
        "step": int(state["step"]),
        "train_seconds": float(state["clock_seconds"]),
    }
    write_json(run_dir / "eval.json", record)
    return record
