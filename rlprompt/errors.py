"""Exceptions with messages meant for users: the CLI prints them as one line."""

from __future__ import annotations


class RLPromptError(Exception):
    """Base class for errors caused by user input (configs, data, models, rewards).

    Its message is one line: line breaks and other control characters that a message quotes
    from the input (a key, a value, a file's text) are shown escaped (``\\n``)."""

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (one_line(args[0]),)
        super().__init__(*args)


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(9), *range(11, 32), 127, 0x85)} | {
    10: "\\n",
    13: "\\r",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}
"""Characters escaped in messages: every control character but the tab, and what ``str.splitlines`` breaks at."""


def one_line(text: str) -> str:
    """``text`` with control characters (line breaks included) escaped, outer whitespace cut."""
    return text.strip().translate(_CONTROL)


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
