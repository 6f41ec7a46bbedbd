"""How training degrades when another process holds a core, per OpenMP wait policy (issue 11).

Runs the same short training (procedural 100 px Blender scene, or --data) with 2 threads, for each
policy, on an idle machine and with a one-thread busy loop on one core, alternating policies so
that drift hits them alike, and prints steps per run, the hogged/idle ratio per policy and the idle
cost of each policy against the first. Run it alone on the machine (nothing else computing):

    .venv/bin/python benchmarks/contention.py --budget 20 --repeats 2
    .venv/bin/python benchmarks/contention.py --data ../shared/data/nerf_synthetic/lego --budget 60 --repeats 1

A policy is ``default`` (libgomp's own: spin ~300k iterations, then sleep), an OMP_WAIT_POLICY value
(``PASSIVE`` sleeps at once, ``ACTIVE`` spins), or ``KEY=VALUE[,KEY=VALUE]`` environment settings
(e.g. ``GOMP_SPINCOUNT=10000``: spin briefly, then sleep).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HOG = "while True: pass"


def run_once(data: Path, budget: float, policy: str, hogged: bool, workdir: Path, tag: str) -> dict:
    out = workdir / tag
    env = dict(os.environ)
    # An unrecognised value makes libgomp keep its default; the CLI only sets PASSIVE when unset.
    env["OMP_WAIT_POLICY"] = "default"
    if "=" in policy:
        env.update(item.split("=", 1) for item in policy.split(","))
    elif policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    hog = subprocess.Popen([sys.executable, "-c", HOG]) if hogged else None
    try:
        subprocess.run(
            [sys.executable, "-m", "ngp_ohem.cli", "train", "--data", str(data), "--out", str(out), "--budget",
             str(budget), "--threads", "2", "--preset", "cpu", "--quiet", "--set", "eval.n_evals=1",
             "--set", "eval.final_views=1"],
            check=True, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    summary = json.loads((out / "summary.json").read_text())
    clock = summary["clock"]
    return {"steps": summary["steps"], "contended": clock["contended"], "other": clock["other_cpu_share"],
            "util": clock["cpu_utilization"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="scene folder (default: a procedural 100 px Blender scene)")
    parser.add_argument("--budget", type=float, default=20.0, help="training seconds per run")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of (every policy x idle/hogged)")
    parser.add_argument("--policies", nargs="+", default=["default", "PASSIVE"], help="OMP_WAIT_POLICY values")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = Path(args.data) if args.data else None
        if data is None:
            from ngp_ohem.data.procedural import make_blender_scene

            data = make_blender_scene(work / "scene", seed=0, size=100)
        steps: dict[tuple[str, bool], list[int]] = {}
        for r in range(args.repeats):
            for hogged in (False, True):
                for policy in args.policies:
                    res = run_once(data, args.budget, policy, hogged, work, f"{policy}-{hogged}-{r}")
                    steps.setdefault((policy, hogged), []).append(res["steps"])
                    print(f"round {r} {policy:8s} {'hogged' if hogged else 'idle  '}: {res}", flush=True)
    first = args.policies[0]
    idle_ref = statistics.mean(steps[(first, False)])
    print(f"\n| policy | idle steps | hogged steps | hogged / idle | idle vs {first} |\n|---|---:|---:|---:|---:|")
    for policy in args.policies:
        idle, hog = statistics.mean(steps[(policy, False)]), statistics.mean(steps[(policy, True)])
        print(f"| {policy} | {idle:.0f} | {hog:.0f} | {hog / idle:.2f} | {idle / idle_ref:.3f} |")


if __name__ == "__main__":
    main()
