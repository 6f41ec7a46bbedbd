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
from ngp_ohem.field.native import load_render_native
from ngp_ohem.field.ngp import activate
from ngp_ohem.memory import GraphBytesMeter
from ngp_ohem.precision import first_pass
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
    raw: torch.Tensor, samples: PackedSamples, target: torch.Tensor, background: torch.Tensor, use_native: bool = True
) -> torch.Tensor:
    """Per-ray MSE (R,) of the image rendered from pre-activation outputs ``raw`` (N, 4)."""
    sigma, rgb = activate(raw)
    rendered = composite(
        sigma, rgb, samples.deltas, samples.ray_index, samples.n_rays, background, use_native=use_native
    )
    return ((rendered.color - target) ** 2).mean(-1)


def unscaled(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@dataclass
class Scores:
    """Mining's scoring of the first pass: the loss, its gradient w.r.t. every sample's raw outputs
    (N, 4), each sample's hardness |gradient| (N,) and (sum, sum of squares, non-zero count) of it."""

    loss: torch.Tensor
    grad_raw: torch.Tensor
    hardness: torch.Tensor
    sums: tuple[float, float, float]


def score_samples(
    raw: torch.Tensor, samples: PackedSamples, target: torch.Tensor, background: torch.Tensor, use_native: bool = True
) -> Scores:
    """The loss gradient w.r.t. the pre-activation outputs ``raw`` (N, 4) of a no-graph forward.

    On the CPU one fused pass per ray (``csrc/render_cpu.cpp``, ``hardness``) computes what the
    reference below does with a small autograd graph (activations, compositing, per-pixel MSE); the
    tests compare the two. The three sums reach the host in one copy: b is a tensor shape.
    """
    native = load_render_native() if use_native and raw.device.type == "cpu" and raw.dtype == torch.float32 else None
    if native is not None:
        bg = background.float().expand(samples.n_rays, 3).contiguous()
        grad_raw, hardness, ray_loss, sums = native.hardness(
            raw.contiguous(), samples.deltas.float().contiguous(), samples.ray_index.contiguous(), samples.n_rays,
            target.float().contiguous(), bg, 1e-4,
        )  # fmt: skip
        total, sum_sq, nonzero = sums.tolist()
        return Scores(ray_loss.mean(), grad_raw, hardness, (total, sum_sq, nonzero))
    leaf = raw.detach().requires_grad_(True)
    loss = pixel_loss(leaf, samples, target, background, use_native=use_native).mean()
    (grad_raw,) = torch.autograd.grad(loss, leaf)
    hardness = grad_raw.norm(dim=1)
    return Scores(loss.detach(), grad_raw, hardness, hardness_sums(hardness))


def hardness_sums(hardness: torch.Tensor) -> tuple[float, float, float]:
    """(sum, sum of squares, non-zero count) of the hardness, in one host copy."""
    sums = torch.stack([hardness.sum(), hardness.square().sum(), (hardness > 0).sum().to(hardness.dtype)])
    total, sum_sq, nonzero = sums.tolist()
    return total, sum_sq, nonzero


def top_indices(key: torch.Tensor, b: int) -> torch.Tensor:
    """Indices of the b largest keys (B,) in ascending order: the set ``torch.topk`` picks, in marching
    order (ray-coherent positions for the hard pass). O(B) on the CPU through ``nth_element``."""
    native = load_render_native() if key.device.type == "cpu" and key.dtype == torch.float32 else None
    if native is not None:
        return native.top_indices(key.contiguous(), b)
    return torch.topk(key, b, sorted=False).indices.sort().values


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


def full_batch_step(
    field: torch.nn.Module,
    samples: PackedSamples,
    target: torch.Tensor,
    background: torch.Tensor,
    loss_scale: LossScale,
    clock: PhaseClock,
) -> tuple[StepResult, torch.Tensor]:
    """The baseline's step (all samples in the graph, mean per-pixel MSE, backward) and the per-ray loss
    (R,), detached, for arms that only change which pixels are drawn (error_map)."""
    with GraphBytesMeter(field.parameters()) as meter:
        raw = field(samples.positions, samples.directions)
        clock.lap("forward")
        per_ray = pixel_loss(raw, samples, target, background)
        loss = per_ray.mean()
    loss_scale(loss).backward()
    clock.lap("backward")
    n = samples.n_samples
    return StepResult(loss.detach(), n, n, 1.0, meter.bytes, clock.seconds), per_ray.detach()


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
        result, _ = full_batch_step(field, samples, target, background, loss_scale, clock)
        return result

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

    def select(self, hardness: torch.Tensor, sums: tuple[float, float, float] | None = None) -> Selection:
        """Choose b samples with probability proportional to ``hardness`` (B,), without replacement.

        ``sums`` = (sum, sum of squares, non-zero count) of the hardness when the caller has them
        (score_samples does), else computed here; b is a tensor shape, so they reach the host in one
        copy (the step's only host sync outside ray marching). All-zero hardness selects nothing. When
        at most b samples have non-zero hardness (e.g. most rays terminated early), all of them are
        taken: the rest carry no gradient. Otherwise the draw is torch.multinomial's algorithm without
        replacement, exponential keys q ~ Exp(1) and the b largest g / q (successive draws proportional
        to g, Efraimidis & Spirakis 2006), with q = -log(u) from uniform draws (a third of the cost of
        ``exponential_``, same distribution; a test compares inclusion frequencies with
        torch.multinomial's). The set comes in ascending order and costs O(B).
        """
        empty = Selection(hardness.new_zeros(0, dtype=torch.long), None)
        if hardness.numel() == 0:
            return empty
        total, sum_sq, n_nonzero = hardness_sums(hardness) if sums is None else sums
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
        u = torch.empty_like(g).uniform_(generator=self.generator)  # [0, 1): -log(u) > 0, inf for u = 0
        keys = g / u.log_().neg_()
        return Selection(top_indices(keys, b), None)

    # -- the step -------------------------------------------------------------------------------
    def backward(self, field, samples, target, background, loss_scale: LossScale = unscaled) -> StepResult:
        clock = PhaseClock(self.profile, target.device)
        with torch.no_grad():
            raw, features = first_pass(field, samples.positions, samples.directions)
        clock.lap("forward_all")
        with GraphBytesMeter(field.parameters()) as render_meter:  # 0 for the fused CPU scoring: no graph
            scores = score_samples(raw, samples, target, background)
        clock.lap("score")
        loss, grad_raw = scores.loss, scores.grad_raw
        chosen = self.select(scores.hardness, scores.sums)
        n, n_hard = samples.n_samples, int(chosen.index.numel())
        if n_hard == 0:
            clock.lap("select")
            return StepResult(loss, n, 0, self.tau_ema, render_meter.bytes, clock.seconds)
        grad_out = grad_raw.index_select(0, chosen.index)
        if chosen.scale is not None:
            grad_out = grad_out * chosen.scale[:, None]
        positions, directions = samples.subset(chosen.index)
        clock.lap("select")
        with GraphBytesMeter(field.parameters()) as net_meter:
            if features is None:
                raw_hard = field(positions, directions)
            else:  # the first pass's encoding of these samples, exact: only the MLPs run again
                raw_hard = field(positions, directions, features=features.index_select(0, chosen.index))
        clock.lap("forward_hard")
        loss_scale(raw_hard).backward(grad_out)  # the authors' scaler.scale(output).backward(gradient)
        clock.lap("backward")
        graph_bytes = max(render_meter.bytes, net_meter.bytes)
        return StepResult(loss, n, n_hard, self.tau_ema, graph_bytes, clock.seconds)

    def state_dict(self) -> dict:
        return {"tau_ema": self.tau_ema}

    def load_state_dict(self, state: dict) -> None:
        self.tau_ema = float(state["tau_ema"])
