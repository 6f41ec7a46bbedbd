"""A training process serves its large per-step buffers from the heap instead of fresh mmaps
(ngp_ohem/allocator.py), and says so in its provenance."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ngp_ohem.allocator import keep_freed_memory
from ngp_ohem.provenance import environment_info

# In a fresh interpreter: is a 16 MiB block (an activation at 2^16 samples) served by a fresh mmap?
PROBE = """
import ctypes, sys
from ngp_ohem.allocator import keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                     "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype, libc.malloc.restype = Info, ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "keep":
    keep_freed_memory()
before = libc.mallinfo2().hblks
block = libc.malloc(16 << 20)
print(libc.mallinfo2().hblks - before)
libc.free(ctypes.c_void_p(block))
"""


def mmapped_blocks_for_a_16_mib_block(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_large_blocks_come_from_the_heap_once_set():
    if not keep_freed_memory().startswith("glibc"):
        pytest.skip(f"malloc settings not applied here: {keep_freed_memory()}")
    assert mmapped_blocks_for_a_16_mib_block("default") == 1  # glibc's own default: a fresh mapping
    assert mmapped_blocks_for_a_16_mib_block("keep") == 0


def test_the_run_records_its_malloc_settings():
    assert environment_info(torch.device("cpu"))["malloc"] == keep_freed_memory()
