"""A training process serves its large per-step buffers from the heap instead of fresh mmaps
(ngp_ohem/allocator.py), sets that before its first step, and says so in its provenance."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest
import torch

from ngp_ohem import allocator
from ngp_ohem.provenance import environment_info
from ngp_ohem.run import trainer

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
    # glibc's own defaults in the child: no MALLOC_* variables or tunables from whoever runs the tests
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.strip())


def test_large_blocks_come_from_the_heap_once_set():
    if "from the heap" not in allocator.keep_freed_memory():
        pytest.skip(f"malloc settings not applied here: {allocator.keep_freed_memory()}")
    try:
        ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018 (glibc 2.33 and newer)
    except AttributeError:
        pytest.skip("glibc older than 2.33 has no mallinfo2 to count mmapped blocks with")
    assert mmapped_blocks_for_a_16_mib_block("default") == 1  # glibc's own default: a fresh mapping
    assert mmapped_blocks_for_a_16_mib_block("keep") == 0


def test_the_trainer_sets_them_before_its_first_step_and_the_run_records_them(monkeypatch, tmp_path):
    calls = []

    def build_model(cfg, scene):  # the model comes after the settings: stop there
        calls.append("build_model")
        raise RuntimeError("stop")

    monkeypatch.setattr(trainer, "keep_freed_memory", lambda: calls.append("keep_freed_memory"))
    monkeypatch.setattr(trainer, "build_model", build_model)
    with pytest.raises(RuntimeError, match="stop"):
        trainer.Trainer(cfg=None, scene=None, out_dir=tmp_path)  # type: ignore[arg-type]
    assert calls == ["keep_freed_memory", "build_model"]
    assert environment_info(torch.device("cpu"))["malloc"] == allocator.malloc_status()
