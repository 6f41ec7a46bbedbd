"""Run configuration: typed sections, presets, overrides, and JSON-Schema validation.

Every key is a field of one frozen dataclass below (:class:`RunConfig` for the scalar keys, one class per
core section, the strategies' sections from ngp_ohem/strategies): its type, default, JSON-Schema bounds and
a line of doc sit together, and :func:`schema` and :func:`defaults` are generated from them
(ngp_ohem/settings.py). A run's configuration is a nested dict (defaults, a preset, overrides) validated
against :func:`schema` (an unknown key or an out-of-range value is an error naming the dotted key) and
loaded into :class:`RunConfig`. Two presets exist because the paper's GPU settings do not fit a 2-core CPU:
``paper`` (the authors' recipe, item by item in ngp_ohem/recipe.py: 2^19 table, 128^3 grid, 2^18 samples)
and ``cpu`` (smaller table and grid, 2^16 samples per step). ``auto`` (the CLI's) picks by device.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any

import jsonschema

from ngp_ohem import settings, strategies
from ngp_ohem.errors import ConfigError
from ngp_ohem.names import PRECISIONS
from ngp_ohem.settings import BOOL, FRACTION, NON_NEG_INT, POS_INT, POS_NUM, UNIT, section, setting
from ngp_ohem.strategies import Settings

_SCIENTIFIC = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+")


def _one_of(*values: Any) -> dict[str, Any]:
    return {"enum": list(values)}


def _or(schema: dict[str, Any], *values: Any) -> dict[str, Any]:
    """A number (or boolean) in ``schema``, or one of the words ``values`` (e.g. "auto")."""
    words = [{"const": v} for v in values] if len(values) == 1 else [{"enum": list(values)}]
    return {"anyOf": [schema, *words]}


def _method_schema() -> dict[str, Any]:
    """The registered arms, read at each call: an arm registered later (e.g. by a test) is valid."""
    return {"enum": list(strategies.names())}


# -- the core sections ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldSettings:
    """The radiance field: hash grid and MLPs (ngp_ohem/field; the authors' values in recipe.py)."""

    n_levels: int = setting(16, POS_INT, "hash-grid levels")
    n_features: int = setting(2, POS_INT, "features per level")
    log2_table_size: int = setting(19, {"type": "integer", "minimum": 8, "maximum": 24}, "log2 of rows per level")
    base_resolution: int = setting(16, POS_INT, "coarsest level's resolution")
    max_resolution_per_bound: float = setting(2048.0, POS_NUM, "finest level's resolution per unit of bound")
    hidden: int = setting(64, POS_INT, "width of the density MLP")
    geo_features: int = setting(15, POS_INT, "density-MLP outputs fed to the colour MLP besides density")
    density_layers: int = setting(2, POS_INT, "hidden layers of the density MLP")
    color_layers: int = setting(2, POS_INT, "hidden layers of the colour MLP")
    color_hidden: int = setting(32, NON_NEG_INT, "width of the colour MLP (0: as hidden)")
    grid_convention: str = setting("gridencoder", _one_of("tcnn", "gridencoder"),
                                   "the authors' lattice (field/hashgrid.py); tcnn: Instant-NGP's")  # fmt: skip


@dataclass(frozen=True)
class RenderSettings:
    """Ray marching, the occupancy grid and the rays per step (ngp_ohem/render)."""

    grid_resolution: int = setting(128, {"type": "integer", "minimum": 8, "maximum": 512}, "occupancy cells a side")
    max_steps: int = setting(1024, POS_INT, "marching steps across the box")
    target_samples: int = setting(1 << 18, POS_INT, "samples per training step (sets the rays per step)")
    initial_rays: int = setting(4096, POS_INT, "rays of the first step")
    min_rays: int = setting(256, POS_INT, "fewest rays per step")
    max_rays: int = setting(1 << 16, POS_INT, "most rays per step")
    grid_warmup_steps: int = setting(256, NON_NEG_INT, "steps whose grid updates visit every cell")
    grid_update_every: int = setting(16, POS_INT, "steps between occupancy-grid updates")
    grid_ramp: bool = setting(False, BOOL, "True: Instant-NGP's every-step start (render/occupancy.py)")
    grid_cascades: int | str = setting("auto", _or({"type": "integer", "minimum": 1, "maximum": 16}, "auto"),
                                       "nested grids; auto: the authors' 1 + ceil(log2 bound)")  # fmt: skip
    grid_max_density: float | str = setting(10.0, _or(POS_NUM, "optical"),
                                            "occupancy threshold min(mean, this); optical: 0.01 / step")  # fmt: skip
    llff_cone_angle: float = setting(1.0 / 256, UNIT, "cone_angle auto on LLFF and Mip-NeRF 360 (0 on Blender)")
    train_background: str = setting("auto", _one_of("auto", "random", "white"),
                                    "the authors' per dataset: white on Blender / LLFF, random on 360")  # fmt: skip
    t_threshold: float = setting(1e-4, FRACTION, "transmittance below which a ray stops")
    cone_angle: float | str = setting("auto", _or(UNIT, "auto"),
                                      "auto: 0 on Blender, llff_cone_angle on LLFF / 360 (protocol.py)")  # fmt: skip
    min_step: str = setting("unit", _one_of("unit", "box"),
                            "smallest step: unit 2 sqrt(3) / max_steps (the authors'), box: that x bound")  # fmt: skip
    camera_near_far: bool | str = setting("auto", _or(BOOL, "auto"),
                                          "rays only between each camera's nearest and farthest sparse point; "
                                          "auto: on Mip-NeRF 360")  # fmt: skip


@dataclass(frozen=True)
class FrameSettings:
    """The world frame of a scene (data/rescale.py)."""

    blender_scale: float | str = setting("authors", _or(POS_NUM, "file", "authors"),
                                         "authors: Blender worlds scaled 0.8 (0.7 hotdog, ship), box [-1, 1]^3 "
                                         "with bound auto; file: as loaded (bound 1.5, unscaled)")  # fmt: skip


@dataclass(frozen=True)
class OptimSettings:
    """Adam and its learning-rate schedule (run/trainer.py)."""

    lr: float = setting(4e-3, POS_NUM, "learning rate")
    eps: float = setting(1e-15, POS_NUM, "Adam's eps")
    beta1: float = setting(0.9, FRACTION, "Adam's beta1")
    beta2: float = setting(0.999, FRACTION, "Adam's beta2")
    lr_final_factor: float = setting(1.0, FRACTION, "lr at the end of the budget over lr (exponential decay; 1: none)")


@dataclass(frozen=True)
class EvalSettings:
    """When and on what the run is evaluated (run/evaluation.py, ema.py)."""

    n_evals: int = setting(8, POS_INT, "evaluations on a geometric schedule, the final one included")
    first_fraction: float = setting(1 / 64, FRACTION, "the first evaluation's share of the budget")
    subset_views: int = setting(8, POS_INT, "test views of an intermediate evaluation")
    final_views: int = setting(0, NON_NEG_INT, "test views of the final evaluation (0: all)")
    chunk_rays: int = setting(1 << 14, POS_INT, "rays rendered at once")
    ema_decay: float = setting(0.95, {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                               "decay of the evaluated EMA of the weights (0: the raw weights)")  # fmt: skip
    ema_every: int | str = setting("epoch", _or(POS_INT, "epoch"), "steps between EMA updates; epoch: one pass")


@dataclass(frozen=True)
class RunConfig:
    """A run's configuration: the scalar keys, one typed section each (``cfg.render.max_steps``) and the
    registered arms' sections in ``arms`` (``cfg.arms["mining"].min_fraction``). :meth:`to_dict` is the one
    dict view (summary.json, checkpoints, recipe deviations); :meth:`from_dict` the strict way back."""

    method: str = setting("baseline", _method_schema, "training strategy: a registered arm (ngp_ohem/strategies)")
    seed: int = setting(0, {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}, "random seed")
    budget_s: float = setting(60.0, POS_NUM, "training seconds (evaluation excluded)")
    device: str = setting("auto", _one_of("auto", "cpu", "cuda"), "auto: cuda when torch sees one")
    backend: str = setting("auto", _one_of("auto", "torch", "tcnn"), "field backend; auto: tcnn on CUDA if installed")
    threads: int = setting(0, NON_NEG_INT, "torch CPU threads (0: torch's default)")
    downscale: int = setting(1, POS_INT, "image downscale factor")
    bound: float | str = setting("auto", {"anyOf": [{"const": "auto"}, POS_NUM]},
                                 "half side of the scene box; auto: the format's (Blender 1.5, LLFF 4, Mip-NeRF 360 "
                                 "8; config/paper_360.yaml sets the authors' per scene)")  # fmt: skip
    profile: bool = setting(False, BOOL, "record per-phase step times (syncs CUDA per phase)")
    precision: str = setting("mixed", _one_of(*PRECISIONS),
                             "mixed: network calls under autocast, fp16 + GradScaler on CUDA, bf16 on CPU")  # fmt: skip
    field: FieldSettings = section(FieldSettings, "the radiance field")
    render: RenderSettings = section(RenderSettings, "marching, occupancy grid, rays per step")
    frame: FrameSettings = section(FrameSettings, "the scene's world frame")
    optim: OptimSettings = section(OptimSettings, "the optimizer")
    eval: EvalSettings = section(EvalSettings, "the evaluation schedule and weights")
    checkpoint_every_s: float = setting(15.0, POS_NUM,
                                        "training seconds between checkpoints: what a kill -9 can lose")  # fmt: skip
    step_limit: int = setting(0, NON_NEG_INT, "0: none; >0 stops after that many steps within the budget")
    strict_clock: bool = setting(False, BOOL, "fail (and discard) a run whose clock other processes shared")
    adaptive_threads: bool = setting(True, BOOL, "run on the free cores while other processes hold some")
    arms: dict[str, Settings] = settings.sections(strategies.sections, "each registered arm's section, by name")
    preset: str | None = setting(None, {"type": "string"}, "the preset the run started from (build_config)",
                                 optional=True)  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """The typed config of a full config dict (a ConfigError naming any unknown or missing key)."""
        return settings.from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        """The nested dict of every key: what summary.json and checkpoints record."""
        return settings.to_dict(self)

    def strategy_settings(self) -> Settings | None:
        """The configured method's section (None for an arm without one, as the baseline)."""
        name = strategies.get(self.method).section
        return None if name is None else self.arms[name]


def schema() -> dict[str, Any]:
    """The run-config JSON Schema, generated from :class:`RunConfig`; ``method`` and the strategies'
    sections come from the registry, so an arm registered later (e.g. by a test) is part of it."""
    return settings.schema_of(RunConfig)


def defaults() -> dict[str, Any]:
    """Every key's default (the dataclasses'), the registered strategies' sections included."""
    return settings.defaults_of(RunConfig)


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
    """Raise ConfigError naming the offending key when ``config`` does not match :func:`schema`: an unknown
    key first, by its dotted path and the closest valid one (a typo must not pass as a missing default)."""
    unknown = settings.unknown_key(RunConfig, config)
    if unknown:
        raise ConfigError(unknown)
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


def build_config(preset: str, *overrides: dict[str, Any]) -> RunConfig:
    """Defaults, then a preset, then each override in turn; validated, then typed."""
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
    return RunConfig.from_dict(merged)
