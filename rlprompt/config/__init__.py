"""Typed experiment configs: dataclasses loaded from YAML with strict keys and ``--set`` overrides.

Every section is a dataclass whose fields are documented in place. Unknown or mistyped keys
are rejected with the dotted key named (and a close match suggested); values are checked
against the field's type (finite numbers only); cross-field checks live in each
``__post_init__``. The resolved config is saved as JSON next to every result
(:func:`save_config`).

Config files, bench files, candidate files and ``--set`` values are read as plain data (text,
numbers, true/false, null, lists, mappings with text keys: what JSON holds) within fixed limits
(:data:`MAX_FILE_BYTES`, :data:`MAX_DEPTH`, :data:`MAX_NODES`, :data:`MAX_ALIASES`), counted
while a YAML document is composed, before anything is built; every breach or other YAML type
(dates, ``!!binary``, ``!!set``, ``!!python/...``) is one :class:`ConfigError` naming the file
and line. An empty or comment-only config file is an error, not the defaults (``{}`` is).

Three sections are *variants*: ``task_model`` (by ``kind``), ``env`` (by ``kind``) and
``agent`` (by ``name``). Their fields are those of the config dataclass registered for that
kind or name in :mod:`rlprompt.registry` (a :class:`Variant` annotation says which registry),
so a ``config.json`` holds exactly the fields of the kinds it uses, and an unknown field of
an agent is reported as ``agent.<field>``. This package imports nothing above it: a registry
loads its provider package (torch-free at import) the first time a name is looked up.

The package's modules: :mod:`~rlprompt.config.schema` (the sections' dataclasses and
:class:`Config`), :mod:`~rlprompt.config.fields` (typed fields, variant sections, range checks),
:mod:`~rlprompt.config.reading` (the bounded YAML/JSON reader), :mod:`~rlprompt.config.overrides`
(``--set``), :mod:`~rlprompt.config.migration` (older saved configs); loading, saving and the
names users import are here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from typing import Annotated, Any

from rlprompt.config.fields import (
    AGENT_SECTION,
    DEFAULT_AGENT,
    DEFAULT_TASK_MODEL,
    ENV_SECTION,
    TASK_MODEL_SECTION,
    Variant,
    _build,
    _field_hints,
    check_ranges,
)
from rlprompt.config.migration import upgrade_saved_config
from rlprompt.config.overrides import apply_overrides, parse_override
from rlprompt.config.reading import (
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_NODES,
    PLAIN_DATA,
    check_plain_data,
    json_object_without_duplicates,
    parse_json_text,
    parse_yaml_text,
    read_json_file,
    read_text_file_limited,
    read_yaml,
)
from rlprompt.config.schema import (
    GENERATION_REWARDS,
    LEGACY_SELECTION,
    SELECTION_SPLITS,
    BudgetConfig,
    Config,
    DataConfig,
    DemosConfig,
    FinetuneConfig,
    GenerationConfig,
    OutputConfig,
    PPOFinetuneConfig,
    RewardConfig,
    SelectionConfig,
)
from rlprompt.errors import ConfigError


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None, cls: type = Config) -> Any:
    """Build a config dataclass from a plain dict plus ``--set`` overrides."""
    if not isinstance(data, dict):
        raise ConfigError("a config must be a mapping of sections")
    return _build(cls, apply_overrides(data, overrides or []))


def load_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None, cls: type = Config) -> Any:
    """Load a YAML config (or the defaults when ``path`` is None) with overrides.

    Relative data paths in the file are resolved against the file's directory's project root
    only by the user: we keep paths as written, relative to the working directory.
    """
    data: dict[str, Any] = {}
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise ConfigError(
            f"a config path must be a str or a path (or None for the defaults), got {type(path).__name__} {path!r}"
        )
    if overrides is not None and (
        isinstance(overrides, (str, bytes))
        or not isinstance(overrides, (list, tuple))
        or not all(isinstance(o, str) for o in overrides)
    ):
        raise ConfigError(f"overrides must be a list of 'key=value' strings, got {overrides!r}")
    if path is not None:
        loaded = read_yaml(path)
        if loaded is None:  # an empty or comment-only file (or a bare null) is a mistake, not "all defaults"
            raise ConfigError(
                f"config file {path} holds no settings (it is empty or only comments); "
                "a config that keeps every default is '{}'"
            )
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, not a {type(loaded).__name__}")
        data = loaded
    return config_from_dict(data, overrides, cls)


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as plain data (what ``config.json`` holds); variant sections carry their kind or name."""
    return _to_data(config)


def _to_data(obj: Any, variant: Variant | None = None) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        hints = _field_hints(type(obj))
        out = {f.name: _to_data(getattr(obj, f.name), _variant_of(hints.get(f.name))) for f in dataclasses.fields(obj)}
        if variant is not None and variant.key not in out:
            out = {variant.key: variant.name_of(obj), **out}
        return out
    if isinstance(obj, dict):
        return {k: _to_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_data(v) for v in obj]
    return obj


def _variant_of(tp: Any) -> Variant | None:
    if typing.get_origin(tp) is Annotated:
        return next((m for m in tp.__metadata__ if isinstance(m, Variant)), None)
    return None


def save_config(config: Any, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as JSON, atomically."""
    from rlprompt.io import atomic_write_text

    atomic_write_text(path, json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n")


__all__ = [
    "AGENT_SECTION",
    "BudgetConfig",
    "Config",
    "DEFAULT_AGENT",
    "DEFAULT_TASK_MODEL",
    "DataConfig",
    "DemosConfig",
    "ENV_SECTION",
    "FinetuneConfig",
    "GENERATION_REWARDS",
    "GenerationConfig",
    "LEGACY_SELECTION",
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "OutputConfig",
    "PLAIN_DATA",
    "PPOFinetuneConfig",
    "RewardConfig",
    "SELECTION_SPLITS",
    "SelectionConfig",
    "TASK_MODEL_SECTION",
    "Variant",
    "apply_overrides",
    "check_plain_data",
    "check_ranges",
    "config_from_dict",
    "config_to_dict",
    "json_object_without_duplicates",
    "load_config",
    "parse_json_text",
    "parse_override",
    "parse_yaml_text",
    "read_json_file",
    "read_text_file_limited",
    "read_yaml",
    "save_config",
    "upgrade_saved_config",
]
