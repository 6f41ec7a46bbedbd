"""glibc malloc settings for a training process: freed blocks stay in the heap for the next step.

Why: a training step allocates the same large buffers every step (activations saved for backward,
their gradients: 8-16 MiB each at 2^16 samples) and frees them at its end. glibc serves blocks of 128 KiB
and more (a threshold it raises only up to a point) with a fresh ``mmap`` and returns them with ``munmap``,
and trims the top of its heap once 128 KiB of it is free, so every step page-faults its buffers in again,
which on a VM is expensive and noisy. Measured on a 2-core Zen 5 VM (benchmarks/README.md, "Page faults"),
with the same thresholds set through glibc's environment variables (a 16 GiB trim threshold there, 1 GiB
here): the graph forward of the field alone, median 23.0-25.5 -> 17.7 ms
(``benchmarks/adhoc/graph_forward_calls.py``, 12.4-33.5 ms call to call before); whole steps at 2^16
samples, procedural scene (``benchmarks/adhoc/step_ratio.py``), baseline 73.5-88.2 -> 43.8-51.3 ms, mined
46.4-49.9 -> 34.4-37.5; real lego (300 s, second half) baseline 74.3 -> 51.7 ms/step, mined 34.1 -> 29.8.
Blocks up to 32 MiB (glibc's largest threshold) now come from the heap, and the heap is trimmed only when
1 GiB of it is free, so a process's resident memory stays near its peak. Both arms get it (the trainer sets
it), as does every benchmark (benchmarks/bench.py). PyTorch's CPU performance guide recommends jemalloc or
tcmalloc for the same reason; these two settings need no extra library.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD_BYTES = 1 << 30


_status: str | None = None  # what keep_freed_memory did in this process (None: not called)


def keep_freed_memory() -> str:
    """Apply the settings (once per process); returns what was done, for the run's provenance."""
    global _status
    if _status is None:
        _status = _apply()
    return _status


def malloc_status() -> str:
    """What this process's malloc runs with, without changing it."""
    return _status or "glibc defaults (not set)"


def _apply() -> str:
    if not sys.platform.startswith("linux"):
        return f"unchanged ({sys.platform})"
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return "unchanged (no glibc mallopt)"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    heap = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    trim = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    mib, gib = MMAP_THRESHOLD_BYTES >> 20, TRIM_THRESHOLD_BYTES >> 30
    heap_part = f"blocks up to {mib} MiB from the heap" if heap else "mallopt refused the mmap threshold"
    trim_part = f"trimmed above {gib} GiB" if trim else "mallopt refused the trim threshold"
    return f"glibc: {heap_part}, {trim_part}"
