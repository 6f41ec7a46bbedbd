"""The thread governor: as many threads as free cores while other processes hold some."""

from __future__ import annotations

import dataclasses

import torch

from ngp_ohem.clock import CpuWindow
from ngp_ohem.threads import CHECK_EVERY_S, ThreadGovernor


def advance(total: CpuWindow, wall: float, others_cores: float) -> CpuWindow:
    """The meter's total after ``wall`` more seconds during which others used ``others_cores`` cores."""
    return dataclasses.replace(
        total,
        wall=total.wall + wall,
        measured_wall=total.measured_wall + wall,
        others=total.others + others_cores * wall,
    )


def test_governor_drops_to_free_cores_and_returns() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        gov = ThreadGovernor(threads=2, n_cpus=2)
        total = CpuWindow()
        gov.check(total)  # first look: only starts the window
        total = advance(total, 2 * CHECK_EVERY_S, others_cores=0.02)
        gov.check(total)
        assert gov.current == 2 and torch.get_num_threads() == 2 and gov.reductions == 0
        total = advance(total, 2 * CHECK_EVERY_S, others_cores=0.9)  # a busy loop on one core
        gov.check(total)
        assert gov.current == 1 and torch.get_num_threads() == 1 and gov.reductions == 1
        total = advance(total, 0.5 * CHECK_EVERY_S, others_cores=0.0)
        gov.check(total)  # too short a window to decide
        assert gov.current == 1
        total = advance(total, 2 * CHECK_EVERY_S, others_cores=0.0)
        gov.check(total)  # the busy loop left
        assert gov.current == 2 and torch.get_num_threads() == 2
        assert gov.reduced_seconds == 2.5 * CHECK_EVERY_S  # the windows that ran on one thread
        assert gov.report() == {"threads": 2, "thread_reductions": 1, "reduced_thread_seconds": 2.5}
    finally:
        torch.set_num_threads(before)


def test_governor_never_below_one_or_above_configured() -> None:
    gov = ThreadGovernor(threads=2, n_cpus=4)
    window = CpuWindow(wall=1.0, measured_wall=1.0, others=8.0)  # more than every core: still one thread
    assert gov.target(window) == 1
    assert gov.target(CpuWindow(wall=1.0, measured_wall=1.0, others=0.0)) == 2  # 4 free cores, 2 configured
    assert gov.target(CpuWindow(wall=1.0, measured_wall=0.0)) == gov.current  # unmeasured: no change
    steal = CpuWindow(wall=1.0, measured_wall=1.0, steal=3.2)
    assert gov.target(steal) == 1  # the hypervisor's steal counts as taken


def test_governor_state_survives_a_resume() -> None:
    gov = ThreadGovernor(threads=2, n_cpus=2, reductions=3, reduced_seconds=12.5)
    other = ThreadGovernor(threads=2, n_cpus=2)
    other.load_state_dict(gov.state_dict())
    assert other.report() == gov.report()
