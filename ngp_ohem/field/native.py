"""Loads the fused C++ hash-grid kernels (``csrc/hashgrid_cpu.cpp``), compiling them on first use.

The extension is built by ``torch.utils.cpp_extension.load`` into torch's extension cache (needs a
C++ compiler and the Python headers; ~1 minute once per machine and torch version). When that is
impossible the encoding falls back to the pure-PyTorch implementation with a warning, so nothing
breaks, it is only slower. Set ``NGP_OHEM_NATIVE=0`` to force the pure-PyTorch path.
"""

from __future__ import annotations

import os
import warnings
from functools import cache
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).parent / "csrc" / "hashgrid_cpu.cpp"


@cache
def load_native() -> ModuleType | None:
    """The compiled module, or None when disabled or unbuildable."""
    if os.environ.get("NGP_OHEM_NATIVE", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load

        return load(
            name="ngp_ohem_hashgrid_cpu",
            sources=[str(SOURCE)],
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
