"""The registry of training strategies (the benchmark's arms): one entry per name, torch-free.

An entry says where the strategy's class lives ("module:Class", imported only when a run builds it),
how tables and figures show it (label, colour), which config section holds its hyper-parameters (a
frozen dataclass of ngp_ohem.settings fields: defaults and JSON-Schema bounds, from which that
section's run-config schema and defaults are generated, as the core sections' are) and whether it
changes which samples enter the graph ("sample") or which pixels are drawn ("pixel"). The CLI, the
run-config schema and defaults, the workflow's ``methods:`` check, its wildcard and the report all read
this module, so adding an arm means one ``register(Entry(...))`` here and the arm's own module. Nothing
here imports torch: the config module, the report and every Snakemake process import it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ngp_ohem.errors import ConfigError
from ngp_ohem.settings import FRACTION, POS_INT, POS_NUM, UNIT, setting


class Settings:
    """Base of a strategy's config section: ``SECTION`` names it, ``check`` holds rules across keys."""

    SECTION: ClassVar[str]

    def check(self) -> None:
        """Raise ConfigError naming ``section.key`` when keys contradict each other."""


# -- the built-in arms' sections ----------------------------------------------------------------------------
@dataclass(frozen=True)
class MiningSettings(Settings):
    """Hard sample mining (Korhonen et al., ECCV 2024; ngp_ohem/mining.py), shared by hsm and hsm_unbiased."""

    SECTION: ClassVar[str] = "mining"
    min_fraction: float = setting(0.05, FRACTION, "lower clamp of b/B (the authors' 0.05)")
    max_fraction: float = setting(0.5, FRACTION, "upper clamp of b/B (the authors' 0.5)")
    tau_decay: float = setting(0.99, FRACTION, "EMA decay of the variance-reduction factor tau")
    unbiased: bool = setting(False, {"type": "boolean"}, "with-replacement draws weighted 1/(b p)")

    def check(self) -> None:
        if self.min_fraction > self.max_fraction:
            raise ConfigError(
                f"invalid config value at 'mining.min_fraction': {self.min_fraction} is above "
                f"mining.max_fraction {self.max_fraction}"
            )


@dataclass(frozen=True)
class SoftMiningSettings(Settings):
    """Soft mining (Kheradmand et al., CVPR 2024; ngp_ohem/strategies/soft_mining.py): defaults are
    ubc-vision/nf-soft-mining's (examples/datasets/lmc.py, examples/train_ngp_nerf_prop.py)."""

    SECTION: ClassVar[str] = "soft_mining"
    alpha: float = setting(0.6, UNIT, "final exponent r of the 1/error loss weight (theirs: 0.6 Blender, 0.8 LLFF)")
    warmup_steps: int = setting(1000, POS_INT, "steps over which r ramps as min(step / warmup_steps, alpha)")
    min_weight: float = setting(0.2, {"type": "number", "minimum": 0}, "lower clamp of the loss weight (theirs 0.2)")
    drift: float = setting(20.0, {"type": "number", "minimum": 0}, "Langevin step a on grad log loss (theirs 2e1)")
    noise: float = setting(0.02, {"type": "number", "minimum": 0}, "Langevin noise b, normalised image units (2e-2)")
    uniform_fraction: float = setting(0.1, {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                                      "chains restarted uniformly each step (their minpct 0.1)")  # fmt: skip
    reset_fraction: float = setting(0.1, {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                                    "lowest-loss chains restarted at edges each step (lossminpc 0.1)")  # fmt: skip
    reference_rays: int = setting(4096, POS_INT, "the batch size R of their 1/R-scaled gradient (4096)")
    fd_step: float = setting(0.25, {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                             "pixels of the finite difference standing for their autograd gradient")  # fmt: skip

    def check(self) -> None:
        if self.uniform_fraction + self.reset_fraction > 1:
            raise ConfigError(
                f"invalid config value at 'soft_mining.uniform_fraction': {self.uniform_fraction} plus "
                f"soft_mining.reset_fraction {self.reset_fraction} restarts more than every chain"
            )


@dataclass(frozen=True)
class ErrorMapSettings(Settings):
    """Error-map pixel sampling (ngp_ohem/strategies/error_map.py): defaults are torch-ngp's ``--error_map``."""

    SECTION: ClassVar[str] = "error_map"
    resolution: int = setting(128, {"type": "integer", "minimum": 1, "maximum": 4096},
                              "cells per image side (torch-ngp 128; at most the image's pixels)")  # fmt: skip
    ema: float = setting(0.9, FRACTION, "weight of the new loss in a cell's running value (torch-ngp 0.9)")
    initial: float = setting(1.0, POS_NUM, "every cell's value before its first visit (torch-ngp 1)")


# -- entries ------------------------------------------------------------------------------------------------
LEVELS = ("none", "sample", "pixel")


@dataclass(frozen=True)
class Entry:
    """One arm: ``target`` "module:Class" with ``Class.from_settings(settings, generator, profile)``."""

    name: str
    target: str
    label: str
    color: str
    settings: type | None = None
    level: str = "none"
    #: keys of its section the arm fixes, e.g. hsm_unbiased sets mining.unbiased true
    implies: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def section(self) -> str | None:
        return None if self.settings is None else self.settings.SECTION

    def load(self) -> type:
        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)


_REGISTRY: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    if entry.level not in LEVELS:
        raise ValueError(f"strategy {entry.name}: level must be one of {', '.join(LEVELS)}")
    if entry.name in _REGISTRY:
        raise ValueError(f"strategy {entry.name} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove an entry (for tests that register a toy arm)."""
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """Every registered arm in registration order (the order of tables, figures and legends)."""
    return tuple(_REGISTRY)


def get(name: str) -> Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"invalid config value at 'method': '{name}' is not one of {', '.join(names())}") from None


def entries() -> tuple[Entry, ...]:
    return tuple(_REGISTRY.values())


def sections() -> dict[str, type]:
    """{section: settings dataclass} of every registered arm (arms may share one, as hsm and hsm_unbiased)."""
    return {e.section: e.settings for e in _REGISTRY.values() if e.settings is not None}


def label(name: str) -> str:
    return _REGISTRY[name].label if name in _REGISTRY else name


def color(name: str) -> str:
    return _REGISTRY[name].color if name in _REGISTRY else "#7f7f7f"


def check_settings(config: dict[str, Any]) -> None:
    """Each section's rules across keys (its ``check``), on a merged configuration."""
    for section, settings in sections().items():
        if section in config:
            settings(**config[section]).check()


def apply_implied(merged: dict[str, Any], overrides: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """``merged`` with the keys its method fixes; an override that sets one of them otherwise is an error."""
    entry = get(merged["method"])
    out = {**merged}
    for section, values in entry.implies.items():
        for key, value in values.items():
            for override in overrides:
                given = override.get(section, {})
                if isinstance(given, dict) and key in given and given[key] != value:
                    raise ConfigError(
                        f"invalid config value at '{section}.{key}': {given[key]!r} contradicts method "
                        f"'{entry.name}', which sets it to {value!r}"
                    )
        out[section] = {**out[section], **values}
    return out


register(Entry("baseline", "ngp_ohem.mining:FullBatch", "Instant-NGP (baseline)", "#1f77b4"))
register(Entry("hsm", "ngp_ohem.mining:HardSampleMining", "Instant-NGP + HSM", "#d62728", MiningSettings, "sample"))
register(
    Entry(
        "hsm_unbiased", "ngp_ohem.mining:HardSampleMining", "Instant-NGP + HSM (unbiased)", "#ff7f0e",
        MiningSettings, "sample", implies={"mining": {"unbiased": True}},
    )
)  # fmt: skip
register(
    Entry(
        "soft_mining", "ngp_ohem.strategies.soft_mining:SoftMining", "Instant-NGP + soft mining", "#2ca02c",
        SoftMiningSettings, "pixel",
    )
)  # fmt: skip
register(
    Entry(
        "error_map", "ngp_ohem.strategies.error_map:ErrorMapSampling", "Instant-NGP + error map", "#9467bd",
        ErrorMapSettings, "pixel",
    )
)  # fmt: skip
