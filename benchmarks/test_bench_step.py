"""Whole training-step throughput (marching, field, compositing, backward, Adam, grid updates)."""

from __future__ import annotations

import statistics
import time

import pytest

from benchmarks import bench
from benchmarks.conftest import record_throughput

SIZES = [1 << 14, 1 << 16, 1 << 18]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("method", ["baseline", "hsm"])
def test_training_step(benchmark, scene_dir, method, n):
    trainer = bench.steady_state_trainer(scene_dir, method, n)
    bench.warm_up(trainer, 32 if n <= 1 << 16 else 8)
    rounds = 16 if n <= 1 << 16 else 4
    benchmark.pedantic(trainer.train_step, rounds=rounds, warmup_rounds=1)
    record_throughput(benchmark, trainer.trace.window.samples // max(trainer.trace.window.steps, 1))
    benchmark.extra_info["hard_fraction"] = round(trainer.trace.window.hard / max(trainer.trace.window.samples, 1), 3)


def test_mined_and_baseline_step_pair(benchmark, scene_dir):
    """One mined and one baseline step at 2^16, alternated in one process; the timed unit is the pair.

    The ratios (mined/baseline step time from the per-method medians of the same rounds, and
    mined/baseline autograd graph bytes) go to ``extra_info``: they are what issue 3 reports.
    """
    n = 1 << 16
    trainers = {m: bench.steady_state_trainer(scene_dir, m, n) for m in ("baseline", "hsm")}
    for trainer in trainers.values():
        bench.warm_up(trainer, 32)
    times: dict[str, list[float]] = {m: [] for m in trainers}

    def pair() -> None:
        for method, trainer in trainers.items():
            start = time.perf_counter()
            trainer.train_step()
            times[method].append(time.perf_counter() - start)

    benchmark.pedantic(pair, rounds=12, warmup_rounds=1)
    medians = {m: statistics.median(ts[1:]) for m, ts in times.items()}
    graph = {m: t.trace.window.graph_bytes for m, t in trainers.items()}  # max over the steps since the last record
    benchmark.extra_info["time_ratio_hsm_over_baseline"] = round(medians["hsm"] / medians["baseline"], 3)
    benchmark.extra_info["graph_bytes_ratio_hsm_over_baseline"] = round(graph["hsm"] / graph["baseline"], 3)
    mined = trainers["hsm"].trace.window
    benchmark.extra_info["hard_fraction"] = round(mined.hard / max(mined.samples, 1), 3)
    print(
        f"\nmined/baseline @2^16: step time {benchmark.extra_info['time_ratio_hsm_over_baseline']}, "
        f"graph bytes {benchmark.extra_info['graph_bytes_ratio_hsm_over_baseline']}"
    )
