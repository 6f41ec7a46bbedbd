"""The ``ngp-ohem`` command line: train, eval, make-scene, download.

Every user error (bad data, bad config, unknown names) ends with a one-line message on stderr and
exit status 2; nothing prints a traceback from deep inside.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from ngp_ohem import strategies
from ngp_ohem.errors import ConfigError, NgpOhemError

EPILOG = """examples:
  ngp-ohem make-scene --kind blender --out scenes/blob
  ngp-ohem train --data scenes/blob --method hsm --budget 60 --seed 0 --out runs/blob-hsm-0
  ngp-ohem train --data data/nerf_synthetic/lego --method baseline --budget 240 --device cuda \\
      --preset paper --out runs/lego-baseline-0
  ngp-ohem train --data data/360_v2/garden --downscale 8 --set bound=16 --device cuda --preset paper \\
      --out runs/garden-hsm-0 --method hsm
  ngp-ohem eval --run runs/blob-hsm-0
"""


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one run under a wall-clock budget",
        description="Train Instant-NGP with one training strategy (baseline, online hard sample mining hsm, or "
        "another arm of ngp_ohem/strategies) on one scene for a budget of training seconds (evaluation "
        "excluded). Writes OUT/trace.csv, OUT/summary.json and OUT/checkpoint.pt; re-running on the same OUT "
        "resumes an interrupted run and skips a finished one.",
    )
    p.add_argument(
        "--data", required=True,
        help="scene folder in Blender (transforms_*.json), LLFF or Mip-NeRF 360 (sparse/0/ + images_<k>/) format",
    )  # fmt: skip
    p.add_argument(
        "--method", default="baseline", metavar="METHOD",
        help=f"training strategy, one of {' | '.join(strategies.names())} (ngp_ohem/strategies)",
    )  # fmt: skip
    p.add_argument("--budget", type=float, help="training seconds (default 60)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--out", required=True, help="output folder of this run")
    p.add_argument("--device", help="auto | cpu | cuda (default auto)")
    p.add_argument("--backend", help="auto | torch | tcnn (default auto: tcnn on CUDA when installed)")
    p.add_argument(
        "--preset", default="auto", help="auto | paper | cpu: base settings (auto: paper on CUDA, cpu otherwise)"
    )
    p.add_argument("--config", help="YAML file of config overrides (see ngp_ohem/config.py for keys)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override one key, e.g. render.max_steps=512"
    )
    p.add_argument("--downscale", type=int, help="image downscale factor")
    p.add_argument("--threads", type=int, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--pin-cores", action="store_true",
        help="claim THREADS physical cores no other ngp-ohem run holds (waiting while they are taken) and pin "
        "to them, so concurrent runs never share a core (the workflow always sets it)",
    )  # fmt: skip
    p.add_argument(
        "--strict-clock", action="store_true",
        help="fail, and discard, a run whose cores other processes used during training (config strict_clock)",
    )  # fmt: skip
    p.add_argument("--profile", action="store_true", help="record per-phase step times (syncs CUDA per phase)")
    p.add_argument("--force", action="store_true", help="retrain even if OUT holds a finished run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _overrides(args: argparse.Namespace) -> list[dict[str, Any]]:
    from ngp_ohem.config import parse_assignment

    out: list[dict[str, Any]] = []
    if args.config:
        try:
            loaded = yaml.safe_load(Path(args.config).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {args.config}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {args.config} must hold a mapping")
        out.append(loaded)
    direct = {
        "method": args.method, "budget_s": args.budget, "seed": args.seed, "device": args.device,
        "backend": args.backend, "downscale": args.downscale, "threads": args.threads,
    }  # fmt: skip
    out.append({k: v for k, v in direct.items() if v is not None})
    if args.profile:
        out.append({"profile": True})
    if args.strict_clock:
        out.append({"strict_clock": True})
    out.extend(parse_assignment(a) for a in args.set)
    return out


def _pick_preset(preset: str, overrides: list[dict[str, Any]]) -> str:
    if preset != "auto":
        return preset
    import torch

    device = "auto"
    for o in overrides:
        device = o.get("device", device)
    on_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return "paper" if on_cuda else "cpu"


def _finished_summary(path: Path) -> dict[str, Any]:
    """A run folder's summary.json, or {} (with a warning naming it) when it is unreadable."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        print(
            f"ngp-ohem: warning: ignoring unreadable {path} ({err}); the run resumes from its checkpoint",
            file=sys.stderr,
        )
        return {}
    return data if isinstance(data, dict) else {}


def cmd_train(args: argparse.Namespace) -> int:
    if args.pin_cores:  # before torch creates its thread pool: its threads inherit the pinning
        from ngp_ohem.cores import claim_cores

        claim_cores(args.threads or 0)
    from ngp_ohem.config import build_config
    from ngp_ohem.data import load_scene
    from ngp_ohem.io import check_writable_folder, lock_run_folder
    from ngp_ohem.run.trainer import Trainer

    overrides = _overrides(args)
    cfg = build_config(_pick_preset(args.preset, overrides), *overrides)
    out = check_writable_folder(args.out)  # before loading data or building the model
    summary_path = out / "summary.json"
    if not args.force:
        done = _finished_summary(summary_path)
        if done.get("status") == "complete" and done.get("config") == cfg.to_dict():
            print(f"ngp-ohem: {out} already holds this finished run; nothing to do (--force retrains)", file=sys.stderr)
            return 0
    lock = lock_run_folder(out)  # before --force deletes anything a live run might own
    try:
        if args.force:
            for name in ("summary.json", "checkpoint.pt", "trace.csv"):
                (out / name).unlink(missing_ok=True)
        scene = load_scene(args.data, downscale=cfg.downscale, bound=cfg.bound)
        summary = Trainer(cfg, scene, out, progress=not args.quiet).run(lock)
    finally:
        lock.release()
    final = summary["final"]
    print(
        f"{scene.name} {cfg.method} seed {cfg.seed}: PSNR {final['psnr']:.2f} dB, SSIM {final['ssim']:.4f} "
        f"after {summary['steps']} steps / {summary['train_seconds']:.1f} s -> {out}"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ngp_ohem.run.evaluation import evaluate_run

    result = evaluate_run(Path(args.run), args.data)
    print(json.dumps(result, indent=2))
    return 0


def cmd_make_scene(args: argparse.Namespace) -> int:
    from ngp_ohem.data.procedural import make_scene

    path = make_scene(args.kind, args.out, seed=args.seed, size=args.size, depth=args.depth)
    print(path)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from ngp_ohem.data.download import download_dataset

    download_dataset(args.dataset, args.data_root, scenes=args.scenes or None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ngp-ohem",
        description="Instant-NGP with online hard sample mining (Korhonen et al., ECCV 2024): train, evaluate, "
        "make procedural scenes, download the official datasets.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    p = sub.add_parser("eval", help="evaluate a trained run on its full test split")
    p.add_argument("--run", required=True, help="output folder of a run (with checkpoint.pt and summary.json)")
    p.add_argument("--data", help="scene folder (default: the one recorded in summary.json)")
    p = sub.add_parser("make-scene", help="write a small procedural scene in a real dataset format")
    p.add_argument("--kind", required=True, choices=["blender", "llff", "mipnerf360"], help="dataset format to write")
    p.add_argument("--out", required=True, help="folder to write the scene into")
    p.add_argument("--seed", type=int, default=0, help="scene seed (same seed, same bytes)")
    p.add_argument("--size", type=int, default=100, help="image width in pixels")
    p.add_argument(
        "--depth", default="standard", choices=["standard", "deep"],
        help="LLFF geometry: standard (far/near ~3, like fern) or deep (far/near ~15, like flower or horns)",
    )  # fmt: skip
    p = sub.add_parser("download", help="download and verify the official Blender / LLFF / Mip-NeRF 360 datasets")
    p.add_argument("--dataset", required=True, choices=["blender", "llff", "mipnerf360"], help="which benchmark")
    p.add_argument(
        "--data-root", required=True, help="folder that receives nerf_synthetic/, nerf_llff_data/ or 360_v2/"
    )
    p.add_argument("--scenes", nargs="*", help="scene names (default: all of the dataset)")
    return parser


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "make-scene": cmd_make_scene, "download": cmd_download}


def _one_line_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> str:
    return f"ngp-ohem: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    import warnings

    previous = warnings.formatwarning
    warnings.formatwarning = _one_line_warning  # type: ignore[assignment]
    try:
        return _main(argv)
    finally:
        warnings.formatwarning = previous


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except NgpOhemError as exc:
        print(f"ngp-ohem: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file system failure outside the guarded writes: still one line
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"ngp-ohem: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ngp-ohem: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
