"""Speed in machine-independent units: each unit's cost in yardsticks (``bench.Yardstick``, timed in
alternation with it) must stay within ``bench.YARDSTICK_MARGIN`` of the stored cost.

This is the speed check that catches a step doing its work twice even when the shared machine runs
1.4-2x slower than when the stored pytest-benchmark baseline was recorded (the absolute comparison
in CI keeps only a generous backstop for that reason). Refresh the stored costs on purpose with
``python -m benchmarks.bench --write-yardstick-costs benchmarks/baseline/yardstick.json``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks import bench

FLAGS = bench.this_cpu_vector_flags()
STORED = bench.stored_yardstick_costs(FLAGS)
CASES = sorted(bench.yardstick_cases(Path("unused-until-built")))  # the builders are lazy


@pytest.mark.parametrize("case", CASES)
def test_cost_in_yardsticks_does_not_grow(benchmark, scene_dir, case):
    if STORED is None:
        pytest.skip(
            f"no yardstick costs stored for a CPU with {'+'.join(FLAGS) or 'no vector flags'}; record them with "
            "python -m benchmarks.bench --write-yardstick-costs benchmarks/baseline/yardstick.json"
        )
    threads, costs = STORED
    if threads != torch.get_num_threads():
        pytest.skip(f"stored costs are for {threads} threads, this run has {torch.get_num_threads()}")
    unit = bench.yardstick_cases(scene_dir)[case]()
    cost = bench.cost_in_yardsticks(unit)
    benchmark.pedantic(unit, rounds=3)
    bound = costs[case] * bench.YARDSTICK_MARGIN
    benchmark.extra_info.update({"yardsticks": round(cost, 4), "stored": costs[case], "bound": bound})
    print(f"\n{case}: {cost:.3f} yardsticks (stored {costs[case]}, bound {bound:.3f})")
    assert cost <= bound, f"{case} costs {cost:.3f} yardsticks, over the bound {bound:.3f} (stored x margin)"
