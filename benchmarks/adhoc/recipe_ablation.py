"""Does each `cpu` deviation from the authors' recipe pay on this machine? One item at a time.

For each scene, trains the `cpu` preset as it was before this measurement (`OLD_CPU`: the rows where it
differed from the authors beyond the obvious table size, grid resolution and samples per step) and, for
each such row, the same with that one row set to the authors' value; baseline arm, one seed, the same
budget each. `--base current` starts from today's `cpu` preset instead. Prints one
markdown table (final PSNR on `--views` test views, steps, delta to the unchanged preset) and writes
it as CSV. Run it alone on the machine (nothing else computing), e.g.
    .venv/bin/python benchmarks/adhoc/recipe_ablation.py --budget 60 --out /tmp/ablation
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
SCENES = {"lego": DATA / "nerf_synthetic" / "lego", "fern": DATA / "nerf_llff_data" / "fern"}
# The cpu preset's values before this measurement (2026-12-01), as --set overrides on today's cpu preset.
OLD_CPU = [
    "optim.lr_final_factor=0.1", "optim.beta2=0.99", "eval.ema_decay=0.0", "precision=fp32",
    "render.grid_max_density=optical", "render.min_step=box", "render.train_background=random",
    "frame.blender_scale=file", "render.grid_cascades=1", "render.llff_cone_angle=0.0078125",
]  # fmt: skip
# Row name -> the authors' values as --set overrides; the datasets where the row changes anything.
ITEMS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "constant lr": (["optim.lr_final_factor=1.0"], ("lego", "fern")),
    "Adam beta2 0.999": (["optim.beta2=0.999"], ("lego", "fern")),
    "weight EMA": (["eval.ema_decay=0.95", "eval.ema_every=epoch"], ("lego", "fern")),
    "mixed precision": (["precision=mixed"], ("lego", "fern")),
    "authors' MLPs": (["field.density_layers=2", "field.color_hidden=32"], ("lego", "fern")),
    "threshold min(mean, 10)": (["render.grid_max_density=10.0"], ("lego", "fern")),
    "unit min step": (["render.min_step=unit"], ("lego", "fern")),
    "white background": (["render.train_background=white"], ("lego", "fern")),
    "Blender frame": (["frame.blender_scale=authors"], ("lego",)),
    "cascades auto": (["render.grid_cascades=auto"], ("fern",)),
    "LLFF cone 1/256": (["render.llff_cone_angle=0.00390625"], ("fern",)),
}


def train(scene: str, label: str, sets: list[str], budget: float, views: int, out: Path) -> dict:
    """One baseline run of the cpu preset with ``sets`` applied in order (a later one wins)."""
    folder = out / f"{scene}-{label.replace(' ', '_').replace('/', '_')}"
    command = [
        sys.executable, "-m", "ngp_ohem.cli", "train", "--data", str(SCENES[scene]), "--out", str(folder), "--quiet",
        "--preset", "cpu", "--method", "baseline", "--seed", "0", "--threads", "2", "--budget", str(budget),
        "--set", "eval.n_evals=1", "--set", f"eval.final_views={views}",
    ]  # fmt: skip
    for item in sets:
        command += ["--set", item]
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((folder / "summary.json").read_text())
    return {
        "scene": scene, "item": label, "psnr": summary["final"]["psnr"], "steps": summary["steps"],
        "contended": summary["clock_contended"],
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--views", type=int, default=25, help="test views of the final PSNR")
    parser.add_argument("--out", type=Path, default=Path("/tmp/ablation"))
    parser.add_argument("--scenes", nargs="*", default=list(SCENES))
    parser.add_argument("--items", nargs="*", default=list(ITEMS))
    parser.add_argument("--base", choices=["old", "current"], default="old", help="the cpu preset to start from")
    args = parser.parse_args()
    base_sets = OLD_CPU if args.base == "old" else []
    rows = []
    for scene in args.scenes:
        base = train(scene, "cpu preset", base_sets, args.budget, args.views, args.out)
        rows.append({**base, "delta": 0.0})
        print(base, file=sys.stderr, flush=True)
        for label in args.items:
            sets, where = ITEMS[label]
            if scene in where:
                r = train(scene, label, [*base_sets, *sets], args.budget, args.views, args.out)
                rows.append({**r, "delta": round(r["psnr"] - base["psnr"], 3)})
                print(rows[-1], file=sys.stderr, flush=True)
    with (args.out / "ablation.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("| scene | authors' value of | PSNR (dB) | delta | steps | contended |\n|---|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['scene']} | {r['item']} | {r['psnr']:.2f} | {r['delta']:+.2f} | {r['steps']} | {r['contended']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
