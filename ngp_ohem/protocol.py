"""The evaluation protocol, pinned in one place because protocol moves PSNR more than methods do.

Blender (NeRF-synthetic): training composites every ray's RGBA target on a fresh uniformly random
background colour (and the renderer uses the same colour), so the network cannot hide density in
the background; evaluation composites the test images on **white** (the NeRF convention, see
bmild/nerf #66) and renders with a white background. Metrics are computed on sRGB values in [0, 1].

LLFF: images have no alpha; the target is the photo itself. Training still renders with a random
background colour, which pushes every ray to full opacity inside the bounded box; evaluation renders
with white. Every 8th image (i % 8 == 0) is the test split.

LLFF framing (``data/framing.py``): bounded box [-4, 4]^3 (the paper's ``--bound 4``, no NDC, no
contraction). The capture is rotated to its average camera and scaled as large as the box allows
while every camera and every camera's frustum between its near and far depth bound (the 0.1 / 99.9
percentile depths of its sparse points, from ``poses_bounds.npy`` or from ``sparse/0``) stay inside.
Far content is therefore **kept** up to each camera's far bound and **clipped by the box** beyond it,
as the authors' sparse-point AABB clips it. Why not the authors' own framing (sparse-point centroid at
the origin, cameras within distance 1 of it): it leaves most of the box empty, which their 3-cascade
128^3 occupancy grid absorbs but our single-cascade grid cannot; holding the same points in the
largest box-filling frame gives the foreground the most grid cells. Near plane: one global near,
0.9 x the smallest near bound (the authors' LLFF script does not use per-camera near/far either).

Mip-NeRF 360 (``data/mipnerf360.py``): framed as the authors' COLMAP loader frames it (camera centroid
at the origin, mean camera up along +z, cameras in the unit ball), in the box [-bound, bound]^3 of the
run config's ``bound`` (the authors: 8 indoors, 16 outdoors; config/paper_360.yaml sets it per scene),
near 0.2, no contraction. Every 8th image in name order is the test split; no alpha, evaluation on white.

Sample spacing (cone tracing, see ``render/march.py``): constant steps on Blender (Instant-NGP's
synthetic setting, torch-ngp's ``--dt_gamma 0`` for Blender), steps growing as t * llff_cone_angle on
LLFF and Mip-NeRF 360: 1/256 in both presets (the authors' ``main.py`` default, which their
``runall_llff.sh`` and ``runall_360_ngp.sh`` keep; torch-ngp's 1/128 measured no better, ``ngp_ohem/recipe.py``).

Training background: ``render.train_background``, ``auto`` in both presets, the authors' per dataset:
``white`` on Blender and LLFF (their Blender script trains on white, and their ``last_sample`` default is
white under ``-O``, so LLFF too), ``random`` (one colour per ray) on Mip-NeRF 360 (their 360 script's
``--background random``).
"""

from __future__ import annotations

import torch

EVAL_BACKGROUND = (1.0, 1.0, 1.0)
LLFF_HOLDOUT_EVERY = 8
CONE_TRACED = ("llff", "mipnerf360")  # photographed captures; Blender keeps constant steps
RANDOM_BACKGROUND = ("mipnerf360",)  # datasets the authors train on a random background


def cone_angle(dataset: str, configured: float | str, llff: float) -> float:
    """The configured cone angle, or for ``"auto"`` the dataset's: 0 on Blender, ``llff`` on LLFF and 360."""
    if configured != "auto":
        return float(configured)
    return llff if dataset in CONE_TRACED else 0.0


def camera_near_far(configured: bool | str, dataset: str) -> bool:
    """Whether rays march only within their camera's sparse depth range: ``auto`` on Mip-NeRF 360 (the
    authors' 360 script passes ``--enable_cam_near_far``; their Blender and LLFF scripts do not)."""
    return dataset == "mipnerf360" if configured == "auto" else bool(configured)


def train_background_kind(configured: str, dataset: str) -> str:
    """``random`` or ``white``: the configured one, or for ``"auto"`` the authors' for the dataset."""
    if configured != "auto":
        return configured
    return "random" if dataset in RANDOM_BACKGROUND else "white"


def train_background(kind: str, n: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-ray training background colours (n, 3): ``random`` (a fresh colour per ray) or ``white``."""
    if kind == "white":
        return torch.ones(n, 3, device=device)
    return random_background(n, device, generator)


def random_background(n: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-ray random background colours for training, shape (n, 3)."""
    return torch.rand(n, 3, device=device, generator=generator)


def eval_background(n: int, device: torch.device) -> torch.Tensor:
    """The fixed evaluation background, shape (n, 3)."""
    return torch.tensor(EVAL_BACKGROUND, device=device).expand(n, 3)


def composite_target(pixels: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Ground-truth colour of pixels (..., 3 or 4) on a background (..., 3); RGB passes through."""
    if pixels.shape[-1] == 3:
        return pixels
    alpha = pixels[..., 3:4]
    return pixels[..., :3] * alpha + background * (1.0 - alpha)
