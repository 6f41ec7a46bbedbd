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


def step_trainer(
    scene_dir: Path, method: str, n_samples: int, seed: int = 0, out: Path | None = None, profile: bool = False
) -> Trainer:
    """A trainer whose steps process about ``n_samples`` packed samples (CPU preset otherwise)."""
    cfg = build_config(
        "cpu",
        {
            "method": method,
            "seed": seed,
            "device": "cpu",
            "budget_s": 1e9,
            "profile": profile,
            "render": {"target_samples": n_samples, "initial_rays": max(64, n_samples // 64)},
        },
    )
    trainer = Trainer(cfg, load_scene(scene_dir), out or scene_dir.parent / f"run-{method}", progress=False)
    trainer.phase_totals = {}
    return trainer


def steady_state_trainer(scene_dir: Path, method: str, n_samples: int, seed: int = 0, profile: bool = False) -> Trainer:
    """A trainer past the occupancy-grid warm-up, whose grid updates every 16 steps as in a long run.

    Only the step counter is advanced (the model is fresh): what is timed is the steady-state mix of
    plain steps and amortised grid updates, not the all-cell warm-up updates of the first steps.
    """
    trainer = step_trainer(scene_dir, method, n_samples, seed, profile=profile)
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


def phase_split(scene_dir: Path, n_samples: int, steps: int = 32) -> dict[str, dict[str, float]]:
    """Milliseconds per steady-state step spent in each phase, per method (profiling on).

    Both methods run the same number of steps, alternating, after the same warm-up; "other" is the
    step time no phase claims (Python glue, bookkeeping). Answers "which parts of a mined step cost
    what" for the notes and benchmarks/README.md.
    """
    from ngp_ohem.train import WindowStats

    trainers = {m: steady_state_trainer(scene_dir, m, n_samples, profile=True) for m in ("baseline", "hsm")}
    for trainer in trainers.values():
        warm_up(trainer, 32)
        trainer.window = WindowStats()
    totals = {m: 0.0 for m in trainers}
    for _ in range(steps):
        for method, trainer in trainers.items():
            start = time.perf_counter()
            trainer.train_step()
            totals[method] += time.perf_counter() - start
    split = {}
    for method, trainer in trainers.items():
        ms = {k: 1e3 * v / steps for k, v in trainer.window.phases.items()}
        ms["other"] = 1e3 * totals[method] / steps - sum(ms.values())
        ms["total"] = 1e3 * totals[method] / steps
        ms["hard_fraction"] = trainer.window.hard / max(trainer.window.samples, 1)
        split[method] = ms
    return split


def format_phase_split(split: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per phase, one column per method."""
    order = ["sample_and_march", "forward", "forward_all", "select", "forward_hard", "backward", "optimizer"]
    order += ["grid_update", "other", "total"]
    lines = ["| phase (ms per step) | " + " | ".join(split) + " |", "|---|" + "---:|" * len(split)]
    for phase in order:
        cells = [f"{split[m][phase]:.1f}" if phase in split[m] else "—" for m in split]
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines.append("| b/B | " + " | ".join(f"{split[m]['hard_fraction']:.2f}" for m in split) + " |")
    return "\n".join(lines)


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

    parser = argparse.ArgumentParser(
        description="Speed/memory measurements on a procedural scene: write the regression reference values "
        "(on purpose), or print where a baseline and a mined step spend their time."
    )
    task = parser.add_mutually_exclusive_group(required=True)
    task.add_argument("--write-reference", help="JSON file to write, e.g. tests/reference/regression.json")
    task.add_argument(
        "--phases", type=int, metavar="LOG2_SAMPLES", help="print the per-phase step time at 2^LOG2_SAMPLES samples"
    )
    args = parser.parse_args()
    if args.phases is not None:
        with tempfile.TemporaryDirectory() as tmp:
            split = phase_split(procedural_scene_dir(Path(tmp)), 1 << args.phases)
        print(f"steady-state step at 2^{args.phases} samples, {torch.get_num_threads()} threads:")
        print(format_phase_split(split))
        return
    with tempfile.TemporaryDirectory() as tmp:
        ref = measure_reference(Path(tmp))
    Path(args.write_reference).parent.mkdir(parents=True, exist_ok=True)
    Path(args.write_reference).write_text(json.dumps(ref, indent=2) + "\n")
    print(json.dumps(ref, indent=2))


if __name__ == "__main__":
    main()
