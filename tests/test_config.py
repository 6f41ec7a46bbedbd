"""Run configuration: presets, overrides, ``--set`` parsing and validation errors that name the key."""

from __future__ import annotations

import pytest

from ngp_ohem.cli import _overrides, build_parser
from ngp_ohem.config import DEFAULTS, PRESETS, RunConfig, build_config, deep_merge, parse_assignment, validate
from ngp_ohem.errors import ConfigError


def test_defaults_and_presets_are_valid() -> None:
    validate(DEFAULTS)
    paper = build_config("paper")
    cpu = build_config("cpu")
    assert isinstance(paper, RunConfig) and paper.raw == {**DEFAULTS, "preset": "paper"} and cpu.preset == "cpu"
    assert paper.field["log2_table_size"] == 19 and paper.render["grid_resolution"] == 128
    assert paper.render["target_samples"] == 1 << 18
    assert cpu.field["log2_table_size"] == 17 and cpu.render["grid_resolution"] == 64
    assert paper.field["grid_convention"] == cpu.field["grid_convention"] == "gridencoder"  # the authors' lattice
    assert cpu.render["target_samples"] == 1 << 16 and cpu.render["initial_rays"] == 1024
    # A preset changes only what it names; the rest of the section keeps the defaults.
    assert cpu.field["n_levels"] == DEFAULTS["field"]["n_levels"]
    assert cpu.render["max_steps"] == DEFAULTS["render"]["max_steps"]
    assert set(PRESETS) == {"paper", "cpu"}


def test_overrides_apply_in_order_and_do_not_mutate_defaults() -> None:
    before = deep_merge(DEFAULTS, {})
    cfg = build_config("cpu", {"render": {"max_steps": 512}}, {"render": {"max_steps": 256}, "method": "hsm"})
    assert cfg.render["max_steps"] == 256 and cfg.method == "hsm"
    assert cfg.render["grid_resolution"] == 64  # the preset survives a partial override of its section
    assert before == DEFAULTS
    with pytest.raises(AttributeError):
        _ = cfg.no_such_section


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"method": "dropout"}, "method"),
        ({"budget_s": -5.0}, "budget_s"),
        ({"budget_s": 0}, "budget_s"),
        ({"seed": -1}, "seed"),
        ({"render": {"grid_resolution": 4}}, "render.grid_resolution"),
        ({"render": {"t_threshold": 1.5}}, "render.t_threshold"),
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"field": {"log2_table_size": 30}}, "field.log2_table_size"),
        ({"field": {"grid_convention": "ngp"}}, "field.grid_convention"),
        ({"mining": {"unbiased": "sometimes"}}, "mining.unbiased"),
        ({"eval": {"final_views": -1}}, "eval.final_views"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_key(override: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config("cpu", override)
    assert f"'{key}'" in str(info.value)


def test_unknown_keys_are_rejected_by_name() -> None:
    with pytest.raises(ConfigError) as info:
        build_config("cpu", {"render": {"max_step": 512}})
    assert "'render'" in str(info.value) and "max_step" in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_config("cpu", {"bogus_key": 1})
    assert "bogus_key" in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_config("cpu", {"render": 5})  # a section replaced by a scalar
    assert "'render'" in str(info.value)


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="laptop"):
        build_config("laptop")


def test_parse_assignment() -> None:
    assert parse_assignment("render.max_steps=512") == {"render": {"max_steps": 512}}
    assert isinstance(parse_assignment("render.max_steps=512")["render"]["max_steps"], int)
    assert parse_assignment("method=hsm") == {"method": "hsm"}
    assert parse_assignment("mining.unbiased=true") == {"mining": {"unbiased": True}}
    assert parse_assignment("optim.lr=0.002") == {"optim": {"lr": 0.002}}
    assert parse_assignment(" budget_s = 30") == {"budget_s": 30}
    assert parse_assignment("method=a=b") == {"method": "a=b"}  # only the first '=' splits
    cfg = build_config("cpu", parse_assignment("render.max_steps=512"))
    assert cfg.render["max_steps"] == 512
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignment("render.max_steps")
    with pytest.raises(ConfigError, match=r"render\.max_steps"):
        parse_assignment("render.max_steps=[1, 2")


def test_parse_assignment_accepts_scientific_notation() -> None:
    # PyYAML (YAML 1.1) reads "1e-3" as a *string*; a learning rate typed the usual way must be a number.
    assert parse_assignment("optim.lr=1e-3") == {"optim": {"lr": 1e-3}}
    assert build_config("cpu", parse_assignment("optim.eps=1e-15")).optim["eps"] == 1e-15


def test_cli_set_flags_become_overrides() -> None:
    args = build_parser().parse_args(
        ["train", "--data", "d", "--out", "o", "--budget", "12", "--set", "render.max_steps=512",
         "--set", "eval.n_evals=2", "--method", "hsm"]
    )  # fmt: skip
    cfg = build_config("cpu", *_overrides(args))
    assert cfg.render["max_steps"] == 512 and cfg.eval["n_evals"] == 2
    assert cfg.budget_s == 12.0 and cfg.method == "hsm"
    assert cfg.seed == DEFAULTS["seed"]  # flags left out do not override anything
