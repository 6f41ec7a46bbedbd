"""Config sections as frozen dataclasses: one place spells each key, its default, its bounds and why.

A section's fields are made with :func:`setting` (a key: default, JSON Schema, one line of doc),
:func:`section` (a nested section) or :func:`sections` (one section per entry of a registry, spliced
in at that place: the strategies' sections). The run config's JSON Schema (:func:`schema_of`), its
defaults (:func:`defaults_of`), its strict loading (:func:`from_dict`) and the dict written to
summary.json (:func:`to_dict`) are all generated from those fields, so a key exists only where a
dataclass declares it. Torch-free: ngp_ohem.config and every Snakemake process import it.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import Field, field, fields
from typing import Any

from ngp_ohem.errors import ConfigError

#: JSON-Schema bounds the sections share
POS_INT: dict[str, Any] = {"type": "integer", "minimum": 1}
NON_NEG_INT: dict[str, Any] = {"type": "integer", "minimum": 0}
POS_NUM: dict[str, Any] = {"type": "number", "exclusiveMinimum": 0}
FRACTION: dict[str, Any] = {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
UNIT: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1}
BOOL: dict[str, Any] = {"type": "boolean"}

Schema = dict[str, Any] | Callable[[], dict[str, Any]]
Registry = Callable[[], Mapping[str, type]]


def setting(default: Any, schema: Schema, doc: str, *, optional: bool = False) -> Any:
    """A key: its default, its JSON Schema (or a function returning it, when a registry names the values)
    and one line on what it is; ``optional``: left out of the defaults and of :func:`to_dict` while None."""
    return field(default=default, metadata={"schema": schema, "doc": doc, "optional": optional})


def section(cls: type, doc: str) -> Any:
    """A nested section (a dict in the config) whose keys are ``cls``'s fields."""
    return field(default_factory=cls, metadata={"section": cls, "doc": doc})


def sections(registry: Registry, doc: str) -> Any:
    """A {name: section} mapping whose names are top-level keys of their own (``registry()`` names them at
    each call, so an entry registered later is part of the schema, the defaults and the loading)."""
    return field(
        default_factory=lambda: {name: cls() for name, cls in registry().items()},
        metadata={"sections": registry, "doc": doc},
    )


def _members(cls: type) -> Iterator[tuple[str, Field[Any], type | None]]:
    """(key, its dataclass field, its section class or None) in declaration order; a ``sections`` field
    yields one member per registry entry."""
    for f in fields(cls):
        if "schema" in f.metadata:
            yield f.name, f, None
        elif "section" in f.metadata:
            yield f.name, f, f.metadata["section"]
        elif "sections" in f.metadata:
            for name, sub in f.metadata["sections"]().items():
                yield name, f, sub


def schema_of(cls: type) -> dict[str, Any]:
    """The JSON Schema of a section: every key's bounds, nested sections as objects, no other keys."""
    props: dict[str, Any] = {}
    for name, f, sub in _members(cls):
        if sub is not None:
            props[name] = schema_of(sub)
        else:
            schema = f.metadata["schema"]
            props[name] = dict(schema() if callable(schema) else schema)
    return {"type": "object", "additionalProperties": False, "properties": props}


def defaults_of(cls: type) -> dict[str, Any]:
    """Every key's default, nested as the config is (optional keys left out)."""
    out: dict[str, Any] = {}
    for name, f, sub in _members(cls):
        if sub is not None:
            out[name] = defaults_of(sub)
        elif not f.metadata["optional"]:
            out[name] = copy.deepcopy(f.default)
    return out


def key_paths(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key, e.g. ``render.max_steps`` (the names a config file or ``--set`` may use)."""
    out: list[str] = []
    for name, _, sub in _members(cls):
        out.extend(key_paths(sub, f"{prefix}{name}.") if sub is not None else [f"{prefix}{name}"])
    return out


def _suggestion(cls: type, prefix: str, key: str) -> str:
    """`` (did you mean 'x'?)`` for the closest key at that level, or the full path of a key of that
    name elsewhere (``max_steps`` at the top level: ``render.max_steps``); "" when nothing is close."""
    level = [name for name, _, _ in _members(cls)]
    close = difflib.get_close_matches(key, level, n=1)
    if close:
        return f" (did you mean '{prefix}{close[0]}'?)"
    elsewhere = [p for p in key_paths(cls, prefix) if p.rpartition(".")[2] == key]
    return f" (did you mean '{elsewhere[0]}'?)" if elsewhere else ""


def unknown_key(cls: type, data: Mapping[str, Any], prefix: str = "") -> str | None:
    """A one-line message naming the first key of ``data`` that ``cls`` does not declare (full dotted
    path, closest valid key), or None. Sections that are not mappings are left to the schema."""
    members = {name: sub for name, _, sub in _members(cls)}
    for key, value in data.items():
        if key not in members:
            return f"unknown config key '{prefix}{key}'{_suggestion(cls, prefix, str(key))}"
        sub = members[key]
        if sub is not None and isinstance(value, Mapping):
            found = unknown_key(sub, value, f"{prefix}{key}.")
            if found:
                return found
    return None


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """An instance of ``cls`` from a config dict holding every (non-optional) key and no other; a
    ConfigError naming the dotted key otherwise. Values are taken as they are (validate them first)."""
    problem = unknown_key(cls, data, prefix)
    if problem:
        raise ConfigError(problem)
    kwargs: dict[str, Any] = {}
    for name, f, sub in _members(cls):
        if name not in data:
            if sub is None and f.metadata["optional"]:
                continue
            raise ConfigError(f"config lacks key '{prefix}{name}'")
        value = data[name]
        if sub is None:
            kwargs[f.name] = copy.deepcopy(value)
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"invalid config value at '{prefix}{name}': {value!r} is not a mapping")
        built = from_dict(sub, value, f"{prefix}{name}.")
        if "sections" in f.metadata:
            kwargs.setdefault(f.name, {})[name] = built
        else:
            kwargs[f.name] = built
    for f in fields(cls):  # a sections field whose registry is empty
        if "sections" in f.metadata:
            kwargs.setdefault(f.name, {})
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """The config dict of an instance: the inverse of :func:`from_dict` (same keys, same order, same values)."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if "schema" in f.metadata:
            if not (f.metadata["optional"] and value is None):
                out[f.name] = copy.deepcopy(value)
        elif "section" in f.metadata:
            out[f.name] = to_dict(value)
        elif "sections" in f.metadata:
            out.update({name: to_dict(sub) for name, sub in value.items()})
    return out
