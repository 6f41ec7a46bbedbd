"""Atomic writes: a reader (or a crash) never sees a half-written results file."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import torch


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], binary: bool = False) -> None:
    """Write via ``write(file)`` to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", newline=None if binary else "") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    atomic_write(path, lambda fh: json.dump(data, fh, indent=2, sort_keys=True, default=str))


def write_csv(path: str | Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    def write(fh: IO[str]) -> None:
        writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(path, write)


def save_torch(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda fh: torch.save(obj, fh), binary=True)


def save_png(path: str | Path, image: torch.Tensor) -> None:
    """Save an (H, W, 3) float image in [0, 1] as an 8-bit PNG, atomically."""
    from PIL import Image

    array = (image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
    atomic_write(path, lambda fh: Image.fromarray(array).save(fh, format="PNG"), binary=True)
