"""The GPU check: a lego pair (baseline, hsm) with the ``paper`` preset in mixed precision on CUDA.

Run as ``bash scripts/gpu-check.sh [--data DIR] [--budget S]`` on a machine with an NVIDIA GPU and
PyTorch. It trains each arm once per backend (``torch``, and ``tcnn`` when tiny-cuda-nn imports) in its
own process, so every run's CUDA peak memory is its own, and prints one markdown table: steps, ms per
step, PSNR, CUDA peak memory and graph bytes per arm, with the device and versions. Anything missing
(no CUDA device, a Python package, the scene) stops it at once with one line saying what and how to
fix it. ``--device cpu`` runs the same path on the CPU (the tests do, with a tiny budget).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from ngp_ohem.names import PAPER_METHODS

REPO = Path(__file__).resolve().parent.parent
# What ``ngp_ohem`` imports at run time (pyproject's dependencies; pandas/matplotlib only for reports).
REQUIRED = ("torch", "numpy", "PIL", "yaml", "jsonschema", "tqdm", "torchmetrics")
SCENE_CANDIDATES = ("shared/data/nerf_synthetic/lego", "../shared/data/nerf_synthetic/lego", "data/nerf_synthetic/lego")


class CheckError(Exception):
    """A missing prerequisite: the message is the one line the user sees."""


def missing_modules(names: tuple[str, ...] = REQUIRED) -> list[str]:
    return [n for n in names if importlib.util.find_spec(n) is None]


def find_scene(given: str | None) -> Path:
    candidates = [Path(given)] if given else [REPO / c for c in SCENE_CANDIDATES]
    for path in candidates:
        if (path / "transforms_train.json").is_file():
            return path
    where = ", ".join(str(c) for c in candidates)
    raise CheckError(f"no Blender lego scene at {where}; pass --data DIR (ngp-ohem download lego fetches it)")


def check_device(device: str) -> str:
    """The device description for the table; CheckError when CUDA was asked for and is absent."""
    import torch

    if device == "cpu":
        return f"cpu (torch {torch.__version__})"
    if not torch.cuda.is_available():
        raise CheckError(f"no CUDA device: torch {torch.__version__} sees none (run this on a machine with a GPU)")
    name = torch.cuda.get_device_name(0)
    return f"{name} (torch {torch.__version__}, CUDA {torch.version.cuda})"


def backends() -> list[str]:
    return ["torch"] + (["tcnn"] if importlib.util.find_spec("tinycudann") is not None else [])


def train_command(
    scene: Path, out: Path, method: str, backend: str, device: str, budget: float, extra: list[str]
) -> list[str]:
    """One arm: the paper preset in mixed precision (fp16 + GradScaler on CUDA), final PSNR on 25 test
    views so that the check fits in minutes. tiny-cuda-nn has only its own hash-grid lattice."""
    sets = ["precision=mixed", "eval.final_views=25", "eval.n_evals=2"]
    if backend == "tcnn":
        sets.append("field.grid_convention=tcnn")
    command = [
        sys.executable, "-m", "ngp_ohem.cli", "train", "--data", str(scene), "--out", str(out), "--quiet",
        "--method", method, "--preset", "paper", "--device", device, "--backend", backend, "--budget", str(budget),
    ]  # fmt: skip
    for item in [*sets, *extra]:
        command += ["--set", item]
    return command


def run_arm(command: list[str], out: Path) -> dict:
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CheckError(f"training {out.name} failed (exit {result.returncode}): {last}")
    return json.loads((out / "summary.json").read_text())


def row(label: str, summary: dict) -> str:
    steps = summary["steps"]
    ms = 1000.0 * summary["train_seconds"] / max(steps, 1)
    mib = 1 << 20
    return (
        f"| {label} | {steps} | {ms:.1f} | {summary['final']['psnr']:.2f} | {summary['max_peak_mem_bytes'] / mib:.0f} "
        f"| {summary['max_graph_bytes'] / mib:.1f} | {summary['precision']} |"
    )


def table(device: str, results: dict[str, dict]) -> str:
    import torch

    lines = [
        f"GPU check on {device}; python {sys.version.split()[0]}, torch {torch.__version__}",
        "",
        "| run | steps | ms / step | PSNR (dB) | CUDA peak (MiB) | graph (MiB) | precision |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [row(label, summary) for label, summary in results.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], prog="scripts/gpu-check.sh")
    parser.add_argument("--data", help="the lego scene folder (default: shared/data/... or ../shared/data/...)")
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds per arm (default 60)")
    parser.add_argument("--out", default="results/gpu-check", help="where the runs go (default results/gpu-check)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        missing = missing_modules()
        if missing:
            raise CheckError(
                f"missing Python packages: {', '.join(missing)} (pip install -e . here, or install their wheels)"
            )
        device = check_device(args.device)
        scene = find_scene(args.data)
        results = {}
        for backend in backends():
            for method in PAPER_METHODS:
                out = (REPO / args.out / f"{backend}-{method}").resolve()
                command = train_command(scene, out, method, backend, args.device, args.budget, args.set)
                print(f"gpu-check: training {backend}/{method} for {args.budget:g} s ...", file=sys.stderr)
                results[f"{backend} {method}"] = run_arm(command, out)
    except CheckError as err:
        print(f"gpu-check: {err}", file=sys.stderr)
        return 2
    print(table(device, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
