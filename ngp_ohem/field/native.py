"""Loads the fused C++ CPU kernels, compiling them on first use for the CPU they run on (AVX-512 where
present): the hash-grid encoding with its table gradient (``csrc/hashgrid_cpu.cpp``), the whole
field's no-graph evaluation (``csrc/field_infer_cpu.cpp``) and ray marching to packed samples with
volume compositing (``csrc/render_cpu.cpp``).

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
FIELD_SOURCE = Path(__file__).parent / "csrc" / "field_infer_cpu.cpp"
FIELD_NAME = "ngp_ohem_field_cpu"
RENDER_SOURCE = Path(__file__).parent / "csrc" / "render_cpu.cpp"
RENDER_NAME = "ngp_ohem_render_cpu"
STALE_LOCK_S = 300.0  # a build takes about a minute; a lock this old belongs to a killed process


def cpu_flags_tag() -> str:
    """A short hash of this CPU's instruction-set flags: a -march=native build must not be reused on a
    machine with fewer (a shared home on a heterogeneous cluster would otherwise SIGILL)."""
    import hashlib

    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


def build_directory(name: str = NAME, per_cpu: bool = False) -> Path:
    """Our folder in torch's extension cache (honours TORCH_EXTENSIONS_DIR), per Python and torch."""
    import torch
    from torch.utils.cpp_extension import get_default_build_root

    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    tag = f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}".replace("+", "-")
    if per_cpu:
        tag += f"-cpu{cpu_flags_tag()}"
    path = root / f"{name}-{tag}"
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


def headers_tag() -> str:
    """A hash of the shared headers in csrc/: torch's JIT build hashes the sources and flags but not the
    headers they include, so the tag goes into the flags to rebuild when a header changes."""
    import hashlib

    digest = hashlib.sha1()
    for header in sorted(SOURCE.parent.glob("*.h")):
        digest.update(header.read_bytes())
    return digest.hexdigest()[:12]


def _build(name: str, source: Path, cflags: list[str], per_cpu: bool, what: str) -> ModuleType | None:
    if os.environ.get("NGP_OHEM_NATIVE", "1") == "0":
        return None
    cflags = [*cflags, f"-DNGP_OHEM_HEADERS={headers_tag()}"]
    try:
        from torch.utils.cpp_extension import load

        directory = build_directory(name, per_cpu)
        clear_stale_lock(directory)
        return load(
            name=name,
            sources=[str(source)],
            build_directory=str(directory),
            extra_cflags=cflags,
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as exc:
        warnings.warn(
            f"could not build the fused C++ {what} ({type(exc).__name__}: {str(exc)[:200]}); "
            "using the much slower pure-PyTorch path. Install a C++ compiler and python3-dev to fix.",
            stacklevel=3,
        )
        return None


# Every kernel is built for the CPU it runs on (-march=native; the build folder carries the CPU's flags):
# the hash-grid forward and table gradient ran 1.42x / 1.36x faster than a baseline-x86-64 build at
# 2^16 samples, with bit-identical outputs (benchmarks/README.md). No FMA contraction and no fast math:
# the encoder's corners and the marching must match the references bit for bit.
EXACT_FLAGS = ["-O3", "-fopenmp", "-march=native", "-ffp-contract=off"]


@cache
def load_native() -> ModuleType | None:
    """The compiled hash-grid module, or None when disabled or unbuildable."""
    return _build(NAME, SOURCE, EXACT_FLAGS, True, "hash-grid kernels")


@cache
def load_render_native() -> ModuleType | None:
    """The compiled marching and compositing module (bit-identical marching to the reference), or None."""
    return _build(RENDER_NAME, RENDER_SOURCE, EXACT_FLAGS, True, "rendering kernels")


@cache
def load_field_native() -> ModuleType | None:
    """The compiled fused field-inference module (built with -march=native), or None."""
    flags = [*EXACT_FLAGS, "-fno-math-errno"]
    return _build(FIELD_NAME, FIELD_SOURCE, flags, True, "field-inference kernel")
