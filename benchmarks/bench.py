"""Shared set-ups for the speed/memory/quality regression checks and the pytest-benchmark suites.

Everything here builds on a procedural Blender scene, so checks run anywhere without real data,
and on the real trainer through its public API only (config, ``train_step``, ``state_dict``, the
trace's window), so they measure exactly the step that training runs. Run from the repository root:
``python -m benchmarks.bench --phases 16`` or ``--write-reference tests/reference/regression.json``.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ngp_ohem.allocator import keep_freed_memory
from ngp_ohem.config import build_config
from ngp_ohem.data import load_scene
from ngp_ohem.data.procedural import make_blender_scene
from ngp_ohem.field.hashgrid import HashGridEncoding, HashGridSpec
from ngp_ohem.names import PAPER_METHODS
from ngp_ohem.run.trainer import Trainer

keep_freed_memory()  # what a training process runs with (the trainer sets it too): timings of its parts match


def procedural_scene_dir(root: Path, seed: int = 0) -> Path:
    """A small Blender-format scene under ``root`` (written once, reused afterwards)."""
    path = root / f"bench-blender-{seed}"
    if not (path / "transforms_test.json").exists():
        make_blender_scene(path, seed=seed)
    return path


def ray_like_points(n: int, seed: int = 0) -> torch.Tensor:
    """n points in [0, 1]^3, 64 consecutive ones along each of n/64 random rays, as marching makes."""
    g = torch.Generator().manual_seed(seed)
    rays = n // 64
    origins = torch.rand(rays, 1, 3, generator=g)
    dirs = torch.nn.functional.normalize(torch.randn(rays, 1, 3, generator=g), dim=-1)
    t = torch.linspace(0.0, 0.5, 64)[None, :, None]
    return (origins + dirs * t).reshape(-1, 3).clamp(0, 1).contiguous()


ENCODING_SPEC = HashGridSpec(log2_table_size=17, max_resolution=3072)  # the cpu preset on a Blender scene


def encoding_forward_backward(enc: HashGridEncoding, x: torch.Tensor, grad: torch.Tensor) -> None:
    """One training-like encoding pass: a fresh gradient table, forward, backward."""
    enc.table.grad = None
    enc(x).backward(grad)


def field_workload(n: int, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The cpu preset's field on a Blender box, with n ray-like sample positions and directions."""
    from ngp_ohem.field.ngp import FieldSpec, NGPField

    torch.manual_seed(seed)
    field = NGPField(FieldSpec(ENCODING_SPEC), bound=1.5)
    x = ray_like_points(n, seed) * 3.0 - 1.5
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=torch.Generator().manual_seed(seed)), dim=-1)
    return field, x, d


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
    return Trainer(cfg, load_scene(scene_dir), out or scene_dir.parent / f"run-{method}", progress=False)


def advanced_to_step(trainer: Trainer, step: int) -> Trainer:
    """The trainer as if resumed at ``step`` with its current weights (through its checkpoint state)."""
    state = trainer.state_dict()
    state["step"] = step
    trainer.load_state_dict(state)
    return trainer


def steady_state_trainer(scene_dir: Path, method: str, n_samples: int, seed: int = 0, profile: bool = False) -> Trainer:
    """A trainer past the occupancy-grid warm-up, whose grid updates every 16 steps as in a long run.

    Only the step counter is advanced (the model is fresh): what is timed is the steady-state mix of
    plain steps and amortised grid updates, not the all-cell warm-up updates of the first steps.
    """
    return advanced_to_step(step_trainer(scene_dir, method, n_samples, seed, profile=profile), 16 * 1024)


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


def median_ms(fn: Callable[[], object], rounds: int = 21) -> float:
    """Median milliseconds of ``rounds`` calls of ``fn`` after one untimed call (kernel builds, caches)."""
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e3, 3)


def graph_bytes_of_first_step(scene_dir: Path, method: str, n_samples: int, seed: int = 0) -> tuple[int, int, int]:
    """(graph bytes, samples B, hard samples b) of a fresh trainer's first step: exact, deterministic."""
    torch.manual_seed(seed)
    trainer = step_trainer(scene_dir, method, n_samples, seed)
    trainer.train_step()
    w = trainer.trace.window
    return w.graph_bytes, w.samples, w.hard


def phase_split(scene_dir: Path, n_samples: int, steps: int = 32) -> dict[str, dict[str, float]]:
    """Milliseconds per steady-state step spent in each phase, per method (profiling on).

    Both methods run the same number of steps, alternating, after the same warm-up; "other" is the
    step time no phase claims (Python glue, bookkeeping). Answers "which parts of a mined step cost
    what" for the notes and benchmarks/README.md.
    """
    trainers = {m: steady_state_trainer(scene_dir, m, n_samples, profile=True) for m in PAPER_METHODS}
    warmed = {}
    for method, trainer in trainers.items():
        warm_up(trainer, 32)
        warmed[method] = copy.deepcopy(trainer.trace.window)
    totals = {m: 0.0 for m in trainers}
    for _ in range(steps):
        for method, trainer in trainers.items():
            start = time.perf_counter()
            trainer.train_step()
            totals[method] += time.perf_counter() - start
    split = {}
    for method, trainer in trainers.items():
        window, before = trainer.trace.window, warmed[method]
        ms = {k: 1e3 * (v - before.phases.get(k, 0.0)) / steps for k, v in window.phases.items()}
        ms["other"] = 1e3 * totals[method] / steps - sum(ms.values())
        ms["total"] = 1e3 * totals[method] / steps
        ms["hard_fraction"] = (window.hard - before.hard) / max(window.samples - before.samples, 1)
        split[method] = ms
    return split


def format_phase_split(split: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per phase, one column per method."""
    order = ["sample_and_march", "forward", "forward_all", "score", "select", "forward_hard", "backward", "optimizer"]
    order += ["grid_update", "other", "total"]
    lines = ["| phase (ms per step) | " + " | ".join(split) + " |", "|---|" + "---:|" * len(split)]
    for phase in order:
        cells = [f"{split[m][phase]:.1f}" if phase in split[m] else "—" for m in split]
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines.append("| b/B | " + " | ".join(f"{split[m]['hard_fraction']:.2f}" for m in split) + " |")
    return "\n".join(lines)


# -- costs in machine-independent units --------------------------------------------------------------
class Yardstick:
    """A fixed reference workload, the unit in which CI states speed: random gathers from a 16 MiB
    table, three 64-wide matmul layers and their backward (scatter-add) at 2^14 rows, the same mix of
    memory-latency and FLOP work as a training step.

    A shared VM here ran the same step 1.4x-2x slower from one hour to the next; a step's cost in
    yardsticks, timed in alternation, moved by about 10 % over the same period. Never change this
    workload: the stored costs (``YARDSTICK_FILE``) are in its units.
    """

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(1 << 21, 2, generator=g).requires_grad_(True)
        self.index = torch.randint(0, 1 << 21, (1 << 14, 32), generator=g)
        self.weights = [(0.1 * torch.randn(64, 64, generator=g)).requires_grad_(True) for _ in range(3)]

    def __call__(self) -> None:
        self.table.grad = None
        for w in self.weights:
            w.grad = None
        h = self.table[self.index].reshape(-1, 64)
        for w in self.weights:
            h = torch.relu(h @ w)
        h.square().mean().backward()


YARDSTICK_FILE = Path(__file__).resolve().parent / "baseline" / "yardstick.json"
YARDSTICK_MARGIN = 1.5  # a cost may grow by this factor before the check fails (doing work twice: 2x)
YARDSTICK_ROUNDS = 12


def median_round_ratio(fn: Callable[[], None], ref: Callable[[], None], rounds: int) -> float:
    """Median over rounds of (fn time / ref time), the two timed back to back, which goes first alternating.

    Per-round ratios follow the machine's speed as it drifts; their median ignores a round that a
    burst of noise hit on one side only. Where one side's own time depends on what ran before it, as the
    graph forward's did while every call faulted its buffers in (12.4-33.5 ms call to call,
    benchmarks/adhoc/graph_forward_calls.py, benchmarks/README.md "Page faults"), no ratio is robust: fix the cause.
    """

    def seconds(f: Callable[[], None]) -> float:
        start = time.perf_counter()
        f()
        return time.perf_counter() - start

    ratios = []
    for i in range(rounds):
        if i % 2:
            unit, base = seconds(fn), seconds(ref)
        else:
            base, unit = seconds(ref), seconds(fn)
        ratios.append(unit / base)
    return statistics.median(ratios)


def cost_in_yardsticks(fn: Callable[[], None], rounds: int = YARDSTICK_ROUNDS) -> float:
    """``fn``'s cost in :class:`Yardstick` units (:func:`median_round_ratio` against a fresh yardstick)."""
    yardstick = Yardstick()
    yardstick()  # first-touch allocation is not the unit
    return median_round_ratio(fn, yardstick, rounds)


def yardstick_cases(scene_dir: Path) -> dict[str, Callable[[], Callable[[], None]]]:
    """Named builders of the timed units whose yardstick costs CI checks (built lazily: each owns a
    trainer or an encoding)."""

    def encoding_unit() -> Callable[[], None]:
        torch.manual_seed(0)
        enc = HashGridEncoding(ENCODING_SPEC)
        x = ray_like_points(1 << 16)
        grad = torch.randn(1 << 16, ENCODING_SPEC.output_dim, generator=torch.Generator().manual_seed(1))
        return lambda: encoding_forward_backward(enc, x, grad)

    def step(method: str) -> Callable[[], Callable[[], None]]:
        def build() -> Callable[[], None]:
            trainer = steady_state_trainer(scene_dir, method, 1 << 16)
            warm_up(trainer, 32)
            return trainer.train_step

        return build

    return {
        "encoding_forward_backward_65536": encoding_unit,
        "baseline_step_65536": step("baseline"),
        "hsm_step_65536": step("hsm"),
    }


YARDSTICK_RECORDS = 5  # passes whose per-case median is stored


def measure_yardstick_costs(scene_dir: Path, passes: int = YARDSTICK_RECORDS) -> dict[str, float]:
    """Each case's cost, the median of ``passes`` measurements. Why: on the 2-core Zen 3 the baseline step
    measured from 1.41 to 2.19 yardsticks in passes minutes apart (same tree); a cost stored
    from one low pass makes the 1.5x check fail on an unchanged tree."""
    cases = yardstick_cases(scene_dir)
    return {
        name: round(statistics.median(cost_in_yardsticks(build()) for _ in range(passes)), 4)
        for name, build in cases.items()
    }


def this_cpu_vector_flags() -> tuple[str, ...]:
    import cpuinfo

    return cpu_vector_flags(cpuinfo.get_cpu_info().get("flags", []))


def stored_yardstick_costs(
    flags: tuple[str, ...], stored: Path = YARDSTICK_FILE
) -> tuple[int, dict[str, float]] | None:
    """(threads, costs) recorded on a CPU with these vector instructions, or None if none was.

    Why per CPU class: a yardstick is mostly gathers and fp32 matmuls, while a step's kernels are
    built for the CPU and its precision follows it (bf16 only where native). A mined step at 2^16
    measured 0.88 yardsticks on an AVX-512 BF16 CPU and 1.39 on an AVX2 Zen 3, unchanged code.
    """
    import json

    for record in json.loads(stored.read_text())["by_cpu"]:
        if tuple(record["vector_flags"]) == flags:
            return record["threads"], record["costs"]
    return None


def write_yardstick_costs(target: Path, scene_dir: Path) -> dict:
    """Measure this CPU class's costs and store them beside the other classes' (replacing its own)."""
    import json

    flags = this_cpu_vector_flags()
    record = {
        "vector_flags": list(flags),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "costs": measure_yardstick_costs(scene_dir),
    }
    others = json.loads(target.read_text())["by_cpu"] if target.exists() else []
    kept = [r for r in others if tuple(r["vector_flags"]) != flags]
    target.write_text(json.dumps({"by_cpu": [*kept, record]}, indent=2) + "\n")
    return record


# -- the regression reference ----------------------------------------------------------------------
REGRESSION_SAMPLES = 1 << 14
SPEED_ROUNDS = 15
SPEED_MARGIN = 1.35  # allowed growth of the mined/baseline step-time ratio before the check fails
QUALITY_STEPS = 150


def mined_to_baseline_time_ratio(scene_dir: Path, n_samples: int = REGRESSION_SAMPLES) -> float:
    """Median mined step time over median baseline step time, interleaved in one process."""
    trainers = {m: steady_state_trainer(scene_dir, m, n_samples) for m in PAPER_METHODS}
    for t in trainers.values():
        warm_up(t, 32)
    medians = interleaved_medians({m: t.train_step for m, t in trainers.items()}, SPEED_ROUNDS)
    return medians["hsm"] / medians["baseline"]


def quality_psnr(scene_dir: Path, out: Path, method: str = "baseline") -> float:
    """Final PSNR of a fixed-step run of ``method`` (deterministic on CPU for a fixed thread count)."""
    cfg = build_config(
        "cpu",
        {
            "method": method,
            "device": "cpu",
            "budget_s": 1e9,
            "step_limit": QUALITY_STEPS,
            "render": {"target_samples": 1 << 13, "initial_rays": 256},
            "eval": {"final_views": 3},
        },
    )
    summary = Trainer(cfg, load_scene(scene_dir), out, progress=False).run()
    return float(summary["final"]["psnr"])


def mixed_precision_label() -> str:
    """The precision the CPU preset's ``mixed`` runs in on this CPU (bfloat16 where native, else fp32)."""
    from ngp_ohem.precision import Precision

    return Precision("mixed", torch.device("cpu")).label


def measure_reference(work: Path, previous: dict | None = None) -> dict:
    """The regression reference; ``previous``'s graph bytes of other precisions are kept."""
    scene = procedural_scene_dir(work)
    ref: dict = {"samples": REGRESSION_SAMPLES}
    graph: dict = {}
    for method in PAPER_METHODS:
        gb, n, b = graph_bytes_of_first_step(scene, method, REGRESSION_SAMPLES)
        ref[method] = {"samples": n, "hard_samples": b}
        graph[method] = gb
    graph["ratio"] = graph["hsm"] / graph["baseline"]
    # The saved activations' size depends on the precision mixed runs in here (bf16 or fp32): keep the others'.
    ref["graph_bytes"] = {**(previous or {}).get("graph_bytes", {}), mixed_precision_label(): graph}
    ratio = mined_to_baseline_time_ratio(scene)
    ref["measured_time_ratio"] = ratio
    ref["time_ratio_bound"] = round(ratio * SPEED_MARGIN, 3)
    ref["quality_steps"] = QUALITY_STEPS
    ref["quality_psnr"] = {m: quality_psnr(scene, work / f"quality-{m}", m) for m in PAPER_METHODS}
    return ref


STORED_RUNS = Path(__file__).resolve().parent / "baseline" / "Linux-CPython-3.11-64bit"
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # what the kernels' speed depends on (-march=native)


def cpu_vector_flags(flags: list[str]) -> tuple[str, ...]:
    return tuple(f for f in VECTOR_FLAGS if f in flags)


def stored_run_for_this_cpu(storage: Path = STORED_RUNS) -> str:
    """The id (``0001``) of the stored pytest-benchmark run recorded on a CPU with this one's vector
    instructions, else of the first run. Why: the kernels are built for the CPU they run on, and an AVX2-only
    CPU runs the same benchmark up to ~2x slower than an AVX-512 BF16 one (benchmarks/README.md), which an
    absolute backstop must not read as a regression."""
    import json

    here = this_cpu_vector_flags()
    runs = sorted(storage.glob("[0-9][0-9][0-9][0-9]_*.json"))
    if not runs:
        raise SystemExit(f"no stored benchmark run in {storage}")
    for run in runs:
        flags = json.loads(run.read_text())["machine_info"]["cpu"].get("flags", [])
        if cpu_vector_flags(flags) == here:
            return run.name[:4]
    return runs[0].name[:4]


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
        "--write-yardstick-costs",
        metavar="JSON",
        help=f"measure and write the stored yardstick costs CI checks (on purpose), e.g. {YARDSTICK_FILE.name}",
    )
    task.add_argument(
        "--stored-run",
        action="store_true",
        help="print the id of the stored benchmark run from a CPU with this one's vector instructions "
        "(what CI compares to)",
    )
    task.add_argument(
        "--phases", type=int, metavar="LOG2_SAMPLES", help="print the per-phase step time at 2^LOG2_SAMPLES samples"
    )
    args = parser.parse_args()
    if args.stored_run:
        print(stored_run_for_this_cpu())
        return
    if args.phases is not None:
        with tempfile.TemporaryDirectory() as tmp:
            split = phase_split(procedural_scene_dir(Path(tmp)), 1 << args.phases)
        print(f"steady-state step at 2^{args.phases} samples, {torch.get_num_threads()} threads:")
        print(format_phase_split(split))
        return
    if args.write_yardstick_costs:
        with tempfile.TemporaryDirectory() as tmp:
            record = write_yardstick_costs(Path(args.write_yardstick_costs), procedural_scene_dir(Path(tmp)))
        print(json.dumps(record, indent=2))
        return
    target = Path(args.write_reference)
    previous = json.loads(target.read_text()) if target.exists() else None
    with tempfile.TemporaryDirectory() as tmp:
        ref = measure_reference(Path(tmp), previous)
    Path(args.write_reference).parent.mkdir(parents=True, exist_ok=True)
    Path(args.write_reference).write_text(json.dumps(ref, indent=2) + "\n")
    print(json.dumps(ref, indent=2))


if __name__ == "__main__":
    main()
