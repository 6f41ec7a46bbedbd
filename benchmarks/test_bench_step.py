"""Whole training-step throughput (marching, field, compositing, backward, Adam, grid updates)."""

from __future__ import annotations

import pytest

from benchmarks.conftest import record_throughput
from ngp_ohem import bench

SIZES = [1 << 14, 1 << 16, 1 << 18]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("method", ["baseline", "hsm"])
def test_training_step(benchmark, scene_dir, method, n):
    trainer = bench.steady_state_trainer(scene_dir, method, n)
    bench.warm_up(trainer, 32 if n <= 1 << 16 else 8)
    rounds = 16 if n <= 1 << 16 else 4
    benchmark.pedantic(trainer.train_step, rounds=rounds, warmup_rounds=1)
    record_throughput(benchmark, trainer.window.samples // max(trainer.window.steps, 1))
    benchmark.extra_info["hard_fraction"] = round(trainer.window.hard / max(trainer.window.samples, 1), 3)


def test_mined_to_baseline_step_ratio(benchmark, scene_dir):
    """Mined vs baseline step time at 2^16, interleaved in one process (the paper reports ~0.5)."""
    ratio = bench.mined_to_baseline_time_ratio(scene_dir, 1 << 16)
    benchmark.extra_info["time_ratio_hsm_over_baseline"] = round(ratio, 3)
    benchmark.pedantic(lambda: None, rounds=1)
    print(f"\nmined/baseline step time @2^16: {ratio:.3f}")
