"""Shared set-ups for the speed/memory regression checks and the pytest-benchmark suites.

Everything here builds on a procedural Blender scene, so checks run anywhere without real data,
and on the real trainer, so they measure exactly the step that training runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ngp_ohem.config import build_config
from ngp_ohem.data import load_scene
from ngp_ohem.data.procedural import make_blender_scene
from ngp_ohem.train import Trainer


def procedural_scene_dir(root: Path, seed: int = 0) -> Path:
    """A small Blender-format scene under ``root`` (written once, reused afterwards)."""
    path = root / f"bench-blender-{seed}"
    if not (path / "transforms_test.json").exists():
        make_blender_scene(path, seed=seed)
    return path


def step_trainer(scene_dir: Path, method: str, n_samples: int, seed: int = 0, out: Path | None = None) -> Trainer:
    """A trainer whose steps process about ``n_samples`` packed samples (CPU preset otherwise)."""
    cfg = build_config(
        "cpu",
        {
            "method": method,
            "seed": seed,
            "device": "cpu",
            "budget_s": 1e9,
            "render": {"target_samples": n_samples, "initial_rays": max(64, n_samples // 64)},
        },
    )
    trainer = Trainer(cfg, load_scene(scene_dir), out or scene_dir.parent / f"run-{method}", progress=False)
    trainer.phase_totals = {}
    return trainer


def steady_state_trainer(scene_dir: Path, method: str, n_samples: int, seed: int = 0) -> Trainer:
    """A trainer past the occupancy-grid warm-up, whose grid updates every 16 steps as in a long run.

    Only the step counter is advanced (the model is fresh): what is timed is the steady-state mix of
    plain steps and amortised grid updates, not the all-cell warm-up updates of the first steps.
    """
    trainer = step_trainer(scene_dir, method, n_samples, seed)
    trainer.step = 16 * 1024
    return trainer


def warm_up(trainer: Trainer, steps: int) -> None:
    """Run ``steps`` steps so that the ray count has adapted and the occupancy grid was updated."""
    for _ in range(steps):
        trainer.train_step()


def interleaved_medians(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds of each callable, timed in alternation so machine noise hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def graph_bytes_of_first_step(scene_dir: Path, method: str, n_samples: int, seed: int = 0) -> tuple[int, int, int]:
    """(graph bytes, samples B, hard samples b) of a fresh trainer's first step: exact, deterministic."""
    torch.manual_seed(seed)
    trainer = step_trainer(scene_dir, method, n_samples, seed)
    trainer.train_step()
    w = trainer.window
    return w.graph_bytes, w.samples, w.hard


# -- the regression reference ----------------------------------------------------------------------
REGRESSION_SAMPLES = 1 << 14
SPEED_ROUNDS = 15
SPEED_MARGIN = 1.35  # allowed growth of the mined/baseline step-time ratio before the check fails
QUALITY_STEPS = 150


def mined_to_baseline_time_ratio(scene_dir: Path, n_samples: int = REGRESSION_SAMPLES) -> float:
    """Median mined step time over median baseline step time, interleaved in one process."""
    trainers = {m: steady_state_trainer(scene_dir, m, n_samples) for m in ("baseline", "hsm")}
    for t in trainers.values():
        warm_up(t, 32)
    medians = interleaved_medians({m: t.train_step for m, t in trainers.items()}, SPEED_ROUNDS)
    return medians["hsm"] / medians["baseline"]


def quality_psnr(scene_dir: Path, out: Path) -> float:
    """Final PSNR of a fixed-step baseline run (deterministic on CPU for a fixed thread count)."""
    cfg = build_config(
        "cpu",
        {
            "device": "cpu",
            "budget_s": 1e9,
            "step_limit": QUALITY_STEPS,
            "render": {"target_samples": 1 << 13, "initial_rays": 256},
            "eval": {"final_views": 3},
        },
    )
    summary = Trainer(cfg, load_scene(scene_dir), out, progress=False).run()
    return float(summary["final"]["psnr"])


def measure_reference(work: Path) -> dict:
    scene = procedural_scene_dir(work)
    ref: dict = {"samples": REGRESSION_SAMPLES}
    for method in ("baseline", "hsm"):
        gb, n, b = graph_bytes_of_first_step(scene, method, REGRESSION_SAMPLES)
        ref[method] = {"graph_bytes": gb, "samples": n, "hard_samples": b}
    ref["graph_bytes_ratio"] = ref["hsm"]["graph_bytes"] / ref["baseline"]["graph_bytes"]
    ratio = mined_to_baseline_time_ratio(scene)
    ref["measured_time_ratio"] = ratio
    ref["time_ratio_bound"] = round(ratio * SPEED_MARGIN, 3)
    ref["quality_steps"] = QUALITY_STEPS
    ref["quality_psnr"] = quality_psnr(scene, work / "quality-run")
    return ref


def main() -> None:
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(description="Measure and write the regression reference values (on purpose).")
    parser.add_argument(
        "--write-reference", required=True, help="JSON file to write, e.g. tests/reference/regression.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ref = measure_reference(Path(tmp))
    Path(args.write_reference).parent.mkdir(parents=True, exist_ok=True)
    Path(args.write_reference).write_text(json.dumps(ref, indent=2) + "\n")
    print(json.dumps(ref, indent=2))


if __name__ == "__main__":
    main()
