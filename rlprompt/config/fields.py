"""Typed fields: a value checked against its dataclass annotation (nested sections built, unknown
keys named with a close match, finite numbers only), variant sections (:class:`Variant`: the
dataclass registered for a kind or name) and range checks (:func:`check_ranges`)."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from typing import Annotated, Any, Literal

from rlprompt.errors import ConfigError
from rlprompt.registry import AGENTS, ENVS, TASK_MODELS, Registry

DEFAULT_AGENT = "ppo"
DEFAULT_TASK_MODEL = "encoder"


class Variant:
    """Annotation metadata of a variant section: the dataclass registered in ``registry`` under
    the section's ``key`` value (``default`` when absent). Registry entries expose ``config_class``."""

    def __init__(self, registry: Registry[Any], key: str, default: str, deferred: str | None = None) -> None:
        self.registry = registry
        self.key = key
        self.default = default
        self.deferred = deferred
        """A name the containing config resolves itself (``env.kind: auto``)."""

    def config_class(self, name: str, where: str) -> type:
        if not isinstance(name, str):
            raise ConfigError(f"config key '{where}.{self.key}' must be a string, got {name!r}")
        if name not in self.registry:
            names = self.registry.names()
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown {self.registry.what} '{name}'{hint}: config key '{where}.{self.key}' must be one of {names}"
            )
        return self.registry[name].config_class

    def resolve(self, value: Any, where: str) -> Any:
        """A mapping (or a dataclass built in Python) -> the registered config dataclass instance."""
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            self.name_of(value)  # a registered kind's config
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{where}' must be a mapping, got {type(value).__name__}")
        name = value.get(self.key, self.default)
        cls = self.config_class(name, where)
        data = dict(value)
        if self.key not in {f.name for f in dataclasses.fields(cls)}:
            data.pop(self.key, None)
        return _build(cls, data, where)

    def name_of(self, instance: Any) -> str:
        """The registered name of a variant section's dataclass instance."""
        if self.key in {f.name for f in dataclasses.fields(instance)}:
            return str(getattr(instance, self.key))
        for name in self.registry.names():
            if self.registry[name].config_class is type(instance):
                return name
        raise ConfigError(f"{type(instance).__name__} is not the config of a registered {self.registry.what}")


TASK_MODEL_SECTION = Variant(TASK_MODELS, "kind", DEFAULT_TASK_MODEL)
ENV_SECTION = Variant(ENVS, "kind", "auto", deferred="auto")
AGENT_SECTION = Variant(AGENTS, "name", DEFAULT_AGENT)


def check_ranges(
    config: Any,
    prefix: str,
    *,
    positive: typing.Sequence[str] = (),
    non_negative: typing.Sequence[str] = (),
    at_least_one: typing.Sequence[str] = (),
    unit_interval: typing.Sequence[str] = (),
) -> None:
    """Raise one :class:`ConfigError` naming the first field outside its range (None values are skipped)."""
    rules = [
        (positive, lambda v: v > 0, "> 0"),
        (non_negative, lambda v: v >= 0, ">= 0"),
        (at_least_one, lambda v: v >= 1, ">= 1"),
        (unit_interval, lambda v: 0 <= v <= 1, "in [0, 1]"),
    ]
    for names, ok, text in rules:
        for name in names:
            value = getattr(config, name)
            if value is not None and not ok(value):
                raise ConfigError(f"{prefix}.{name} must be {text}, got {value!r}")


# ---------------------------------------------------------------- loading and overrides


def _field_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (building nested dataclasses)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        variant = next((m for m in tp.__metadata__ if isinstance(m, Variant)), None)
        if variant is None:
            return _coerce(value, args[0], key)
        if (
            variant.deferred is not None
            and isinstance(value, dict)
            and value.get(variant.key, variant.default) == variant.deferred
        ):
            return dict(value)  # resolved by the containing config's __post_init__
        return variant.resolve(value, key)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {type(value).__name__}")
        return _build(typing.cast(type, tp), value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors: list[ConfigError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            optional = " (or null)" if type(None) in args else ""
            raise ConfigError(f"{errors[0]}{optional}")
        names = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"config key '{key}' must be {names}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}' must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {type(value).__name__}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {type(value).__name__}")
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "2e-2" (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}': unsupported field type {tp}")  # pragma: no cover


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _unknown_key(cls: type, key: str, prefix: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f"; valid keys: {names}"
    return ConfigError(f"unknown config key '{prefix}{key}'{hint}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = _field_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    dotted = f"{prefix}." if prefix else ""
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(cls, str(key), dotted)
        kwargs[key] = _coerce(value, hints[key], f"{dotted}{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - guarded by the key check above
        raise ConfigError(f"config section '{prefix or 'top'}': {exc}") from None
