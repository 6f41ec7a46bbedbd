"""Per-step efficiency of a workflow's arms, apart from their step cost: steps in the budget, ms per
step (over all of each run and over its last evaluation interval, where the hard fraction has settled),
and PSNR at an equal step count (the fewest steps any arm's runs made, linearly interpolated on each
run's trace of evaluations, mean over seeds). Reads a workflow's results/traces.csv and runs.csv (the
arena's, the cpu.yaml matrix's):
``<repo>/.venv/bin/python <repo>/benchmarks/adhoc/arena_steps.py <workflow dir>/results``.
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

results = Path(sys.argv[1])
traces = pd.read_csv(results / "traces.csv").dropna(subset=["psnr"])
runs = pd.read_csv(results / "runs.csv")
for scene, per_scene in runs.groupby("scene", sort=False):
    at = int(per_scene["steps"].min())
    print(f"{scene}: PSNR at step {at} (the fewest steps of any run), mean over seeds")
    for method, per_arm in per_scene.groupby("method", sort=False):
        psnrs, last_seconds, last_steps = [], 0.0, 0
        for seed in per_arm["seed"]:
            t = traces[(traces.scene == scene) & (traces.method == method) & (traces.seed == seed)]
            psnrs.append(np.interp(at, t["step"], t["psnr"]))
            last_seconds += t["train_seconds"].iloc[-1] - t["train_seconds"].iloc[-2]
            last_steps += t["step"].iloc[-1] - t["step"].iloc[-2]
        ms = 1000 * per_arm["train_seconds"].sum() / per_arm["steps"].sum()
        print(
            f"  {method:13s} steps {per_arm['steps'].mean():7.0f}  ms/step {ms:6.1f}  "
            f"last interval {1000 * last_seconds / last_steps:6.1f}  "
            f"PSNR@{at} {np.mean(psnrs):6.2f} ± {np.std(psnrs, ddof=1):.2f}  final {per_arm['psnr'].mean():6.2f}"
        )
