"""Tokenize-once templates and tensor splicing of prompts into pre-tokenized inputs.

A template such as ``"{sentence} {prompt}"`` (or ``"{context}\nQuestion: {question}\n{prompt}"``,
any named fields) becomes a :class:`TemplateLayout`: for each input (a text for the
``sentence`` field, or a mapping of field values) it yields the token ids *before* the prompt
slot and *after* it (special tokens included). Inputs are tokenized once and cached; prompts
are tokenized once per layout.
:func:`splice` then builds a padded batch for many (item, prompt) rows with tensor indexing,
so no string is re-tokenized per prompt. Whitespace that precedes a placeholder in the
template is tokenized together with the value (``" It was"``), which matches how BPE
tokenizers see the whole string.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch

from rlprompt.errors import ConfigError
from rlprompt.template import segments

Example = Union[str, Mapping[str, str]]
"""An input: a text (the ``sentence`` field) or a mapping of field values."""


def input_key(example: Example) -> str:
    """The cache key of an input: the text itself, or its fields as canonical JSON."""
    return example if isinstance(example, str) else json.dumps(dict(example), sort_keys=True, ensure_ascii=False)


def stop_cut(text: str, stops: Sequence[str], after_text: bool = False) -> int:
    """Where a generated ``text`` ends: the index of the first stop string in it, -1 for none.
    With ``after_text`` a stop inside the leading whitespace does not count (the output ends at
    the first stop after its first non-whitespace character; none while it has only whitespace)."""
    start = len(text) - len(text.lstrip()) if after_text else 0  # all whitespace: start = len(text), no stop found
    return min((i for i in (text.find(s, start) for s in stops) if i >= 0), default=-1)


def special_token_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special ids a tokenizer puts before and after a single sequence (e.g. CLS/SEP)."""
    probe = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(probe) + 1):
        if full[start : start + len(probe)] == probe:
            return full[:start], full[start + len(probe) :]
    return [], []  # pragma: no cover - every tokenizer we know keeps the text ids contiguous


@dataclass(frozen=True)
class _Chunk:
    kind: str  # "literal" | "field" | "prompt" | "mask"
    text: str = ""  # literal text, or the whitespace glued before a value
    name: str = ""  # the field's name


class TemplateLayout:
    """One template, tokenized piecewise so a prompt can be spliced in as ids or vectors."""

    def __init__(self, template: str, tokenizer: Any, max_sentence_tokens: int, add_special_tokens: bool = True):
        self.template = template
        self.tokenizer = tokenizer
        self.max_sentence_tokens = max_sentence_tokens
        self.frame = special_token_frame(tokenizer) if add_special_tokens else ([], [])
        chunks: list[_Chunk] = []
        for part, piece in segments(template):
            if part == "placeholder":
                name = piece
                kind = name if name in ("prompt", "mask") else "field"
                glue = ""
                if chunks and chunks[-1].kind == "literal" and kind != "mask":
                    literal = chunks.pop().text
                    stripped = literal.rstrip()
                    glue = literal[len(stripped) :]
                    if stripped:
                        chunks.append(_Chunk("literal", stripped))
                elif chunks and chunks[-1].kind == "literal" and kind == "mask":
                    literal = chunks.pop().text.rstrip()
                    if literal:
                        chunks.append(_Chunk("literal", literal))
                chunks.append(_Chunk(kind, glue, name if kind == "field" else ""))
            elif piece:
                chunks.append(_Chunk("literal", piece))
        self.chunks = chunks
        self.fields = list(dict.fromkeys(c.name for c in chunks if c.kind == "field"))
        self.has_prompt_slot = any(c.kind == "prompt" for c in chunks)
        self.prompt_glue = next((c.text for c in chunks if c.kind == "prompt"), "")
        slot = next((i for i, c in enumerate(chunks) if c.kind == "prompt"), None)
        after = chunks[slot + 1] if slot is not None and slot + 1 < len(chunks) else None
        self.prompt_follow = after.text if after is not None and after.kind == "literal" else ""
        """The literal text right after the prompt slot: a prompt that ends in whitespace (a block
        of demonstrations ending in a blank line) is tokenized with it, as the whole string is."""
        self._literal_cache: dict[str, list[int]] = {}
        self._text_cache: dict[str, tuple[list[int], list[int]]] = {}
        self._prompt_cache: dict[str, list[int]] = {}

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def _literal(self, text: str) -> list[int]:
        if text not in self._literal_cache:
            self._literal_cache[text] = self._ids(text)
        return self._literal_cache[text]

    def encode_texts(self, texts: Sequence[Example]) -> list[tuple[list[int], list[int]]]:
        """(pre, post) ids around the prompt slot for each input; tokenizes only unseen inputs."""
        keys = [input_key(t) for t in texts]
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in self._text_cache}
        if missing:
            values: dict[str, list[str]] = {name: [] for name in self.fields}
            for text in missing.values():
                fields = {"sentence": text} if isinstance(text, str) else text
                for name in self.fields:
                    if name not in fields:
                        raise ConfigError(
                            f"the template names '{{{name}}}', which the input lacks (fields: {sorted(fields)})"
                        )
                    values[name].append(fields[name])
            encoded = {}
            for chunk in self.chunks:
                if chunk.kind == "field" and chunk.name not in encoded:
                    ids = self.tokenizer([chunk.text + v for v in values[chunk.name]], add_special_tokens=False)[
                        "input_ids"
                    ]
                    encoded[chunk.name] = [list(i)[: self.max_sentence_tokens] for i in ids]
            for row, key in enumerate(missing):
                self._text_cache[key] = self._assemble({name: encoded[name][row] for name in encoded})
        return [self._text_cache[k] for k in keys]

    def _assemble(self, field_ids: Mapping[str, list[int]]) -> tuple[list[int], list[int]]:
        before, after = self.frame
        pre: list[int] = list(before)
        post: list[int] = []
        target = pre
        for chunk in self.chunks:
            if chunk.kind == "literal":
                target.extend(self._literal(chunk.text))
            elif chunk.kind == "field":
                target.extend(field_ids[chunk.name])
            elif chunk.kind == "mask":
                if self.tokenizer.mask_token_id is None:
                    raise ConfigError("template has '{mask}' but the tokenizer has no mask token")
                target.append(self.tokenizer.mask_token_id)
            elif chunk.kind == "prompt":
                target = post
        target.extend(after)
        return pre, post

    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of a discrete prompt at this template's slot (empty without a slot)."""
        if not self.has_prompt_slot or not prompt:
            return []
        if prompt not in self._prompt_cache:
            text = self.prompt_glue + prompt
            ids = self._ids(text)
            if self.prompt_follow and text != text.rstrip():
                # BPE tokenizers split trailing whitespace by what follows it ("\n\n" alone is one
                # token, before "Review" two): take the prompt's tokens from the joint tokenization
                joint, tail = self._ids(text + self.prompt_follow), self._literal(self.prompt_follow)
                if len(joint) > len(tail) and joint[-len(tail) :] == tail:
                    ids = joint[: -len(tail)]
            self._prompt_cache[prompt] = ids
        return self._prompt_cache[prompt]


def pad_lists(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``[R, W]`` id tensor and ``[R]`` lengths."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    width = int(lengths.max()) if len(rows) else 0
    out = torch.full((len(rows), max(width, 1)), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out.to(device), lengths.to(device)


@dataclass
class SplicedBatch:
    """A padded batch: ``input_ids``/``attention_mask`` ``[B, L]``; ``slot_mask`` marks prompt
    positions; ``lengths`` ``[B]``."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    slot_mask: torch.Tensor
    lengths: torch.Tensor


def _place(out: torch.Tensor, start: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor) -> None:
    width = values.shape[1]
    cols = start[:, None] + torch.arange(width, device=out.device)[None, :]
    valid = torch.arange(width, device=out.device)[None, :] < lengths[:, None]
    rows = torch.arange(out.shape[0], device=out.device)[:, None].expand(-1, width)
    out[rows[valid], cols[valid]] = values[valid]


def splice(
    pre: torch.Tensor,
    pre_len: torch.Tensor,
    prompt: torch.Tensor,
    prompt_len: torch.Tensor,
    post: torch.Tensor,
    post_len: torch.Tensor,
    pad_id: int,
) -> SplicedBatch:
    """Rows ``pre[:pre_len] + prompt[:prompt_len] + post[:post_len]``, right-padded.

    All arguments are per-row (already gathered by item/prompt index).
    """
    lengths = pre_len + prompt_len + post_len
    width = int(lengths.max())
    device = pre.device
    ids = torch.full((pre.shape[0], width), pad_id, dtype=torch.long, device=device)
    _place(ids, torch.zeros_like(pre_len), pre, pre_len)
    _place(ids, pre_len, prompt, prompt_len)
    _place(ids, pre_len + prompt_len, post, post_len)
    positions = torch.arange(width, device=device)[None, :]
    attention = positions < lengths[:, None]
    slot = (positions >= pre_len[:, None]) & (positions < (pre_len + prompt_len)[:, None])
    return SplicedBatch(ids, attention.long(), slot, lengths)
