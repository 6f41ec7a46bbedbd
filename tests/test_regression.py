"""Regression checks on memory (exact), speed (relative, one process) and quality (fixed steps).

Reference values live in tests/reference/regression.json; refresh them on purpose with
``.venv/bin/python -m benchmarks.bench --write-reference tests/reference/regression.json`` and say why
in the commit message.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench
from ngp_ohem.names import PAPER_METHODS

REFERENCE = json.loads((Path(__file__).parent / "reference" / "regression.json").read_text())
MEMORY_TOLERANCE = 0.01  # graph bytes are exact; 1% leaves room for harmless bookkeeping tensors
QUALITY_TOLERANCE_DB = 0.5  # CPU runs are deterministic for a fixed thread count; BLAS may differ across


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    return bench.procedural_scene_dir(tmp_path_factory.mktemp("regression"))


def graph_reference() -> dict:
    """The exact graph bytes recorded for the precision mixed runs in on this CPU (bf16 saves half of fp32)."""
    label = bench.mixed_precision_label()
    by_precision = REFERENCE["graph_bytes"]
    assert label in by_precision, (
        f"no graph-bytes reference for precision {label}: record it on such a CPU with "
        "python -m benchmarks.bench --write-reference tests/reference/regression.json"
    )
    return by_precision[label]


@pytest.mark.parametrize("method", PAPER_METHODS)
def test_graph_bytes_do_not_grow(scene_dir, method):
    graph_bytes, samples, _hard = bench.graph_bytes_of_first_step(scene_dir, method, REFERENCE["samples"])
    ref = graph_reference()[method]
    assert samples == REFERENCE[method]["samples"], (
        "the step no longer sees the same samples: refresh the reference on purpose"
    )
    grew = f"{method} step graph grew: {graph_bytes} > reference {ref} bytes"
    assert graph_bytes <= ref * (1 + MEMORY_TOLERANCE), grew


def test_mined_to_baseline_graph_ratio_does_not_grow(scene_dir):
    base, _, _ = bench.graph_bytes_of_first_step(scene_dir, "baseline", REFERENCE["samples"])
    mined, _, _ = bench.graph_bytes_of_first_step(scene_dir, "hsm", REFERENCE["samples"])
    assert mined / base <= graph_reference()["ratio"] * (1 + MEMORY_TOLERANCE)


def test_mined_to_baseline_step_time_ratio(scene_dir):
    ratio = bench.mined_to_baseline_time_ratio(scene_dir)
    assert ratio <= REFERENCE["time_ratio_bound"], (
        f"mined/baseline step time ratio {ratio:.3f} exceeds the bound {REFERENCE['time_ratio_bound']}"
    )


@pytest.mark.parametrize("method", PAPER_METHODS)
def test_fixed_step_quality(scene_dir, tmp_path, method):
    psnr = bench.quality_psnr(scene_dir, tmp_path / "run", method)
    reference = REFERENCE["quality_psnr"][method]
    assert psnr >= reference - QUALITY_TOLERANCE_DB, (
        f"{method} PSNR after {REFERENCE['quality_steps']} steps fell to {psnr:.2f} dB (reference {reference:.2f})"
    )


def test_ci_compares_speed_with_the_stored_run_of_this_cpu_class(tmp_path: Path, monkeypatch) -> None:
    """The absolute backstop compares with a run from a CPU with the same vector instructions (else the first)."""
    import cpuinfo

    def stored(name: str, flags: list[str]) -> None:
        (tmp_path / name).write_text(json.dumps({"machine_info": {"cpu": {"flags": flags}}}))

    stored("0002_cpu2core-avx2.json", ["avx2", "fma", "sse4_2"])  # the stored runs as they are numbered now
    stored("0003_cpu2core.json", ["avx2", "fma", "avx512f", "avx512_bf16"])
    for flags, want in ((["avx2", "avx512f", "avx512_bf16", "aes"], "0003"), (["avx2", "aes"], "0002"),
                        (["sse2"], "0002")):  # fmt: skip
        monkeypatch.setattr(cpuinfo, "get_cpu_info", lambda flags=flags: {"flags": flags})
        assert bench.stored_run_for_this_cpu(tmp_path) == want
    assert any(bench.STORED_RUNS.glob(f"{bench.stored_run_for_this_cpu()}_*.json"))  # the real storage


def test_yardstick_costs_are_stored_and_looked_up_per_cpu_class(tmp_path: Path, monkeypatch) -> None:
    """Recording on one CPU class replaces that class's costs and keeps the others'."""
    import cpuinfo

    target = tmp_path / "yardstick.json"
    costs = iter([{"step": 1.0}, {"step": 2.0}, {"step": 3.0}])
    monkeypatch.setattr(bench, "measure_yardstick_costs", lambda scene_dir: next(costs))
    for flags in (["avx2", "avx512f", "avx512_bf16"], ["avx2", "fma"], ["avx2", "aes"]):
        monkeypatch.setattr(cpuinfo, "get_cpu_info", lambda flags=flags: {"flags": flags})
        bench.write_yardstick_costs(target, tmp_path)
    assert bench.stored_yardstick_costs(("avx2", "avx512f", "avx512_bf16"), target)[1] == {"step": 1.0}
    assert bench.stored_yardstick_costs(("avx2",), target)[1] == {"step": 3.0}  # re-recorded, not duplicated
    assert len(json.loads(target.read_text())["by_cpu"]) == 2
    assert bench.stored_yardstick_costs(("sse2",), target) is None
    assert bench.stored_yardstick_costs(("avx2", "avx512f", "avx512_bf16")) is not None  # the real storage
