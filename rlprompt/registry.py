"""The extension points: one registry each for task families, task-model kinds, env kinds, agents, rewards and metrics.

A :class:`Registry` maps names to entries. Entries are registered by the package that
provides them (``rlprompt.task_models`` registers the task-model kinds, ``rlprompt.envs`` the
env kinds, ...); an entry may be given as a ``"module:attribute"`` string and is imported
the first time it is used. This module declares the registries but imports none of their
providers: a registry imports its provider package the first time it is asked for a
name, so the config layer can resolve ``task_model.kind``, ``env.kind`` or ``agent.name``
without importing anything above it (and without importing torch, since providers keep
heavy imports out of their ``__init__``).

Names can also be dotted paths to objects of installed modules (``mypkg.rewards:my_reward``)
where a registry allows it (rewards and metrics).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from rlprompt.errors import ConfigError

T = TypeVar("T")


def import_object(path: str) -> Any:
    """The object ``"package.module:attribute"`` (or ``"package.module.attribute"``) names."""
    module_name, _, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attribute:
        raise ConfigError(f"'{path}' is not a dotted path to an object (write 'package.module:name')")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import '{module_name}' for '{path}': {exc}") from None
    obj = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"module '{module_name}' has no attribute '{attribute}' (from '{path}')")
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Names -> entries of one extension point (see the module docstring)."""

    def __init__(self, what: str, provider: str | None = None, dotted_paths: bool = False) -> None:
        self.what = what
        self.provider = provider
        self.dotted_paths = dotted_paths
        self._entries: dict[str, Any] = {}
        self._provider_loaded = provider is None

    def _load_provider(self) -> None:
        if not self._provider_loaded:
            self._provider_loaded = True
            importlib.import_module(self.provider)  # type: ignore[arg-type]

    def register(self, name: str, entry: T | str) -> T | str:
        """Add ``entry`` (or a ``"module:attribute"`` string for it) under ``name``; a name is registered once."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.what} names must be non-empty strings, got {name!r}")
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.what} '{name}' is already registered")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests that register temporary entries)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        self._load_provider()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_provider()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(name, self[name]) for name in self.names()]

    def unknown(self, name: str) -> ConfigError:
        """The error for a name that is not registered (with the closest registered one)."""
        names = self.names()
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return ConfigError(f"unknown {self.what} '{name}'{hint}; registered: {names}")

    def __getitem__(self, name: str) -> T:
        self._load_provider()
        if name not in self._entries:
            if self.dotted_paths and isinstance(name, str) and ("." in name or ":" in name):
                return import_object(name)
            raise self.unknown(name)
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = self._entries[name] = import_object(entry)
        return entry

    def check(self, name: str) -> None:
        """Raise the unknown-name error unless ``name`` is registered (or, where allowed, an importable dotted path)."""
        if name in self:
            return
        if self.dotted_paths and ("." in name or ":" in name):
            import_object(name)
            return
        raise self.unknown(name)

    def raw(self, name: str) -> T | str:
        """The registered entry without importing it (a string for lazy entries)."""
        self._load_provider()
        if name not in self._entries:
            raise self.unknown(name)
        return self._entries[name]


TASKS: Registry[Any] = Registry("task family", provider="rlprompt.families")
"""``task`` -> a :class:`rlprompt.families.base.TaskFamily` (classification, generation)."""
TASK_MODELS: Registry[Any] = Registry("task model kind", provider="rlprompt.task_models")
"""``task_model.kind`` -> :class:`rlprompt.task_models.TaskModelSpec`."""
ENVS: Registry[Any] = Registry("env kind", provider="rlprompt.envs")
"""``env.kind`` -> :class:`rlprompt.envs.EnvSpec`."""
AGENTS: Registry[Any] = Registry("agent", provider="rlprompt.agents")
"""``agent.name`` -> :class:`rlprompt.agents.AgentSpec`."""
REWARDS: Registry[Any] = Registry("reward", provider="rlprompt.rewards", dotted_paths=True)
"""``reward.name`` -> a batch reward function (or a dotted path to one)."""
METRICS: Registry[Any] = Registry("metric", provider="rlprompt.rewards", dotted_paths=True)
"""Evaluation metric name -> a metric function (or a dotted path to one)."""
GENERATION_METRICS: Registry[Any] = Registry("generation metric", provider="rlprompt.rewards", dotted_paths=True)
"""Generation metric name -> ``fn(predictions, references) -> float``, the metric of a set of
greedy generations against their references (a dotted path to such a function also works)."""
