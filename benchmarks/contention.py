"""How training degrades when another process holds a core, per threading setting (issue 11).

Runs the same short training (procedural 100 px Blender scene, or --data) with 2 threads, for each
setting, on an idle machine and with a one-thread busy loop on one core, alternating settings so
that drift hits them alike, and prints steps per run, the hogged/idle ratio per setting and the idle
cost of each setting against the first. Run it alone on the machine (nothing else computing):

    .venv/bin/python benchmarks/contention.py --budget 20 --repeats 2
    .venv/bin/python benchmarks/contention.py --data ../shared/data/nerf_synthetic/lego --budget 60 --repeats 1

A setting is comma-separated tokens: ``default`` (what the CLI does: libgomp's own wait policy, spin
~300k iterations then sleep, with the thread governor of ngp_ohem/threads.py), ``fixed`` (the
governor off: always the configured threads), an OMP_WAIT_POLICY value (``PASSIVE`` sleeps at once,
``ACTIVE`` spins) or ``KEY=VALUE`` environment settings (e.g. ``GOMP_SPINCOUNT=10000``).
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


def run_once(data: Path, budget: float, setting: str, hogged: bool, workdir: Path, tag: str) -> dict:
    out = workdir / tag
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    extra: list[str] = []
    for token in setting.split(","):
        if token == "fixed":
            extra += ["--set", "adaptive_threads=false"]
        elif "=" in token:
            key, value = token.split("=", 1)
            env[key] = value
        elif token != "default":
            env["OMP_WAIT_POLICY"] = token
    hog = subprocess.Popen([sys.executable, "-c", HOG]) if hogged else None
    try:
        subprocess.run(
            [sys.executable, "-m", "ngp_ohem.cli", "train", "--data", str(data), "--out", str(out), "--budget",
             str(budget), "--threads", "2", "--preset", "cpu", "--quiet", "--set", "eval.n_evals=1",
             "--set", "eval.final_views=1", *extra],
            check=True, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    summary = json.loads((out / "summary.json").read_text())
    clock = summary["clock"]
    return {"steps": summary["steps"], "contended": clock["contended"], "other": clock["other_cpu_share"],
            "util": clock["cpu_utilization"], "reduced_s": clock.get("reduced_thread_seconds")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="scene folder (default: a procedural 100 px Blender scene)")
    parser.add_argument("--budget", type=float, default=20.0, help="training seconds per run")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of (every setting x idle/hogged)")
    parser.add_argument("--settings", nargs="+", default=["default", "fixed", "PASSIVE,fixed"],
                        help="threading settings to compare (see above)")  # fmt: skip
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
                for setting in args.settings:
                    res = run_once(data, args.budget, setting, hogged, work, f"{setting}-{hogged}-{r}")
                    steps.setdefault((setting, hogged), []).append(res["steps"])
                    print(f"round {r} {setting:14s} {'hogged' if hogged else 'idle  '}: {res}", flush=True)
    first = args.settings[0]
    idle_ref = statistics.mean(steps[(first, False)])
    print(f"\n| setting | idle steps | hogged steps | hogged / idle | idle vs {first} |\n|---|---:|---:|---:|---:|")
    for setting in args.settings:
        idle, hog = statistics.mean(steps[(setting, False)]), statistics.mean(steps[(setting, True)])
        print(f"| {setting} | {idle:.0f} | {hog:.0f} | {hog / idle:.2f} | {idle / idle_ref:.3f} |")


if __name__ == "__main__":
    main()
