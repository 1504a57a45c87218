"""Action vocabularies for token-level envs: whole words from a tokenizer, a word list, a regex."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rlprompt.envs.base import is_integer
from rlprompt.errors import ConfigError


def build_vocabulary(
    task_model: Any,
    words: Sequence[str] | None = None,
    top_k: int | None = 1000,
    regex: str | None = None,
) -> list[str]:
    """The env's vocabulary: ``words`` if given, else the task model's whole words
    (``TaskModel.words()``), filtered by ``regex`` (full match) and cut to ``top_k``."""
    if words is not None and (isinstance(words, (str, bytes)) or not hasattr(words, "__iter__")):
        raise ConfigError(f"vocabulary must be a list of words, got {type(words).__name__} {words!r:.60}")
    if top_k is not None and not is_integer(top_k):
        raise ConfigError(f"vocab_top_k must be an integer >= 1 (or None), got {type(top_k).__name__} {top_k!r}")
    if regex is not None and not isinstance(regex, str):
        raise ConfigError(f"vocab_regex must be a string (or None), got {type(regex).__name__} {regex!r}")
    if words is not None:
        candidates = [w for w in words if isinstance(w, str) and w.strip()]
        if len(candidates) != len(list(words)):
            raise ConfigError("vocabulary entries must be non-empty strings")
    else:
        candidates = list(task_model.words())
    if regex is not None:
        try:
            pattern = re.compile(regex)
        except re.error as exc:
            raise ConfigError(f"vocab_regex {regex!r} is not a valid regular expression: {exc}") from None
        candidates = [w for w in candidates if pattern.fullmatch(w)]
    candidates = list(dict.fromkeys(candidates))
    if top_k is not None:
        if top_k < 1:
            raise ConfigError(f"vocab_top_k must be >= 1, got {top_k}")
        candidates = candidates[:top_k]
    if not candidates:
        raise ConfigError("the vocabulary is empty (check vocabulary=, vocab_regex= and vocab_top_k=)")
    return candidates
