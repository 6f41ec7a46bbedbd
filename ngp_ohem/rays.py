"""Pixels to rays: camera-space directions, world-space origins and unit directions."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ngp_ohem.data.scene import Intrinsics, Split


def pixel_rays(
    poses: torch.Tensor, intrinsics: Intrinsics, px: torch.Tensor, py: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel centres (px + 0.5, py + 0.5) of cameras ``poses`` (R, 4, 4).

    Returns origins (R, 3) and unit directions (R, 3) in world space, OpenGL camera convention
    (camera looks along -z, +y up, image rows grow downwards).
    """
    k = intrinsics
    dirs_cam = torch.stack(
        [
            (px.to(poses.dtype) + 0.5 - k.cx) / k.fx,
            -(py.to(poses.dtype) + 0.5 - k.cy) / k.fy,
            -torch.ones_like(px, dtype=poses.dtype),
        ],
        dim=-1,
    )
    dirs = torch.einsum("rij,rj->ri", poses[:, :3, :3], dirs_cam)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return poses[:, :3, 3].expand_as(dirs).contiguous(), dirs


class RaySampler:
    """Draws random training pixels: uniformly over all pixels of all training images, or where a
    pixel-level strategy says (``draw``, see ngp_ohem/strategies)."""

    def __init__(self, split: Split, device: torch.device, generator: torch.Generator) -> None:
        self.split = split
        self.images = split.images.to(device)
        self.poses = split.poses.to(device)
        self.generator = generator
        n, h, w = self.images.shape[:3]
        self.n_pixels = n * h * w
        self.width, self.height = w, h

    def sample(
        self, n_rays: int, draw: Callable[[RaySampler, int], torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Origins, directions, pixel values (RGB or RGBA) and image indices of ``n_rays`` random pixels;
        ``draw(self, n_rays)``: flat pixel indices chosen by a strategy (hook of issue 15)."""
        if draw is not None:
            flat = draw(self, n_rays)
        else:
            flat = torch.randint(0, self.n_pixels, (n_rays,), device=self.images.device, generator=self.generator)
        img = flat // (self.width * self.height)
        rem = flat % (self.width * self.height)
        py, px = rem // self.width, rem % self.width
        origins, dirs = pixel_rays(self.poses[img], self.split.intrinsics, px, py)
        return origins, dirs, self.images[img, py, px], img


def image_rays(pose: torch.Tensor, intrinsics: Intrinsics) -> tuple[torch.Tensor, torch.Tensor]:
    """All rays of one image in row-major pixel order, for evaluation renders."""
    ys, xs = torch.meshgrid(
        torch.arange(intrinsics.height, device=pose.device),
        torch.arange(intrinsics.width, device=pose.device),
        indexing="ij",
    )
    px, py = xs.reshape(-1), ys.reshape(-1)
    return pixel_rays(pose[None].expand(px.shape[0], 4, 4), intrinsics, px, py)
