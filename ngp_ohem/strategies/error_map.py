"""Error-map pixel sampling: training pixels drawn in proportion to a per-image map of running loss.

Follows torch-ngp's ``--error_map`` (github.com/ashawkey/torch-ngp, after Instant-NGP's error map,
Müller et al., SIGGRAPH 2022): ``nerf/provider.py`` (lines 234-236: a 128 x 128 map per training image,
all ones), ``nerf/utils.py::get_rays`` (lines 102-114: cells drawn by ``torch.multinomial`` on the
image's map, each mapped to a uniformly random pixel inside it) and ``Trainer.train_step`` (lines
533-555: the per-ray MSE, mean over channels, folded into the drawn cells as 0.1 * old + 0.9 * new).
The loss is not re-weighted there, so neither is it here: the arm is biased towards hard pixels on purpose.

Adapted to this trainer, which draws each step's rays over all training images rather than from one:
a ray's image is uniform (as in the uniform sampler, and as torch-ngp's one random image per step on
average), its cell follows that image's map, with replacement (torch-ngp draws without replacement
within its one image; here a step's rays per image are themselves random, and with replacement keeps the
law exactly p). Cells hit by several rays of a step take the mean of their losses before the update.
The map has ``min(resolution, side)`` cells per image side, so that no cell is smaller than a pixel
(the procedural scenes are 48-64 px). Only rays that marching kept (the first ``samples.n_rays``) update
the map. Everything else of the step is the baseline's (``FullBatch``: all samples in the graph).
"""

from __future__ import annotations

import torch

from ngp_ohem.clock import PhaseClock
from ngp_ohem.mining import LossScale, StepResult, full_batch_step, unscaled
from ngp_ohem.rays import RaySampler
from ngp_ohem.render.march import PackedSamples
from ngp_ohem.strategies import ErrorMapSettings


class ErrorMap:
    """Per-image grids of running loss and the draws from them (state of the error_map arm)."""

    def __init__(self, n_images: int, height: int, width: int, settings: ErrorMapSettings, device: torch.device):
        self.height, self.width = height, width
        self.cells_y, self.cells_x = min(settings.resolution, height), min(settings.resolution, width)
        self.ema = settings.ema
        cells = self.cells_y * self.cells_x
        self.values = torch.full((n_images, cells), float(settings.initial), device=device)

    def probabilities(self) -> torch.Tensor:
        """(n_images, cells): P(image) = 1 / n_images times P(cell | image) proportional to its value."""
        values = self.values.clamp(min=torch.finfo(self.values.dtype).tiny)  # an all-zero image: uniform
        per_image = values / values.sum(dim=1, keepdim=True)
        return per_image / values.shape[0]

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat pixel indices (n,) and the flat (image, cell) index (n,) each came from."""
        cdf = torch.cumsum(self.probabilities().reshape(-1).double(), 0)
        u = torch.rand(n, device=cdf.device, generator=generator, dtype=torch.float64) * cdf[-1]
        cell = torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.numel() - 1)
        image, local = cell // (self.cells_y * self.cells_x), cell % (self.cells_y * self.cells_x)
        cy, cx = local // self.cells_x, local % self.cells_x
        jitter = torch.rand(2, n, device=cdf.device, generator=generator)
        py = ((cy + jitter[0]) * (self.height / self.cells_y)).long().clamp_(max=self.height - 1)
        px = ((cx + jitter[1]) * (self.width / self.cells_x)).long().clamp_(max=self.width - 1)
        return image * (self.height * self.width) + py * self.width + px, cell

    def update(self, cell: torch.Tensor, loss: torch.Tensor) -> None:
        """Fold per-ray losses into their cells: value <- (1 - ema) value + ema mean(loss of its rays)."""
        flat = self.values.view(-1)
        total = torch.zeros_like(flat).index_add_(0, cell, loss.to(flat.dtype))
        count = torch.zeros_like(flat).index_add_(0, cell, torch.ones_like(loss, dtype=flat.dtype))
        hit = count > 0
        flat[hit] = (1.0 - self.ema) * flat[hit] + self.ema * (total[hit] / count[hit])


class ErrorMapSampling:
    """The ``error_map`` arm: pixels from the error map, then the baseline's full-batch step."""

    name = "error_map"

    def __init__(self, settings: ErrorMapSettings, generator: torch.Generator, profile: bool = False) -> None:
        self.settings = settings
        self.generator = generator
        self.profile = profile
        self.map: ErrorMap | None = None
        self._cells: torch.Tensor | None = None  # the last draw's cells, for the update after backward
        self._restored: torch.Tensor | None = None  # values read from a checkpoint before the first draw

    @classmethod
    def from_settings(
        cls, settings: ErrorMapSettings, generator: torch.Generator, profile: bool = False
    ) -> ErrorMapSampling:
        return cls(settings, generator, profile)

    def draw_pixels(self, sampler: RaySampler, n_rays: int) -> torch.Tensor:
        if self.map is None:
            n, h, w = sampler.images.shape[:3]
            self.map = ErrorMap(n, h, w, self.settings, sampler.images.device)
            if self._restored is not None:
                self.map.values.copy_(self._restored)
        flat, self._cells = self.map.draw(n_rays, self.generator)
        return flat

    def backward(
        self,
        field: torch.nn.Module,
        samples: PackedSamples,
        target: torch.Tensor,
        background: torch.Tensor,
        loss_scale: LossScale = unscaled,
    ) -> StepResult:
        clock = PhaseClock(self.profile, target.device)
        result, per_ray = full_batch_step(field, samples, target, background, loss_scale, clock)
        if self.map is not None and self._cells is not None:  # per-ray feedback (issue 15's second hook)
            self.map.update(self._cells[: samples.n_rays], per_ray)
            clock.lap("error_map")
        return result

    def state_dict(self) -> dict:
        values = self.map.values if self.map is not None else self._restored
        return {"values": None if values is None else values.clone()}

    def load_state_dict(self, state: dict) -> None:
        values = state["values"]
        if self.map is not None:
            if values is None:  # back to a fresh map (a failed restore rolls back to the initial state)
                self.map.values.fill_(float(self.settings.initial))
            else:
                self.map.values.copy_(values)
        self._restored = None if values is None else values.clone()
