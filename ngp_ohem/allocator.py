"""glibc malloc settings for a training process: freed blocks stay in the heap for the next step.

Why: a training step allocates the same large buffers every step (activations saved for backward,
their gradients: 8-16 MiB each at 2^16 samples) and frees them at its end. glibc serves blocks of 128 KiB
and more (a threshold it raises only up to a point) with a fresh ``mmap`` and returns them with ``munmap``,
and trims the top of its heap once 128 KiB of it is free, so every step page-faults its buffers in again,
which on a VM is expensive and noisy. Measured on a 2-core Zen 5 VM, procedural scene at 2^16 samples,
steady state (``benchmarks/adhoc/step_ratio.py``, the same settings through glibc's environment variables):
baseline step 73-88 -> 44-51 ms, mined step 46-50 -> 34-37 ms; the graph forward of the field alone
22-40 -> 14-17 ms (benchmarks/README.md, "Page faults"). Blocks up to 32 MiB (glibc's largest threshold)
now come from the heap, and the heap is trimmed only when 1 GiB of it is free. Both arms get it (the
trainer sets it), as does every benchmark (benchmarks/bench.py). PyTorch's CPU performance guide
recommends jemalloc or tcmalloc for the same reason; these two settings need no extra library.
"""

from __future__ import annotations

import ctypes
import sys
from functools import cache

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD_BYTES = 1 << 30


@cache
def keep_freed_memory() -> str:
    """Apply the settings once per process; returns what was done, for the run's provenance."""
    if not sys.platform.startswith("linux"):
        return f"unchanged ({sys.platform})"
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return "unchanged (no glibc mallopt)"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)):
        return "unchanged (mallopt refused)"
    mib, gib = MMAP_THRESHOLD_BYTES >> 20, TRIM_THRESHOLD_BYTES >> 30
    return f"glibc: blocks up to {mib} MiB from the heap, trimmed above {gib} GiB"
