"""Run configuration: typed sections, the generated schema and defaults, presets, overrides, ``--set``
parsing and validation errors that name the key."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ngp_ohem import settings, strategies
from ngp_ohem.cli import _overrides, build_parser
from ngp_ohem.config import (
    DEFAULTS,
    PRESETS,
    FieldSettings,
    RenderSettings,
    RunConfig,
    build_config,
    deep_merge,
    defaults,
    parse_assignment,
    schema,
    validate,
)
from ngp_ohem.errors import ConfigError

# The hand-written schema and build_config's dicts before the typed config (tests/reference/config.json).
REFERENCE = json.loads((Path(__file__).parent / "reference" / "config.json").read_text())
BUILT_IN_ARMS = ("baseline", "hsm", "hsm_unbiased", "soft_mining", "error_map")


def test_defaults_and_presets_are_valid() -> None:
    validate(DEFAULTS)
    paper = build_config("paper")
    cpu = build_config("cpu")
    assert isinstance(paper, RunConfig) and paper.to_dict() == {**DEFAULTS, "preset": "paper"}
    assert cpu.preset == "cpu"
    assert paper.field.log2_table_size == 19 and paper.render.grid_resolution == 128
    assert paper.render.target_samples == 1 << 18
    assert cpu.field.log2_table_size == 17 and cpu.render.grid_resolution == 64
    assert paper.field.grid_convention == cpu.field.grid_convention == "gridencoder"  # the authors' lattice
    assert cpu.render.target_samples == 1 << 16 and cpu.render.initial_rays == 1024
    # A preset changes only what it names; the rest of the section keeps the defaults.
    assert cpu.field.n_levels == DEFAULTS["field"]["n_levels"]
    assert cpu.render.max_steps == DEFAULTS["render"]["max_steps"]
    assert set(PRESETS) == {"paper", "cpu"}


def test_overrides_apply_in_order_and_do_not_mutate_defaults() -> None:
    before = deep_merge(DEFAULTS, {})
    cfg = build_config("cpu", {"render": {"max_steps": 512}}, {"render": {"max_steps": 256}, "method": "hsm"})
    assert cfg.render.max_steps == 256 and cfg.method == "hsm"
    assert cfg.render.grid_resolution == 64  # the preset survives a partial override of its section
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
    assert "'render.max_step'" in str(info.value) and "did you mean 'render.max_steps'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_config("cpu", {"bogus_key": 1})
    assert "'bogus_key'" in str(info.value)
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
    assert cfg.render.max_steps == 512
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignment("render.max_steps")
    with pytest.raises(ConfigError, match=r"render\.max_steps"):
        parse_assignment("render.max_steps=[1, 2")


def test_parse_assignment_accepts_scientific_notation() -> None:
    # PyYAML (YAML 1.1) reads "1e-3" as a *string*; a learning rate typed the usual way must be a number.
    assert parse_assignment("optim.lr=1e-3") == {"optim": {"lr": 1e-3}}
    assert build_config("cpu", parse_assignment("optim.eps=1e-15")).optim.eps == 1e-15


def test_cli_set_flags_become_overrides() -> None:
    args = build_parser().parse_args(
        ["train", "--data", "d", "--out", "o", "--budget", "12", "--set", "render.max_steps=512",
         "--set", "eval.n_evals=2", "--method", "hsm"]
    )  # fmt: skip
    cfg = build_config("cpu", *_overrides(args))
    assert cfg.render.max_steps == 512 and cfg.eval.n_evals == 2
    assert cfg.budget_s == 12.0 and cfg.method == "hsm"
    assert cfg.seed == DEFAULTS["seed"]  # flags left out do not override anything


# -- the typed config: one place spells each key -----------------------------------------------------------------
def test_generated_schema_is_the_hand_written_one() -> None:
    """The schema generated from the dataclasses accepts exactly what the hand-written one did."""
    assert strategies.names() == BUILT_IN_ARMS  # the reference holds the built-in arms only
    assert schema() == REFERENCE["schema"]


@pytest.mark.parametrize("case", sorted(REFERENCE["cases"]))
def test_built_configs_are_the_dicts_of_before(case: str) -> None:
    """summary.json, checkpoints and provenance record the same dict as before: keys, order and values."""
    preset, overrides = REFERENCE["cases"][case]
    built = build_config(preset, *overrides).to_dict()
    expected = REFERENCE["configs"][case]
    assert json.dumps(built) == json.dumps(expected)  # order and float spelling too
    assert json.dumps(built, sort_keys=True, indent=2) == json.dumps(expected, sort_keys=True, indent=2)  # write_json


def test_defaults_come_from_the_dataclasses() -> None:
    assert defaults() == DEFAULTS == {k: v for k, v in REFERENCE["configs"]["paper"].items() if k != "preset"}
    assert DEFAULTS["render"] == dataclasses.asdict(RenderSettings())
    assert "preset" not in DEFAULTS  # set by build_config only


def test_every_key_declares_its_schema_and_doc() -> None:
    classes = [RunConfig, *(f.metadata["section"] for f in dataclasses.fields(RunConfig) if "section" in f.metadata)]
    for cls in [*classes, *strategies.sections().values()]:
        for f in dataclasses.fields(cls):
            assert {"schema", "section", "sections"} & set(f.metadata), f"{cls.__name__}.{f.name}: not a key"
            assert f.metadata["doc"], f"{cls.__name__}.{f.name}: no doc"


def test_sections_are_typed_and_frozen() -> None:
    cfg = build_config("cpu", {"method": "hsm", "mining": {"min_fraction": 0.1}})
    assert isinstance(cfg.field, FieldSettings) and isinstance(cfg.render, RenderSettings)
    assert cfg.arms["mining"] == strategies.MiningSettings(min_fraction=0.1) == cfg.strategy_settings()
    assert build_config("cpu").strategy_settings() is None  # the baseline has no section
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.render.max_steps = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        _ = cfg.no_such_section  # no __getattr__ fallback into a dict


def test_from_dict_is_strict_and_inverts_to_dict() -> None:
    cfg = build_config("paper", {"method": "soft_mining", "render": {"grid_cascades": 2}})
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert RunConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "preset"}).preset is None
    lacking = cfg.to_dict()
    del lacking["render"]["min_step"]
    with pytest.raises(ConfigError, match=r"lacks key 'render\.min_step'"):
        RunConfig.from_dict(lacking)
    with pytest.raises(ConfigError, match=r"unknown config key 'eval\.n_eval' \(did you mean 'eval\.n_evals'\?\)"):
        RunConfig.from_dict(deep_merge(cfg.to_dict(), {"eval": {"n_eval": 3}}))


@pytest.mark.parametrize(
    ("override", "key", "suggestion"),
    [
        ({"budget_sec": 30}, "budget_sec", "budget_s"),  # top level
        ({"render": {"target_sampels": 1024}}, "render.target_sampels", "render.target_samples"),  # a section
        ({"optim": {"learning_rate": 0.01}}, "optim.learning_rate", None),  # nothing close: no guess
        ({"max_steps": 512}, "max_steps", "render.max_steps"),  # a section's key at the top level
        ({"rendr": {"max_steps": 512}}, "rendr", "render"),
        ({"mining": {"min_fractoin": 0.1}}, "mining.min_fractoin", "mining.min_fraction"),  # an arm's section
    ],
)
def test_a_typo_is_an_error_naming_the_dotted_key(override: dict, key: str, suggestion: str | None) -> None:
    for path in ("dict", "--set"):
        given = override
        if path == "--set":  # the same key typed on the command line
            dotted, value = next(iter(flat(override).items()))
            given = parse_assignment(f"{dotted}={value}")
        with pytest.raises(ConfigError) as info:
            build_config("cpu", given)
        message = str(info.value)
        assert f"unknown config key '{key}'" in message and "\n" not in message, (path, message)
        if suggestion:
            assert f"did you mean '{suggestion}'?" in message, (path, message)
        else:
            assert "did you mean" not in message
        with pytest.raises(ConfigError, match=f"'{key}'"):  # what a workflow's train_overrides go through
            validate(deep_merge(DEFAULTS, override))


def flat(config: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict = {}
    for k, v in config.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_key_paths_name_every_key() -> None:
    paths = settings.key_paths(RunConfig)
    assert {"seed", "render.max_steps", "eval.ema_every", "mining.unbiased", "error_map.resolution"} <= set(paths)
    assert len(paths) == len(flat(build_config("cpu").to_dict()))
