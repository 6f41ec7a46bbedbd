"""A clock that reports its own quality: CPU shares from /proc/stat, the contention flag, --strict-clock,
the tables' mark, and core pinning that keeps concurrent runs on disjoint cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from test_report import runs_from, synthetic_traces
from test_resume import TINY_CLI
from test_resume import scene as scene

from ngp_ohem import cli
from ngp_ohem.clock import CONTENTION_THRESHOLD, ContentionMeter, CpuWindow, is_contended, read_cpu_jiffies
from ngp_ohem.cores import physical_cores
from ngp_ohem.report.aggregate import contended_runs
from ngp_ohem.report.tables import CONTENDED_MARK, build_tables, to_markdown

HOG = "import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"


def start_hog(seconds: float, cpu: int | None = None) -> subprocess.Popen:
    """A one-thread busy loop (optionally pinned to one CPU) for ``seconds``."""
    proc = subprocess.Popen([sys.executable, "-c", HOG.format(seconds=seconds)])
    if cpu is not None:
        os.sched_setaffinity(proc.pid, {cpu})
    return proc


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_proc_stat_parsing(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  100 0 50 900 5 1 2 7 0 0\ncpu0 10 1 20 400 3 1 1 3 0 0\ncpu1 90 0 30 500 2 0 1 4 0 0\nintr 123\n"
    )
    assert read_cpu_jiffies([0], str(stat)) == (10 + 1 + 20 + 1 + 1, 3)
    assert read_cpu_jiffies([0, 1], str(stat)) == (33 + 121, 7)
    assert read_cpu_jiffies([0], str(tmp_path / "absent")) is None
    assert read_cpu_jiffies([0, 7], str(stat)) is None  # a CPU of ours missing: nothing is claimed


def test_window_figures() -> None:
    w = CpuWindow(wall=2.0, own=3.0, others=1.0, steal=0.2, measured_wall=2.0)
    assert w.figures(threads=2, n_cpus=2) == {"cpu_utilization": 0.75, "other_cpu_share": 0.25, "steal_share": 0.05}
    unknown = CpuWindow(wall=1.0, own=1.0).figures(1, 1)
    assert unknown["other_cpu_share"] is None and not is_contended(unknown)


def test_tick_noise_of_short_steps_does_not_add_up_to_contention() -> None:
    """Per-step tick rounding is signed: +1 tick and -1 tick windows cancel instead of summing."""
    total = CpuWindow()
    for i in range(100):
        total.add(CpuWindow(wall=0.003, own=0.003, others=0.007 if i % 2 else -0.007, measured_wall=0.003))
    assert total.figures(1, 1)["other_cpu_share"] == 0.0
    assert is_contended({"other_cpu_share": 0.08, "steal_share": 0.03})
    assert not is_contended({"other_cpu_share": CONTENTION_THRESHOLD, "steal_share": 0.0})


def _measure_on_one_cpu(cpu: int, hog: bool) -> float:
    """other_cpu_share seen by a meter pinned to ``cpu`` while this process spins for 1.5 s there."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    proc = start_hog(3.0, cpu) if hog else None
    try:
        time.sleep(0.3 if hog else 0.0)
        meter = ContentionMeter(cpus=[cpu])
        meter.start()
        busy(1.5)
        meter.stop()
    finally:
        os.sched_setaffinity(0, before)
        if proc is not None:
            proc.kill()
            proc.wait()
    return meter.total.figures(1, 1)["other_cpu_share"]


def test_meter_sees_a_busy_process_on_our_core() -> None:
    """A busy loop sharing our core takes about half of it; without it the share is small."""
    cpu = sorted(os.sched_getaffinity(0))[-1]
    shared = _measure_on_one_cpu(cpu, hog=True)
    alone = _measure_on_one_cpu(cpu, hog=False)
    assert 0.3 < shared < 0.7, shared
    assert alone < shared - 0.15, (alone, shared)


def run_args(scene: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(scene), "--out", str(out), "--budget", "2.0", *TINY_CLI, *extra]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs: one for the run, one shared with a hog")
def test_a_hogged_run_is_contended_and_strict_clock_fails_it(scene: Path, tmp_path: Path, capsys) -> None:
    cpus = sorted(os.sched_getaffinity(0))[:2]
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)  # the run may use two CPUs; a busy loop holds one of them
    hog = start_hog(60.0, cpus[0])
    try:
        assert cli.main(run_args(scene, tmp_path / "hogged")) == 0
        strict = tmp_path / "strict"
        assert cli.main(run_args(scene, strict, "--strict-clock")) == 2
    finally:
        hog.kill()
        hog.wait()
        os.sched_setaffinity(0, before)
    summary = json.loads((tmp_path / "hogged" / "summary.json").read_text())
    clock = summary["clock"]
    assert summary["clock_contended"] is True and clock["contended"] is True
    assert clock["other_cpu_share"] > 0.25 and clock["cpus"] == cpus and clock["threads"] == 1
    rows = pd.read_csv(tmp_path / "hogged" / "trace.csv")
    assert {"cpu_utilization", "other_cpu_share", "steal_share"} <= set(rows.columns)
    assert rows["other_cpu_share"].iloc[-1] > 0.25 and 0 < rows["cpu_utilization"].iloc[-1] <= 1.2
    err = capsys.readouterr().err
    assert "strict_clock discards the run" in err and "of cores" in err
    assert not (strict / "summary.json").exists() and not (strict / "checkpoint.pt").exists()


def test_an_unshared_clock_is_not_contended(scene: Path, tmp_path: Path, monkeypatch) -> None:
    """Idle machine (simulated: /proc/stat reports no one else busy): contended false, figures present."""
    import ngp_ohem.clock as clock

    real = clock.read_cpu_jiffies
    monkeypatch.setattr(clock, "read_cpu_jiffies", lambda cpus, path=clock.PROC_STAT: (0, 0) if real(cpus) else None)
    assert cli.main(run_args(scene, tmp_path / "run", "--strict-clock")) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["clock_contended"] is False and summary["clock"]["other_cpu_share"] == 0.0
    assert summary["clock"]["cpu_utilization"] > 0.2


def test_tables_mark_contended_runs_and_count_them() -> None:
    traces = synthetic_traces()
    runs = runs_from(traces)
    runs["clock_contended"] = (runs["scene"] == "a") & (runs["method"] == "hsm") & (runs["seed"] == 1)
    for column, value in (("other_cpu_share", 0.45), ("steal_share", 0.0), ("cpus", "0 1")):
        runs[column] = value
    tables = build_tables(runs, traces)
    for table in tables.values():
        text = to_markdown(table)
        assert f"{CONTENDED_MARK} 1 of {len(runs)} runs had a contended training clock" in table.note
        assert "a/hsm/seed 1" in table.note
        scenes = list(table.display["scene"])
        assert f"a {CONTENDED_MARK}" in scenes and "c" in scenes, scenes
        assert f"c {CONTENDED_MARK}" not in text
    assert contended_runs(runs) == ["a/hsm/seed 1 (other processes 45%, steal 0% of cores 0 1)"]
    clean = runs.assign(clock_contended=False)
    assert all(CONTENDED_MARK not in to_markdown(t) for t in build_tables(clean, traces).values())


# -- pinning ---------------------------------------------------------------------------------------------
PIN = """
import os, sys, time
from pathlib import Path
from ngp_ohem.cores import claim_cores
claim = claim_cores(int(sys.argv[1]), Path(sys.argv[2]), poll_s=0.05)
print(" ".join(map(str, sorted(os.sched_getaffinity(0)))), flush=True)
time.sleep(float(sys.argv[3]))
"""


def pinned(n: int, locks: Path, hold: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", PIN, str(n), str(locks), str(hold)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


@pytest.mark.skipif(len(physical_cores(sorted(os.sched_getaffinity(0)))) < 2, reason="needs 2 physical cores")
def test_concurrent_runs_get_disjoint_cores_and_a_third_waits(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    first, second = pinned(1, locks, 1.5), pinned(1, locks, 1.5)
    a, b = first.stdout.readline().split(), second.stdout.readline().split()
    assert len(a) == len(b) == 1 and a != b
    start = time.monotonic()
    third = pinned(0, locks, 0.0)  # wants every core: waits until both have exited
    out, err = third.communicate(timeout=30)
    assert time.monotonic() - start > 1.0
    assert "waiting for" in err and len(out.split()) == len(physical_cores(sorted(os.sched_getaffinity(0))))
    for proc in (first, second):
        proc.wait(10)


def test_asking_for_more_cores_than_exist_is_an_error(tmp_path: Path) -> None:
    proc = pinned(999, tmp_path / "locks", 0.0)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "asks for more cores than" in err
