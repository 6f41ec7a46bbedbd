"""Re-evaluate a finished (or checkpointed) run on its full test split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ngp_ohem import checkpoint as ckpt
from ngp_ohem.config import RunConfig
from ngp_ohem.errors import NgpOhemError
from ngp_ohem.io import write_json


def evaluate_run(run_dir: Path, data: str | None = None) -> dict[str, Any]:
    from ngp_ohem.data import load_scene
    from ngp_ohem.train import Trainer

    summary_path = run_dir / "summary.json"
    if not summary_path.exists() or not (run_dir / "checkpoint.pt").exists():
        raise NgpOhemError(f"{run_dir} is not a run folder (needs summary.json and checkpoint.pt)")
    summary = json.loads(summary_path.read_text())
    cfg = RunConfig(summary["config"])
    scene = load_scene(data or summary["data_path"], downscale=cfg.downscale, bound=cfg.raw.get("bound", "auto"))
    trainer = Trainer(cfg, scene, run_dir, progress=False)
    trainer.phase_totals = {}
    if not ckpt.try_resume(trainer):
        raise NgpOhemError(f"cannot restore {run_dir / 'checkpoint.pt'}")
    p, s, n = trainer.evaluate(final=True)
    result = {"psnr": p, "ssim": s, "views": n, "step": trainer.step, "train_seconds": trainer.clock.seconds}
    write_json(run_dir / "eval.json", result)
    return result
