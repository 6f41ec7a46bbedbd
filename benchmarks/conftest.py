"""Shared fixtures for the pytest-benchmark suites (run: see benchmarks/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import bench


@pytest.fixture(scope="session")
def scene_dir(tmp_path_factory) -> Path:
    return bench.procedural_scene_dir(tmp_path_factory.mktemp("bench"))


def record_throughput(benchmark, n_samples: int) -> None:
    """Attach samples per second (from the median round) to the benchmark's report."""
    stats = benchmark.stats.stats
    benchmark.extra_info["samples"] = n_samples
    benchmark.extra_info["samples_per_s"] = round(n_samples / stats.median)
