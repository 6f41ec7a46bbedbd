"""Image quality metrics, computed on sRGB images in [0, 1] of shape (H, W, 3).

* PSNR = -10 log10(MSE) per image; a split's PSNR is the mean of its per-image PSNRs (the NeRF
  convention, not the PSNR of the pooled MSE).
* SSIM from torchmetrics (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data range 1) — the
  same constants as ``tf.image.ssim`` used by the original NeRF evaluation.
* LPIPS (VGG, as NeRF / nerfbaselines) only when the ``lpips`` package and the VGG weights are on
  this machine already; otherwise it is skipped with a note (no download at run time).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = float(torch.mean((pred.float() - target.float()) ** 2))
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    from torchmetrics.functional.image import structural_similarity_index_measure

    p = pred.float().permute(2, 0, 1)[None].clamp(0, 1).cpu()
    t = target.float().permute(2, 0, 1)[None].cpu()
    return float(structural_similarity_index_measure(p, t, data_range=1.0))


def lpips_unavailable_reason() -> str | None:
    """None when LPIPS(VGG) can run offline, else why not."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return "the lpips package is not installed"
    weights = Path(torch.hub.get_dir()) / "checkpoints" / "vgg16-397923af.pth"
    if not weights.exists():
        return f"VGG weights not found at {weights} (no downloads at run time)"
    return None
