"""How one training step spends its compute: the baseline and online hard sample mining.

Both strategies see only the network call (``field(x, d) -> raw``), the packed samples and the
per-ray targets; ray marching, the occupancy grid and the optimizer are shared and untouched.

``FullBatch`` (baseline): forward all B samples with a graph, composite, loss, backward.

``HardSampleMining`` (Korhonen et al., ECCV 2024): forward all B samples without a graph, make the
pre-activation outputs leaves, composite and differentiate the loss w.r.t. them (a graph without
the network), score each sample by the L2 norm of its 4-vector gradient, pick b samples with
probability proportional to that score, forward only those with a graph and backward their outputs
with the gradients already computed. b = B / tau_ema clamped to [min_fraction, max_fraction] * B,
where tau = sqrt(B * sum g^2) is the variance-reduction factor of importance sampling
(Katharopoulos & Fleuret 2018) and tau_ema its EMA (decay 0.99, start 1, updated only when tau > 1).

The loss is the mean over rays of the per-pixel MSE (mean over channels) in both strategies, so with
the hard set forced to all samples the parameter gradients equal the baseline's exactly.

Both are arms of the strategy registry (ngp_ohem/strategies: baseline, hsm, and hsm_unbiased, which is
``HardSampleMining`` with ``mining.unbiased`` fixed true). Pixel-level arms (soft mining, error map)
live in ngp_ohem/strategies/ and also choose the training pixels through ``draw_pixels``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch

from ngp_ohem.clock import PhaseClock
from ngp_ohem.field.ngp import activate
from ngp_ohem.memory import GraphBytesMeter
from ngp_ohem.render.composite import composite
from ngp_ohem.render.march import PackedSamples

if TYPE_CHECKING:
    from ngp_ohem.rays import RaySampler
    from ngp_ohem.strategies import MiningSettings


@dataclass
class StepResult:
    """What a strategy reports about one step (tensors stay on the device: no sync for logging)."""

    loss: torch.Tensor
    n_samples: int
    n_hard: int
    tau_ema: float
    graph_bytes: int
    phase_seconds: dict[str, float] = field(default_factory=dict)


def pixel_loss(
    raw: torch.Tensor, samples: PackedSamples, target: torch.Tensor, background: torch.Tensor
) -> torch.Tensor:
    """Per-ray MSE (R,) of the image rendered from pre-activation outputs ``raw`` (N, 4)."""
    sigma, rgb = activate(raw)
    rendered = composite(sigma, rgb, samples.deltas, samples.ray_index, samples.n_rays, background)
    return ((rendered.color - target) ** 2).mean(-1)


def unscaled(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


# What ``backward`` is called on: the loss (or the outputs) times the mixed-precision loss scale.
LossScale = Callable[[torch.Tensor], torch.Tensor]
# Hook (issue 15): a pixel-level strategy's choice of training pixels, flat indices (n,) into
# (image, row, column) of the sampler's images; None draws uniformly (RaySampler.sample, as before).
PixelDraw = Callable[["RaySampler", int], torch.Tensor]


class Strategy(Protocol):
    name: str
    draw_pixels: PixelDraw | None

    def backward(
        self,
        field: torch.nn.Module,
        samples: PackedSamples,
        target: torch.Tensor,
        background: torch.Tensor,
        loss_scale: LossScale = unscaled,
    ) -> StepResult: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class FullBatch:
    """The baseline: every sample enters the autograd graph."""

    name = "baseline"
    draw_pixels = None

    def __init__(self, profile: bool = False) -> None:
        self.profile = profile

    @classmethod
    def from_settings(cls, settings: None, generator: torch.Generator, profile: bool = False) -> FullBatch:
        return cls(profile=profile)

    def backward(self, field, samples, target, background, loss_scale: LossScale = unscaled) -> StepResult:
        clock = PhaseClock(self.profile, target.device)
        with GraphBytesMeter(field.parameters()) as meter:
            raw = field(samples.positions, samples.directions)
            clock.lap("forward")
            loss = pixel_loss(raw, samples, target, background).mean()
        loss_scale(loss).backward()
        clock.lap("backward")
        n = samples.n_samples
        return StepResult(loss.detach(), n, n, 1.0, meter.bytes, clock.seconds)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class Selection:
    index: torch.Tensor  # (b,) sample indices, distinct
    scale: torch.Tensor | None  # (b,) gradient multipliers (unbiased variant), None for the paper's


class HardSampleMining:
    """The paper's two-forward, one-backward step (see the module docstring)."""

    name = "hsm"
    draw_pixels = None

    def __init__(
        self,
        min_fraction: float = 0.05,
        max_fraction: float = 0.5,
        tau_decay: float = 0.99,
        unbiased: bool = False,
        generator: torch.Generator | None = None,
        profile: bool = False,
    ) -> None:
        self.min_fraction, self.max_fraction = min_fraction, max_fraction
        self.tau_decay = tau_decay
        self.unbiased = unbiased
        self.generator = generator
        self.profile = profile
        self.tau_ema = 1.0

    @classmethod
    def from_settings(
        cls, settings: MiningSettings, generator: torch.Generator, profile: bool = False
    ) -> HardSampleMining:
        s = settings
        return cls(s.min_fraction, s.max_fraction, s.tau_decay, s.unbiased, generator=generator, profile=profile)

    # -- selection ------------------------------------------------------------------------------
    def update_batch_size(self, n: int, sum_g2: float) -> int:
        """Update tau_ema from the normalised hardness g of n samples (its sum of squares ``sum_g2``)
        and return the hard batch size b."""
        tau = math.sqrt(n * sum_g2)
        if tau > 1.0:
            self.tau_ema = self.tau_decay * self.tau_ema + (1.0 - self.tau_decay) * tau
        b = n / self.tau_ema
        b = min(max(b, self.min_fraction * n), self.max_fraction * n)
        return max(1, round(b))

    def select(self, hardness: torch.Tensor) -> Selection:
        """Choose b samples with probability proportional to ``hardness`` (B,), without replacement.

        b is a tensor shape, so it must reach the host: the sums it needs travel in one copy (the
        step's only host sync outside ray marching). All-zero hardness selects nothing. When at most
        b samples have non-zero hardness (e.g. most rays terminated early), all of them are taken:
        the rest carry no gradient, and multinomial would fail.
        """
        empty = Selection(hardness.new_zeros(0, dtype=torch.long), None)
        if hardness.numel() == 0:
            return empty
        sums = torch.stack([hardness.sum(), hardness.square().sum(), (hardness > 0).sum().to(hardness.dtype)])
        total, sum_sq, n_nonzero = sums.tolist()
        if not total > 0:
            return empty
        b = self.update_batch_size(hardness.numel(), sum_sq / (total * total))
        g = hardness / total
        if self.unbiased:
            # With-replacement draws make sum_j grad_{i_j} / (b p_{i_j}) exactly unbiased.
            draws = torch.multinomial(g, b, replacement=True, generator=self.generator)
            index, counts = torch.unique(draws, return_counts=True)
            return Selection(index, counts.to(g.dtype) / (b * g[index]))
        if n_nonzero <= b:
            return Selection((hardness > 0).nonzero().squeeze(1), None)
        return Selection(torch.multinomial(g, b, replacement=False, generator=self.generator), None)

    # -- the step -------------------------------------------------------------------------------
    def backward(self, field, samples, target, background, loss_scale: LossScale = unscaled) -> StepResult:
        clock = PhaseClock(self.profile, target.device)
        with torch.no_grad():
            raw = field(samples.positions, samples.directions)
        clock.lap("forward_all")
        with GraphBytesMeter(field.parameters()) as render_meter:
            leaf = raw.requires_grad_(True)
            loss = pixel_loss(leaf, samples, target, background).mean()
        (grad_raw,) = torch.autograd.grad(loss, leaf)
        chosen = self.select(grad_raw.norm(dim=1))
        n, n_hard = samples.n_samples, int(chosen.index.numel())
        if n_hard == 0:
            clock.lap("select")
            return StepResult(loss.detach(), n, 0, self.tau_ema, render_meter.bytes, clock.seconds)
        grad_out = grad_raw[chosen.index]
        if chosen.scale is not None:
            grad_out = grad_out * chosen.scale[:, None]
        positions, directions = samples.subset(chosen.index)
        clock.lap("select")
        with GraphBytesMeter(field.parameters()) as net_meter:
            raw_hard = field(positions, directions)
        clock.lap("forward_hard")
        loss_scale(raw_hard).backward(grad_out)  # the authors' scaler.scale(output).backward(gradient)
        clock.lap("backward")
        graph_bytes = max(render_meter.bytes, net_meter.bytes)
        return StepResult(loss.detach(), n, n_hard, self.tau_ema, graph_bytes, clock.seconds)

    def state_dict(self) -> dict:
        return {"tau_ema": self.tau_ema}

    def load_state_dict(self, state: dict) -> None:
        self.tau_ema = float(state["tau_ema"])
