"""Mined / baseline step time at 2^14 and 2^16 samples in steady state, alternated, 2 threads.

Procedural Blender scene, ``cpu`` preset. Run alone, from outside the repository, for any tree:
``cd /tmp && PYTHONPATH=<tree> <repo>/.venv/bin/python step_ratio.py``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

try:  # trees before issue 14 kept the benchmark helpers in the package
    from ngp_ohem import bench
except ImportError:
    from benchmarks import bench

torch.set_num_threads(2)
scene = bench.procedural_scene_dir(Path(tempfile.mkdtemp()))
for n in (1 << 14, 1 << 16):
    trainers = {m: bench.steady_state_trainer(scene, m, n) for m in ("baseline", "hsm")}
    for trainer in trainers.values():
        bench.warm_up(trainer, 32)
    times: dict[str, list[float]] = {m: [] for m in trainers}
    for _ in range(16):
        for method, trainer in trainers.items():
            start = time.perf_counter()
            trainer.train_step()
            times[method].append(time.perf_counter() - start)
    med = {m: statistics.median(v) for m, v in times.items()}
    mined = trainers["hsm"]
    window = mined.trace.window if hasattr(mined, "trace") else mined.window
    print(
        f"n={n}: baseline {med['baseline'] * 1e3:.1f} ms, hsm {med['hsm'] * 1e3:.1f} ms, "
        f"ratio {med['hsm'] / med['baseline']:.3f}, b/B {window.hard / max(window.samples, 1):.2f}"
    )
