"""Atomic writes (a reader, or a crash, never sees a half-written results file) and run-folder guards."""

from __future__ import annotations

import csv
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ngp_ohem.errors import RunFolderError

if TYPE_CHECKING:
    import torch

LOCK_NAME = ".ngp-ohem.lock"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # read once: os.umask can only be read by setting it


class FolderLock:
    """An exclusive ``flock`` on a run folder's lock file; the kernel drops it when the process dies."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def check_writable_folder(path: str | Path) -> Path:
    """Create ``path`` if needed and prove it writable, with a one-line error otherwise (before any work)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"--out {folder} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise RunFolderError(f"cannot write into --out {folder}: {err.strerror or err}") from None
    return folder


def lock_run_folder(path: str | Path) -> FolderLock:
    """Take the folder's lock, or fail naming the process that holds it (two runs must not share a folder)."""
    lock_path = Path(path) / LOCK_NAME
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666 & ~UMASK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if not isinstance(err, BlockingIOError):
            raise RunFolderError(f"cannot lock {lock_path}: {err.strerror or err}") from None
        raise RunFolderError(
            f"{path} is in use by another ngp-ohem run (pid {holder}); wait for it or use another --out"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return FolderLock(fd)


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
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp creates 0600; results are shared like any other file
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RunFolderError(
                f"disk full (or quota exceeded) while writing {path}; free some space and rerun to resume"
            ) from None
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
    import torch  # here, not at the top: the report writes files through this module without torch

    atomic_write(path, lambda fh: torch.save(obj, fh), binary=True)


def save_png(path: str | Path, image: torch.Tensor) -> None:
    """Save an (H, W, 3) float image in [0, 1] as an 8-bit PNG, atomically."""
    import torch
    from PIL import Image

    array = (image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
    atomic_write(path, lambda fh: Image.fromarray(array).save(fh, format="PNG"), binary=True)
