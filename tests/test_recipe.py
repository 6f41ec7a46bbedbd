"""The recipe table: the paper preset holds the authors' values, and runs name their deviations."""

from __future__ import annotations

from pathlib import Path

import pytest

from ngp_ohem import recipe, settings
from ngp_ohem.config import RunConfig, build_config
from ngp_ohem.report import readme

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("item", [i for i in recipe.ITEMS if i.keys], ids=lambda i: i.name)
def test_paper_preset_holds_the_authors_values(item: recipe.Item) -> None:
    paper = build_config("paper").to_dict()
    for key, authors in item.keys.items():
        assert recipe.same_value(recipe.lookup(paper, key), authors), f"{item.name}: paper {key} != authors' {authors}"


def test_every_cpu_deviation_has_a_reason_and_is_named() -> None:
    cpu = build_config("cpu").to_dict()
    named = recipe.deviations(cpu)
    for item in recipe.ITEMS:
        differs = any(not recipe.same_value(recipe.lookup(cpu, k), v) for k, v in item.keys.items())
        if differs:
            assert item.why_cpu, f"{item.name}: cpu differs from the authors without a reason"
            assert any(n.startswith(item.name + " (") for n in named), item.name
    paper_named = recipe.deviations(build_config("paper").to_dict())
    assert all(n.endswith("(not built yet)") for n in paper_named)  # paper departs only where nothing is built


def test_a_changed_value_is_reported_by_key() -> None:
    cfg = build_config("paper", {"optim": {"beta2": 0.99}}).to_dict()
    assert "Adam (optim.beta2=0.99)" in recipe.deviations(cfg)


def test_every_recipe_key_is_a_key_of_the_typed_config() -> None:
    """A renamed key must not leave a recipe row reading a path that no longer exists."""
    paths = set(settings.key_paths(RunConfig))
    paper = build_config("paper")
    for item in recipe.ITEMS:
        for key in item.keys:
            assert key in paths, f"{item.name}: {key} is not a config key"
            section, _, name = key.rpartition(".")
            node = paper.arms[section] if section in paper.arms else (getattr(paper, section) if section else paper)
            assert getattr(node, name) == recipe.lookup(paper.to_dict(), key), key  # typed and dict views agree


def test_every_row_names_a_source_line() -> None:
    for item in recipe.ITEMS:
        assert any(ch.isdigit() for ch in item.source) and (".py" in item.source or ".sh" in item.source
                                                            or ".cu" in item.source), item.name  # fmt: skip


def test_readme_recipe_section_is_the_generated_table() -> None:
    text = (ROOT / "README.md").read_text()
    assert readme.RECIPE_START in text, "README lacks the recipe markers"
    section = text.split(readme.RECIPE_START, 1)[1].split(readme.RECIPE_END, 1)[0]
    assert section.strip() == recipe.markdown_table().strip(), "run python -m ngp_ohem.report.readme --recipe-only"
