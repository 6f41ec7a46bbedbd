"""What a run records about the software and hardware it ran on."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

import ngp_ohem
from ngp_ohem.allocator import malloc_status


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "ngp_ohem": ngp_ohem.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "malloc": malloc_status(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        try:
            import tinycudann

            info["tinycudann"] = getattr(tinycudann, "__version__", "installed")
        except ImportError:
            info["tinycudann"] = None
    return info
