"""Loads the fused C++ hash-grid kernels (``csrc/hashgrid_cpu.cpp``), compiling them on first use.

The extension is built by ``torch.utils.cpp_extension.load`` into torch's extension cache (needs a
C++ compiler and the Python headers; ~1 minute once per machine and torch version). When that is
impossible the encoding falls back to the pure-PyTorch implementation with a warning, so nothing
breaks, it is only slower. Set ``NGP_OHEM_NATIVE=0`` to force the pure-PyTorch path.

torch serialises builds with a ``lock`` file in the build folder and waits forever while it exists;
a process killed while holding it (SIGKILL, or SIGTERM at start-up, e.g. a preempted SLURM job)
would make every later run hang silently. So we wait for the lock ourselves and remove it, with a
warning, once it is older than any real build (:data:`STALE_LOCK_S`).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).parent / "csrc" / "hashgrid_cpu.cpp"
NAME = "ngp_ohem_hashgrid_cpu"
STALE_LOCK_S = 300.0  # a build takes about a minute; a lock this old belongs to a killed process


def build_directory() -> Path:
    """Our folder in torch's extension cache (honours TORCH_EXTENSIONS_DIR), per Python and torch."""
    import torch
    from torch.utils.cpp_extension import get_default_build_root

    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    tag = f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}".replace("+", "-")
    path = root / f"{NAME}-{tag}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def clear_stale_lock(
    directory: Path,
    stale_s: float = STALE_LOCK_S,
    poll_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], float] = time.time,
) -> None:
    """Wait while another process builds; remove its lock once it is older than ``stale_s``."""
    lock = directory / "lock"
    while True:
        try:
            age = now() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age > stale_s:
            warnings.warn(
                f"removing a stale build lock {lock} ({age:.0f} s old: its process was killed mid-build)",
                stacklevel=2,
            )
            lock.unlink(missing_ok=True)
            return
        sleep(poll_s)


@cache
def load_native() -> ModuleType | None:
    """The compiled module, or None when disabled or unbuildable."""
    if os.environ.get("NGP_OHEM_NATIVE", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load

        directory = build_directory()
        clear_stale_lock(directory)
        return load(
            name=NAME,
            sources=[str(SOURCE)],
            build_directory=str(directory),
            extra_cflags=["-O3", "-fopenmp", "-ffp-contract=off"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as exc:
        warnings.warn(
            f"could not build the fused C++ hash-grid kernels ({type(exc).__name__}: {str(exc)[:200]}); "
            "using the much slower pure-PyTorch encoding. Install a C++ compiler and python3-dev to fix.",
            stacklevel=2,
        )
        return None
