"""Action vocabularies for token-level envs: whole words from a tokenizer, a word list, a regex."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rlprompt.errors import ConfigError

_WORD_START_MARKERS = ("Ġ", "▁")  # byte-level BPE (GPT-2, RoBERTa) and SentencePiece


def tokenizer_words(tokenizer: Any) -> list[str]:
    """Whole-word tokens of a tokenizer, most frequent first (vocabulary-id order).

    WordPiece: tokens without the ``##`` continuation prefix; BPE/SentencePiece: tokens with
    the word-start marker (marker removed). Only alphabetic words of 2+ letters (and "a", "I")
    are kept; special tokens are dropped.
    """
    vocab = tokenizer.get_vocab()
    specials = set(getattr(tokenizer, "all_special_tokens", []))
    ordered = sorted(vocab.items(), key=lambda item: item[1])
    marked = sum(1 for token, _ in ordered if token.startswith(_WORD_START_MARKERS))
    uses_markers = marked > len(ordered) // 10
    words: list[str] = []
    for token, _ in ordered:
        if token in specials:
            continue
        if uses_markers:
            if not token.startswith(_WORD_START_MARKERS):
                continue
            word = token[1:]
        else:
            if token.startswith("##"):
                continue
            word = token
        if word.isascii() and word.isalpha() and (len(word) > 1 or word in ("a", "I")):
            words.append(word)
    return list(dict.fromkeys(words))


def build_vocabulary(
    task_model: Any,
    words: Sequence[str] | None = None,
    top_k: int | None = 1000,
    regex: str | None = None,
) -> list[str]:
    """The env's vocabulary: ``words`` if given, else the task model's tokenizer words (or a
    toy model's ``vocabulary``), filtered by ``regex`` (full match) and cut to ``top_k``."""
    if words is not None:
        candidates = [w for w in words if isinstance(w, str) and w.strip()]
        if len(candidates) != len(list(words)):
            raise ConfigError("vocabulary entries must be non-empty strings")
    elif getattr(task_model, "tokenizer", None) is not None:
        candidates = tokenizer_words(task_model.tokenizer)
    elif getattr(task_model, "vocabulary", None) is not None:
        candidates = list(task_model.vocabulary)
    else:
        raise ConfigError("this task model has no tokenizer: pass vocabulary=[...] words")
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
