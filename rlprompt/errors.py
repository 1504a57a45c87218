"""Exceptions with messages meant for users: the CLI prints them as one line."""

from __future__ import annotations


class RLPromptError(Exception):
    """Base class for errors caused by user input (configs, data, models, rewards)."""


class ConfigError(RLPromptError, ValueError):
    """A config key is unknown, mistyped or fails a cross-field check."""


class DataError(RLPromptError, ValueError):
    """A dataset file, column, split or label is missing or inconsistent."""


class ModelLoadError(RLPromptError, OSError):
    """A task model could not be loaded (missing path, hub id while offline, wrong kind)."""


class RewardError(RLPromptError, ValueError):
    """Scores given to a reward are unusable (non-finite, wrong shape)."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when empty), for one-line errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]
