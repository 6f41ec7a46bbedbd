"""Volume rendering of packed samples (emission-absorption, Max 1995 / NeRF quadrature).

For samples i of one ray: alpha_i = 1 - exp(-sigma_i * delta_i), transmittance
T_i = exp(-sum_{j<i} sigma_j * delta_j), weight w_i = T_i * alpha_i; colour = sum w_i c_i +
(1 - sum w_i) * background. Early ray termination: samples whose transmittance has fallen below
``t_threshold`` (1e-4, as torch-ngp) get weight 0 and therefore no gradient.

The per-ray exclusive prefix sum is computed as one global cumulative sum in float64 minus the
value at each ray's first sample; float64 keeps the difference exact for long packed batches.

On the CPU the fused kernel ``csrc/render_cpu.cpp`` does the same ray by ray, forward and backward,
and saves only its inputs for backward (the vectorised version below saves about five (N,)
intermediates); ``use_native=False`` runs the vectorised reference the tests compare it against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ngp_ohem.field.native import load_render_native


@dataclass
class Rendered:
    color: torch.Tensor  # (R, 3)
    opacity: torch.Tensor  # (R,)
    weights: torch.Tensor  # (N,)


def ray_starts(ray_index: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Index of each ray's first sample (R,), for rays that have samples (others: arbitrary)."""
    counts = torch.bincount(ray_index, minlength=n_rays)
    return counts.cumsum(0) - counts


class _NativeComposite(torch.autograd.Function):
    """Compositing through the fused kernel; saves the inputs only and recomputes in backward."""

    @staticmethod
    def forward(ctx, sigma, rgb, deltas, ray_index, n_rays, background, t_threshold, native):
        colour, opacity, weights = native.composite_forward(
            sigma, rgb, deltas, ray_index, n_rays, background, t_threshold
        )
        ctx.save_for_backward(sigma, rgb, deltas, ray_index, background)
        ctx.n_rays, ctx.t_threshold, ctx.native = n_rays, t_threshold, native
        ctx.mark_non_differentiable(weights)
        return colour, opacity, weights

    @staticmethod
    def backward(ctx, grad_colour, grad_opacity, _grad_weights):
        sigma, rgb, deltas, ray_index, background = ctx.saved_tensors
        if grad_colour is None:
            grad_colour = sigma.new_zeros(ctx.n_rays, 3)
        if grad_opacity is None:
            grad_opacity = sigma.new_zeros(ctx.n_rays)
        grad_sigma, grad_rgb = ctx.native.composite_backward(
            grad_colour.contiguous(), grad_opacity.contiguous(), sigma, rgb, deltas, ray_index, ctx.n_rays,
            background, ctx.t_threshold,
        )  # fmt: skip
        return grad_sigma, grad_rgb, None, None, None, None, None, None


def composite(
    sigma: torch.Tensor,
    rgb: torch.Tensor,
    deltas: torch.Tensor,
    ray_index: torch.Tensor,
    n_rays: int,
    background: torch.Tensor,
    t_threshold: float = 1e-4,
    use_native: bool = True,
) -> Rendered:
    """Render R rays from packed densities (N,), colours (N, 3) and step lengths (N,)."""
    native = (
        load_render_native() if use_native and sigma.device.type == "cpu" and sigma.dtype == torch.float32 else None
    )
    if native is not None:
        colour, opacity, weights = _NativeComposite.apply(
            sigma.contiguous(), rgb.contiguous(), deltas.float().contiguous(), ray_index.contiguous(), n_rays,
            background.float().expand(n_rays, 3).contiguous(), t_threshold, native,
        )  # fmt: skip
        return Rendered(colour, opacity, weights)
    tau = sigma * deltas
    if tau.numel() == 0:
        zeros = background.new_zeros(n_rays)
        return Rendered(background.clone(), zeros, tau)
    csum = torch.cumsum(tau.double(), 0)
    first = ray_starts(ray_index, n_rays)[ray_index]
    offset = csum[first] - tau[first].double()
    exclusive = (csum - tau.double() - offset).float()
    transmittance = torch.exp(-exclusive)
    alive = (transmittance > t_threshold).to(tau.dtype)
    weights = transmittance * (1.0 - torch.exp(-tau)) * alive
    color = torch.zeros(n_rays, 3, dtype=rgb.dtype, device=rgb.device).index_add(0, ray_index, weights[:, None] * rgb)
    opacity = torch.zeros(n_rays, dtype=rgb.dtype, device=rgb.device).index_add(0, ray_index, weights)
    return Rendered(color + (1.0 - opacity)[:, None] * background, opacity, weights)
