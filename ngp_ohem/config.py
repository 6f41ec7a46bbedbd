"""Run configuration: defaults, presets, overrides, and JSON-Schema validation.

A run's configuration is a nested dict validated against :data:`SCHEMA` (unknown keys and
out-of-range values are rejected with a message naming the key) and then frozen into
:class:`RunConfig`. Two presets exist because the paper's GPU settings do not fit a 2-core CPU:
``paper`` (the authors' recipe, item by item in ngp_ohem/recipe.py: 2^19 table, 128^3 grid, 2^18 samples) and
``cpu`` (smaller table and grid, 2^16 samples per step). ``auto`` picks by device.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any

import jsonschema

from ngp_ohem import strategies
from ngp_ohem.errors import ConfigError
from ngp_ohem.names import PRECISIONS

_SCIENTIFIC = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+")
_POS_INT = {"type": "integer", "minimum": 1}
_POS_NUM = {"type": "number", "exclusiveMinimum": 0}
_FRACTION = {"type": "number", "exclusiveMinimum": 0, "maximum": 1}


def _section(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": props}


def schema() -> dict[str, Any]:
    """The run-config schema; ``method`` and the strategies' sections come from the registry
    (ngp_ohem/strategies), so an arm registered later (e.g. by a test) is part of it."""
    return _section({**_SCHEMA_CORE, "method": {"enum": list(strategies.names())}, **_strategy_schemas()})


def _strategy_schemas() -> dict[str, Any]:
    return {name: strategies.section_schema(cls) for name, cls in strategies.sections().items()}


_SCHEMA_CORE: dict[str, Any] = {
    "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    "budget_s": _POS_NUM,
    "device": {"enum": ["auto", "cpu", "cuda"]},
    "backend": {"enum": ["auto", "torch", "tcnn"]},
    "threads": {"type": "integer", "minimum": 0},
    "downscale": _POS_INT,
    "bound": {"anyOf": [{"const": "auto"}, _POS_NUM]},
    "profile": {"type": "boolean"},
    "precision": {"enum": list(PRECISIONS)},
    "field": _section(
        {
            "n_levels": _POS_INT,
            "n_features": _POS_INT,
            "log2_table_size": {"type": "integer", "minimum": 8, "maximum": 24},
            "base_resolution": _POS_INT,
            "max_resolution_per_bound": _POS_NUM,
            "hidden": _POS_INT,
            "geo_features": _POS_INT,
            "density_layers": _POS_INT,
            "color_layers": _POS_INT,
            "color_hidden": {"type": "integer", "minimum": 0},
            "grid_convention": {"enum": ["tcnn", "gridencoder"]},
        }
    ),
    "render": _section(
        {
            "grid_resolution": {"type": "integer", "minimum": 8, "maximum": 512},
            "max_steps": _POS_INT,
            "target_samples": _POS_INT,
            "initial_rays": _POS_INT,
            "min_rays": _POS_INT,
            "max_rays": _POS_INT,
            "grid_warmup_steps": {"type": "integer", "minimum": 0},
            "grid_update_every": _POS_INT,
            "grid_ramp": {"type": "boolean"},
            "grid_cascades": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 16}, {"const": "auto"}]},
            "grid_max_density": {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"const": "optical"}]},
            "llff_cone_angle": {"type": "number", "minimum": 0, "maximum": 1},
            "train_background": {"enum": ["auto", "random", "white"]},
            "t_threshold": _FRACTION,
            "cone_angle": {"anyOf": [{"type": "number", "minimum": 0, "maximum": 1}, {"const": "auto"}]},
            "min_step": {"enum": ["unit", "box"]},
            "camera_near_far": {"anyOf": [{"type": "boolean"}, {"const": "auto"}]},
        }
    ),
    "frame": _section(
        {
            "blender_scale": {"anyOf": [_POS_NUM, {"enum": ["file", "authors"]}]},
        }
    ),
    "optim": _section(
        {"lr": _POS_NUM, "eps": _POS_NUM, "beta1": _FRACTION, "beta2": _FRACTION, "lr_final_factor": _FRACTION}
    ),
    "eval": _section(
        {
            "n_evals": _POS_INT,
            "first_fraction": _FRACTION,
            "subset_views": _POS_INT,
            "final_views": {"type": "integer", "minimum": 0},
            "chunk_rays": _POS_INT,
            "ema_decay": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
            "ema_every": {"anyOf": [_POS_INT, {"const": "epoch"}]},
        }
    ),
    "checkpoint_every_s": _POS_NUM,
    "step_limit": {"type": "integer", "minimum": 0},
    "strict_clock": {"type": "boolean"},
    "adaptive_threads": {"type": "boolean"},
    "preset": {"type": "string"},  # set by build_config: the preset the run started from
}

_DEFAULTS_CORE: dict[str, Any] = {
    "method": "baseline",
    "seed": 0,
    "budget_s": 60.0,
    "device": "auto",
    "backend": "auto",
    "threads": 0,
    "downscale": 1,
    # Half side of the scene box; "auto": the format's (Blender 1.5, LLFF 4, Mip-NeRF 360 8). The authors'
    # 360 script uses 8 (indoor) or 16 (outdoor) per scene: config/paper_360.yaml sets it per scene.
    "bound": "auto",
    "profile": False,
    "precision": "mixed",  # network calls under autocast: fp16 + GradScaler on CUDA, bf16 on CPU (precision.py)
    "field": {
        "n_levels": 16,
        "n_features": 2,
        "log2_table_size": 19,
        "base_resolution": 16,
        "max_resolution_per_bound": 2048.0,
        "hidden": 64,
        "geo_features": 15,
        "density_layers": 2,
        "color_layers": 2,
        "color_hidden": 32,
        "grid_convention": "gridencoder",  # the authors' lattice (ngp_ohem/field/hashgrid.py); "tcnn": Instant-NGP's
    },
    "render": {
        "grid_resolution": 128,
        "max_steps": 1024,
        "target_samples": 1 << 18,
        "initial_rays": 4096,
        "min_rays": 256,
        "max_rays": 1 << 16,
        "grid_warmup_steps": 256,
        "grid_update_every": 16,
        "grid_ramp": False,  # True: Instant-NGP's every-step start (render/occupancy.py)
        "grid_cascades": "auto",  # nested grids; "auto": the authors' 1 + ceil(log2 bound)
        "grid_max_density": 10.0,  # occupancy threshold min(mean, this); "optical": 0.01 / step size
        "llff_cone_angle": 1.0 / 256,  # cone_angle "auto" on LLFF and Mip-NeRF 360 (0 on Blender)
        "train_background": "auto",  # the authors' per dataset: white on Blender / LLFF, random on 360
        "t_threshold": 1e-4,
        "cone_angle": "auto",  # per dataset: 0 on Blender, llff_cone_angle on LLFF / 360 (protocol.cone_angle)
        # Smallest marching step: "unit" 2 sqrt(3) / max_steps (the authors'), "box" that times the bound.
        "min_step": "unit",
        # Each camera's rays only between its nearest and farthest sparse point; "auto": on Mip-NeRF 360.
        "camera_near_far": "auto",
    },
    # Blender scenes in the authors' frame: world scaled 0.8 (0.7 hotdog, ship), and with bound "auto" the box
    # [-1, 1]^3; "file": as loaded (bound 1.5, unscaled). See data/rescale.py.
    "frame": {"blender_scale": "authors"},
    "optim": {"lr": 4e-3, "eps": 1e-15, "beta1": 0.9, "beta2": 0.999, "lr_final_factor": 1.0},
    "eval": {
        "n_evals": 8,
        "first_fraction": 1 / 64,
        "subset_views": 8,
        "final_views": 0,
        "chunk_rays": 1 << 14,
        # Evaluate an EMA of the weights (0: the raw weights), updated every ema_every steps (ema.py).
        "ema_decay": 0.95,
        "ema_every": "epoch",
    },
    # Training seconds between checkpoints: what a kill -9 can lose (a checkpoint pauses the clock).
    "checkpoint_every_s": 15.0,
    "step_limit": 0,  # 0: none; >0 stops after that many steps even within the budget (regression checks)
    "strict_clock": False,  # fail (and discard) a run whose clock other processes shared (see clock.py)
    "adaptive_threads": True,  # run on the free cores while other processes hold some (see threads.py)
}


def defaults() -> dict[str, Any]:
    """Every key's default: the core's, then each registered strategy's section (its dataclass defaults)."""
    sections = {name: strategies.section_defaults(cls) for name, cls in strategies.sections().items()}
    return {**copy.deepcopy(_DEFAULTS_CORE), **sections}


#: The defaults of the built-in arms (``defaults()`` also covers arms registered later).
DEFAULTS: dict[str, Any] = defaults()

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # Every difference from "paper" is a row of ngp_ohem/recipe.py, with its reason; each other row was measured
    # one at a time on lego and fern (benchmarks/adhoc/recipe_ablation.py) and follows the paper.
    "cpu": {
        "field": {"log2_table_size": 17, "density_layers": 1, "color_hidden": 0},
        "render": {
            "grid_resolution": 64,
            "target_samples": 1 << 16,
            "initial_rays": 1024,
            "train_background": "random",
        },
        "eval": {"subset_views": 4, "ema_decay": 0.0},
    },
}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``override`` merged in, section by section."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_assignment(text: str) -> dict[str, Any]:
    """``"render.max_steps=512"`` -> ``{"render": {"max_steps": 512}}`` (value parsed as YAML)."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': cannot parse value ({exc})") from None
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads "1e-3" as a string
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _non_finite(config: dict[str, Any], prefix: str = "") -> str | None:
    """The first key whose value is a NaN or infinite number (JSON Schema's bounds let NaN through)."""
    for key, value in config.items():
        if isinstance(value, dict):
            found = _non_finite(value, f"{prefix}{key}.")
            if found:
                return found
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{prefix}{key}"
    return None


def validate(config: dict[str, Any]) -> None:
    """Raise ConfigError naming the offending key when ``config`` does not match :func:`schema`."""
    bad = _non_finite(config)
    if bad:
        raise ConfigError(f"invalid config value at '{bad}': must be a finite number")
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"invalid config value at '{where}': {err.message}")


def check_consistent(config: dict[str, Any]) -> None:
    """Rules across keys, judged on the merged configuration (an override may set both keys in turn)."""
    strategies.check_settings(config)


@dataclass(frozen=True)
class RunConfig:
    """A validated configuration; sections stay plain dicts (they mirror the schema one to one)."""

    raw: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.raw[name]
        except KeyError:
            raise AttributeError(name) from None


def build_config(preset: str, *overrides: dict[str, Any]) -> RunConfig:
    """Defaults, then a preset, then each override in turn; validated."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    base = defaults()
    merged = deep_merge(base, PRESETS[preset])
    for override in overrides:
        validate(deep_merge(base, override))
        merged = deep_merge(merged, override)
    merged["preset"] = preset
    validate(merged)
    merged = strategies.apply_implied(merged, overrides)  # e.g. hsm_unbiased: mining.unbiased true
    check_consistent(merged)
    return RunConfig(merged)
