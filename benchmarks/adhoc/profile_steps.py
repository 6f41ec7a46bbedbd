"""torch.profiler table of ten real-lego training steps after a warm-up, one arm, 2 threads.

Run alone, from outside the repository: ``cd /tmp && PYTHONPATH=<tree> <repo>/.venv/bin/python
profile_steps.py hsm 500`` (arm, warm-up steps). Ops are grouped by input shape, so a call that is slow
only at some shapes (a kernel compiled per shape) shows up as such.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from benchmarks import bench

REPO = Path(__file__).resolve().parents[2]
torch.set_num_threads(2)
method, warm = sys.argv[1], int(sys.argv[2])
trainer = bench.step_trainer(
    REPO.parent / "shared/data/nerf_synthetic/lego", method, 1 << 16, out=Path(f"/tmp/profile-steps-{method}")
)
for _ in range(warm):
    trainer.train_step()
with torch.profiler.profile(record_shapes=True) as prof:
    start = time.perf_counter()
    for _ in range(10):
        trainer.train_step()
    print(f"{method}: {(time.perf_counter() - start) * 100:.1f} ms/step under the profiler")
print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=30))
