"""Image reading and area downscaling shared by both loaders.

Every PIL failure (missing, truncated, not an image) becomes a DatasetError naming the file, so a
bad frame in a 300-image dataset is reported as one line instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ngp_ohem.errors import ConfigError, DatasetError


def read_image(path: Path, channels: int) -> np.ndarray:
    """Decode an image to float32 in [0, 1], shape (H, W, channels) with channels 3 (RGB) or 4 (RGBA).

    Images without alpha read as RGBA get alpha = 1; RGBA images read as RGB drop their alpha.
    """
    if channels not in (3, 4):
        raise ValueError(f"channels must be 3 or 4, got {channels}")
    if not path.is_file():
        raise DatasetError(f"missing image {path}")
    try:
        with Image.open(path) as im:
            im.load()
            pixels = np.asarray(im.convert("RGBA" if channels == 4 else "RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DatasetError(f"unreadable image {path}: {err}") from None
    return pixels.astype(np.float32) / np.float32(255.0)


def area_downscale(image: np.ndarray, factor: int, path: Path) -> np.ndarray:
    """Box-average an (H, W, C) image by an integer factor; RGBA is averaged with premultiplied alpha.

    Premultiplying makes compositing the result on a background equal to downscaling the composited
    full-resolution image (the shared data README's recipe); fully transparent blocks get RGB = 0.
    """
    if factor == 1:
        return image
    h, w, c = image.shape
    if h % factor or w % factor:
        raise DatasetError(f"image {path} is {w}x{h}, not divisible by downscale {factor}")
    img = image.astype(np.float64)
    if c == 4:
        img[..., :3] *= img[..., 3:4]
    img = img.reshape(h // factor, factor, w // factor, factor, c).mean(axis=(1, 3))
    if c == 4:
        alpha = img[..., 3:4]
        safe = np.where(alpha > 0, alpha, 1.0)
        img[..., :3] = np.where(alpha > 0, img[..., :3] / safe, 0.0)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def check_downscale(downscale: int) -> int:
    """Validate an integer downscale factor (bools and non-positive values are rejected)."""
    if isinstance(downscale, bool) or not isinstance(downscale, (int, np.integer)) or downscale < 1:
        raise ConfigError(f"downscale must be a positive integer, got {downscale!r}")
    return int(downscale)
