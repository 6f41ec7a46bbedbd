"""Soft mining: pixels as Langevin Monte-Carlo chains on the loss, and a soft 1/error loss weight.

Follows Kheradmand et al., "Accelerating Neural Field Training via Soft Mining" (CVPR 2024) as their
code does it (github.com/ubc-vision/nf-soft-mining, a nerfacc fork, commit ce17cb1):

* ``examples/datasets/lmc.py::LMC`` — a fixed set of chains, each tied to one training image (equal
  counts per image, ``const_img_id``) and holding a position (row, column) normalised to [0, 1].
  Started at uniformly random pixels (lines 26-31). Each step (lines 34-65): position += a * g + b * N(0, 1)
  with a = 20, b = 0.02 and g the gradient of the log of the chain's loss w.r.t. its pixel position;
  chains that left the image, and the fraction ``lossminpc`` = 0.1 with the lowest loss, restart at a
  pixel of their image drawn from its Sobel edge magnitude (``utils.py::compute_sobel_edge``); the last
  ``minpct`` = 0.1 of the chains restart uniformly; positions are clamped to [0, 1] and rounded to the
  nearest pixel. ``nerf_synthetic.py::fetch_data_lmc`` casts the ray through that pixel (centre + 0.5,
  ``get_origin_viewdirs``) and takes that pixel's colour: nearest-pixel, no bilinear target.
* ``examples/train_ngp_nerf_prop.py`` lines 254-282 — the per-ray loss is multiplied by
  ``clamp(1 / max(|rgb - target|_1, eps_fp16) ** r, 0.2, mean + std)`` with r = min(step / 1000, alpha)
  (alpha 0.6 Blender, 0.8 LLFF): alpha = 1 would be unbiased importance sampling for pixels drawn in
  proportion to the error, alpha = 0 hard mining without correction. After the backward, g = grad of the
  batch-mean loss w.r.t. the pixel coordinates, divided by the ray's (weighted) loss: (1 / R) grad log L.

Adapted to this trainer:

* The pixel gradient. Theirs is autograd through ``points_2d`` -> ray directions -> sample positions
  (nerfacc's sample distances carry no gradient) -> tcnn's input gradients. Our hash grid returns no
  gradient for positions (and the grid is not this arm's to change), so g is a forward finite difference
  of the same quantity: the kept rays re-rendered through the pixel position shifted by ``fd_step``
  pixels in x and in y, at the marched distances and segment lengths held fixed, with the fp32 field and
  no graph (three extra forwards without a graph: the arm's own cost, on its training clock).
* The 1 / R: theirs is 1 / 4096 (their fixed batch); ``reference_rays`` keeps it, so the drift per step
  does not shrink with this trainer's adaptive ray count.
* The chain count follows the trainer's ray count (targeted samples per step, same rule as every arm):
  when it grows, new chains start uniformly on the next images in turn; when it shrinks, the last chains
  end. Chains whose rays marching dropped (beyond the sample cap) are not moved that step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ngp_ohem.clock import PhaseClock
from ngp_ohem.field.ngp import activate
from ngp_ohem.memory import GraphBytesMeter
from ngp_ohem.mining import LossScale, StepResult, unscaled
from ngp_ohem.precision import AutocastField
from ngp_ohem.rays import RaySampler, pixel_rays
from ngp_ohem.render.composite import composite
from ngp_ohem.render.march import PackedSamples
from ngp_ohem.strategies import SoftMiningSettings

FP16_EPS = float(torch.finfo(torch.float16).eps)
FP32_EPS = float(torch.finfo(torch.float32).eps)


def sobel_edges(images: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude (n, H, W) of the grey images (their compute_sobel_edge: RGB weights
    0.2989 / 0.5870 / 0.1140, 3 x 3 kernels, zero padding)."""
    rgb = images[..., :3].float()
    grey = (0.2989 * rgb[..., 0] + 0.5870 * rgb[..., 1] + 0.1140 * rgb[..., 2])[:, None]
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=images.device)
    kernels = torch.stack([kx, kx.t()])[:, None]
    edges = F.conv2d(grey, kernels, padding=1)
    return edges.square().sum(1).sqrt()


class EdgeSampler:
    """Pixels of given images drawn in proportion to their edge magnitude (uniform on a flat image)."""

    def __init__(self, images: torch.Tensor) -> None:
        n, self.height, self.width = images.shape[:3]
        edges = sobel_edges(images).reshape(n, -1).double()
        flat = edges.sum(1, keepdim=True) <= 0
        edges = torch.where(flat, torch.ones_like(edges), edges)
        self.pdf = edges / edges.sum(1, keepdim=True)  # (n, H * W)
        # One increasing sequence: image j's cumulative probabilities shifted by j.
        offsets = torch.arange(n, device=images.device, dtype=torch.float64)[:, None]
        self.cdf = (torch.cumsum(self.pdf, 1) + offsets).reshape(-1)

    def draw(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Positions (m, 2) as (row, column) in [0, 1] of one edge-drawn pixel per entry of ``image``."""
        u = torch.rand(image.shape[0], device=image.device, generator=generator, dtype=torch.float64)
        pixels = self.height * self.width
        index = torch.searchsorted(self.cdf, image.double() + u, right=True)
        local = (index - image * pixels).clamp_(0, pixels - 1)
        return torch.stack(
            [(local // self.width) / (self.height - 1), (local % self.width) / (self.width - 1)], 1
        ).float()


def soft_weights(error: torch.Tensor, exponent: float, min_weight: float) -> torch.Tensor:
    """Their loss correction: clamp(max(error, eps_fp16) ** -exponent, min_weight, mean + std)."""
    correction = error.clamp(min=FP16_EPS).pow(-exponent)
    if correction.numel() < 2:
        return correction.clamp(min=min_weight)
    return correction.clamp(min=min_weight, max=float(correction.mean() + correction.std()))


class Chains:
    """The Langevin chains: normalised (row, column) positions (P, 2) and the image of each (P,)."""

    def __init__(self, edges: EdgeSampler, n_images: int, settings: SoftMiningSettings) -> None:
        self.edges, self.n_images, self.s = edges, n_images, settings
        device = edges.cdf.device
        self.positions = torch.zeros(0, 2, device=device)
        self.images = torch.zeros(0, dtype=torch.long, device=device)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def resize(self, n: int, generator: torch.Generator) -> None:
        """n chains: surplus ones end, new ones start at uniform pixels of the next images in turn."""
        old = len(self)
        if n <= old:
            self.positions, self.images = self.positions[:n], self.images[:n]
            return
        device = self.positions.device
        h, w = self.edges.height, self.edges.width
        rows = torch.randint(0, h, (n - old,), device=device, generator=generator) / (h - 1)
        cols = torch.randint(0, w, (n - old,), device=device, generator=generator) / (w - 1)
        self.positions = torch.cat([self.positions, torch.stack([rows, cols], 1).float()])
        self.images = torch.cat([self.images, torch.arange(old, n, device=device) % self.n_images])

    def pixels(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image, row, column) of the nearest pixel of every chain."""
        h, w = self.edges.height, self.edges.width
        rows = (self.positions[:, 0] * (h - 1)).round().long()
        cols = (self.positions[:, 1] * (w - 1)).round().long()
        return self.images, rows, cols

    def step(self, grad_log: torch.Tensor, loss: torch.Tensor, generator: torch.Generator) -> None:
        """One LMC step of the first k chains (k = len(loss), the kept rays), then the restarts."""
        s, n, k = self.s, len(self), int(loss.shape[0])
        noise = torch.randn(n, 2, device=self.positions.device, generator=generator)
        uniform = torch.rand(n, 2, device=self.positions.device, generator=generator)
        pos = self.positions
        restart = torch.zeros(n, dtype=torch.bool, device=pos.device)
        if k > 0:
            pos[:k] += s.drift * grad_log + s.noise * noise[:k]
            threshold = torch.topk(loss, int(s.reset_fraction * k) + 1, largest=False).values[-1]
            restart[:k] = (pos[:k] < 0).any(1) | (pos[:k] > 1).any(1) | (loss <= threshold)
        n_uniform = int(s.uniform_fraction * n)
        if n_uniform > 0:
            pos[n - n_uniform :] = uniform[n - n_uniform :]
        index = restart.nonzero().squeeze(1)
        if index.numel() > 0:
            pos[index] = self.edges.draw(self.images[index], generator)
        pos.clamp_(0.0, 1.0)


class SoftMining:
    """The ``soft_mining`` arm (see the module docstring)."""

    name = "soft_mining"

    def __init__(self, settings: SoftMiningSettings, generator: torch.Generator, profile: bool = False) -> None:
        self.settings = settings
        self.generator = generator
        self.profile = profile
        self.steps = 0
        self.chains: Chains | None = None
        self._restored: dict | None = None
        self._sampler: RaySampler | None = None
        self._drawn: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_settings(
        cls, settings: SoftMiningSettings, generator: torch.Generator, profile: bool = False
    ) -> SoftMining:
        return cls(settings, generator, profile)

    def exponent(self) -> float:
        """r = min(step / warmup_steps, alpha): their warm-up from plain to soft-mined loss."""
        return min(self.steps / self.settings.warmup_steps, self.settings.alpha)

    # -- hook: the training pixels ------------------------------------------------------------------------
    def draw_pixels(self, sampler: RaySampler, n_rays: int) -> torch.Tensor:
        if self.chains is None:
            self.chains = Chains(EdgeSampler(sampler.images), sampler.images.shape[0], self.settings)
            if self._restored is not None:
                self.chains.positions = self._restored["positions"].to(sampler.images.device).clone()
                self.chains.images = self._restored["images"].to(sampler.images.device).clone()
        self.chains.resize(n_rays, self.generator)
        self._sampler = sampler
        self._drawn = self.chains.pixels()
        image, rows, cols = self._drawn
        return image * (sampler.height * sampler.width) + rows * sampler.width + cols

    # -- the step ------------------------------------------------------------------------------------------
    def backward(
        self,
        field: torch.nn.Module,
        samples: PackedSamples,
        target: torch.Tensor,
        background: torch.Tensor,
        loss_scale: LossScale = unscaled,
    ) -> StepResult:
        clock = PhaseClock(self.profile, target.device)
        with GraphBytesMeter(field.parameters()) as meter:
            raw = field(samples.positions, samples.directions)
            clock.lap("forward")
            sigma, rgb = activate(raw)
            color = composite(sigma, rgb, samples.deltas, samples.ray_index, samples.n_rays, background).color
            residual = color - target
            per_ray = residual.square().mean(-1)
            weight = soft_weights(residual.detach().abs().mean(-1), self.exponent(), self.settings.min_weight)
            loss = (per_ray * weight).mean()
        loss_scale(loss).backward()
        clock.lap("backward")
        if self.chains is not None and self._drawn is not None:  # per-ray feedback (issue 15's second hook)
            with torch.no_grad():
                grad_log, ray_loss = self.log_loss_gradient(field, samples, target, background)
                self.chains.step(grad_log, ray_loss, self.generator)
            clock.lap("langevin")
        self.steps += 1
        n = samples.n_samples
        return StepResult(per_ray.detach().mean(), n, n, 1.0, meter.bytes, clock.seconds)

    def log_loss_gradient(
        self, field: torch.nn.Module, samples: PackedSamples, target: torch.Tensor, background: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 / reference_rays) * grad log L (k, 2) w.r.t. (row, column) in pixels, and L (k,), of the kept rays."""
        k = samples.n_rays
        image, rows, cols = (t[:k] for t in self._drawn)
        sampler = self._sampler
        poses, intrinsics = sampler.poses[image], sampler.split.intrinsics
        origins, dirs = pixel_rays(poses, intrinsics, cols, rows)
        ri = samples.ray_index
        t = ((samples.positions - origins[ri]) * samples.directions).sum(-1, keepdim=True)
        net = field.field if isinstance(field, AutocastField) else field  # fp32: the difference is tiny

        def render(d: torch.Tensor) -> torch.Tensor:
            sigma, rgb = activate(net(origins[ri] + t * d[ri], d[ri]))
            return composite(sigma, rgb, samples.deltas, ri, k, background).color

        h = self.settings.fd_step
        base = render(dirs)
        shifted_rows = render(pixel_rays(poses, intrinsics, cols.float(), rows.float() + h)[1])
        shifted_cols = render(pixel_rays(poses, intrinsics, cols.float() + h, rows.float())[1])
        residual = base - target
        loss = residual.square().mean(-1)
        grad = torch.stack(
            [(2 * residual * (shifted - base) / h).mean(-1) for shifted in (shifted_rows, shifted_cols)], 1
        )
        return grad / (loss[:, None] + FP32_EPS) / self.settings.reference_rays, loss

    def state_dict(self) -> dict:
        if self.chains is not None:
            chains = {"positions": self.chains.positions.clone(), "images": self.chains.images.clone()}
        else:
            chains = self._restored
        return {"steps": self.steps, "chains": chains}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        chains = state["chains"]
        self._restored = None if chains is None else {k: v.clone() for k, v in chains.items()}
        if self.chains is not None:
            if chains is None:  # a failed restore rolls back to a fresh arm
                self.chains = None
            else:
                self.chains.positions = chains["positions"].clone()
                self.chains.images = chains["images"].clone()
