"""Whole words of a tokenizer: the default action vocabulary of token-level envs."""

from __future__ import annotations

from typing import Any

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
