"""The one place that knows the template syntax: placeholders, rendering, and demonstrations.

A template is text with ``{name}`` placeholders: ``{prompt}`` (the searched instruction),
``{demos}`` (the demonstrations, rendered one after another), ``{mask}`` (masked LMs) and the
input's fields (``{sentence}`` for classification; ``{context}``, ``{question}``, ``{source}``
... for generation). A demonstration template renders one train example with its answer:
``{label_word}`` (classification: the class's verbalizer, stripped) or ``{answer}``
(generation: the first reference), e.g. ``"Review: {sentence}\\nSentiment: {label_word}\\n\\n"``.

A prompt is an instruction, an ordered list of demonstrations and the label words. Every part
the config fixes is written into the template the task model sees (:func:`model_template`),
and the searched part fills its single prompt slot: the instruction for the instruction envs
(``{prompt}``), the rendered demonstrations for the demonstration env (``{demos}``, then the
instruction is the config's ``prompt``). Demonstrations come first, so their key/value cache is
computed once per prompt and shared by the examples (the causal LM's prompt-first layout).

Nothing here imports torch or a model: the config checks templates with it, task models
tokenize what it renders (:mod:`rlprompt.task_models.sequences`), the demonstration env
renders and parses demonstration blocks with :class:`DemoPool`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rlprompt.checkpoint import checkpoint_type
from rlprompt.errors import ConfigError

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""A ``{name}`` placeholder (group 1: the name)."""
SLOTS = ("prompt", "demos", "mask")
"""Placeholders that are not input fields."""
ANSWER_FIELDS = ("label_word", "answer")
"""What a demonstration template shows after its input: the class's word, or the reference."""


def placeholders(text: str) -> list[str]:
    """The placeholder names of ``text`` in order (repeats kept)."""
    return PLACEHOLDER.findall(text)


def segments(text: str) -> list[tuple[str, str]]:
    """``text`` as ``("literal", text)`` and ``("placeholder", name)`` pieces, in order (no empty literals)."""
    out: list[tuple[str, str]] = []
    position = 0
    for match in PLACEHOLDER.finditer(text):
        if match.start() > position:
            out.append(("literal", text[position : match.start()]))
        out.append(("placeholder", match.group(1)))
        position = match.end()
    if position < len(text):
        out.append(("literal", text[position:]))
    return out


def input_fields(template: str) -> list[str]:
    """The input fields a template names (slots excluded), in order of first use."""
    return list(dict.fromkeys(n for n in placeholders(template) if n not in SLOTS))


def check_placeholders(name: str, text: str, known: Sequence[str]) -> None:
    """Every ``{word}`` in ``text`` must be one of ``known`` (a typo such as ``{promt}`` would
    otherwise stay in the text literally); one :class:`ConfigError` names the first unknown one."""
    for match in PLACEHOLDER.finditer(text):
        if match.group(1) not in known:
            close = difflib.get_close_matches(match.group(1), list(known), n=1)
            hint = f" (did you mean '{{{close[0]}}}'?)" if close else ""
            allowed = ", ".join(f"{{{k}}}" for k in known)
            raise ConfigError(f"{name} has an unknown placeholder '{match.group(0)}'{hint}; allowed: {allowed}")


_GLUED = re.compile(r"(\s*)\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render(template: str, values: Mapping[str, str], *, strict: bool = False) -> str:
    """Fill ``template``'s placeholders from ``values``; the whitespace before an empty value
    goes with it (as the tokenized layouts of local models drop it). Placeholders without a
    value stay as they are, or with ``strict`` are one :class:`ConfigError`."""

    def fill(match: re.Match[str]) -> str:
        value = values.get(match.group(2))
        if value is None:
            if strict:
                raise ConfigError(
                    f"the template {template!r} names '{{{match.group(2)}}}', which has no value "
                    f"(given: {sorted(values)})"
                )
            return match.group(0)
        return match.group(1) + value if value else ""

    return _GLUED.sub(fill, template)


def example_fields(example: str | Mapping[str, str]) -> dict[str, str]:
    """An input's field values: a text is the ``sentence`` field."""
    return {"sentence": example} if isinstance(example, str) else {k: str(v) for k, v in example.items()}


def has_demos_slot(template: str) -> bool:
    return "demos" in placeholders(template)


def model_template(template: str, instruction: str) -> str:
    """The template a task model sees. Without ``{demos}`` it is ``template`` itself (the
    instruction is searched at ``{prompt}``); with it, the instruction is fixed text and
    ``{demos}`` becomes the model's prompt slot (the demonstrations are searched)."""
    if not has_demos_slot(template):
        return template
    if placeholders(instruction):
        raise ConfigError(
            f"the prompt {instruction!r} has a placeholder ('{{...}}'): with '{{demos}}' in the template "
            "the prompt is fixed text written into it"
        )
    return template.replace("{prompt}", instruction).replace("{demos}", "{prompt}")


def shows_input(prompt: str, example: str | Mapping[str, str]) -> bool:
    """Whether ``prompt`` shows this input: every one of its (non-empty) field values appears in
    it verbatim. An example a prompt shows as a demonstration is never scored with that prompt."""
    values = [v.strip() for v in example_fields(example).values()]
    return bool(values) and all(v and v in prompt for v in values)


@checkpoint_type
@dataclass(frozen=True)
class LabeledPrompt:
    """A prompt with its own label words: the instruction ``text`` at the template's prompt slot,
    scored with ``label_words[c]`` as class ``c``'s word in place of the config's (each class's
    verbalizer keeps its form: ``" {word}"``, ``"{prompt} {word}."`` ...; :func:`verbalizer_with`).
    What the label-word env searches; hashable, so trackers and caches key on it."""

    text: str
    label_words: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise ConfigError(f"a labeled prompt's text must be a str, got {type(self.text).__name__}")
        words = self.label_words
        if isinstance(words, str) or not isinstance(words, (list, tuple)):
            raise ConfigError(
                f"label_words must be a list of words (one per class), got {type(words).__name__} {words!r:.60}"
            )
        if not all(isinstance(w, str) and w.strip() and w == w.strip() for w in words):
            raise ConfigError(f"label_words must be non-empty words without surrounding spaces, got {list(words)}")
        if len(set(words)) != len(words):
            raise ConfigError(f"label_words must be distinct (one per class), got {list(words)}")
        object.__setattr__(self, "label_words", tuple(words))

    def describe(self) -> str:
        """The prompt as one line: ``'text' [word0/word1/...]``."""
        return f"{self.text!r} [{'/'.join(self.label_words)}]"


_WORD = re.compile(r"\w+")


def _last_word(verbalizer: str) -> re.Match[str]:
    matches = list(_WORD.finditer(verbalizer.replace("{prompt}", " " * len("{prompt}"))))
    if not matches:
        raise ConfigError(f"verbalizer {verbalizer!r} has no word for a label word to replace")
    return matches[-1]


def label_word_of(verbalizer: str) -> str:
    """The word of ``verbalizer`` a label word replaces (its last word): ``" negative"`` ->
    ``"negative"``, ``"{prompt} terrible."`` -> ``"terrible"``, ``" very bad"`` -> ``"bad"``."""
    return _last_word(verbalizer).group(0)


def verbalizer_with(verbalizer: str, word: str) -> str:
    """``verbalizer`` with ``word`` in place of its last word (what a label word replaces; the
    rest of its form stays): ``" negative"`` -> ``" bad"``, ``"{prompt} terrible."`` -> ``"{prompt} bad."``."""
    last = _last_word(verbalizer)
    return verbalizer[: last.start()] + word + verbalizer[last.end() :]


@dataclass
class DemoPool:
    """The examples demonstrations are drawn from, each rendered once by the demonstration
    template: ``texts[i]`` is example ``i``'s demonstration, ``labels[i]`` its class (None for
    generation). A block of demonstrations is their texts joined in order."""

    demo_template: str
    examples: list[str | Mapping[str, str]]
    answers: list[str]
    labels: list[int | None]
    texts: list[str] = field(init=False)

    def __post_init__(self) -> None:
        if not self.examples:
            raise ConfigError("the demonstration pool is empty: a demonstration env needs train examples to show")
        if not (len(self.examples) == len(self.answers) == len(self.labels)):
            raise ConfigError("the demonstration pool needs one answer and one label per example")
        answer = next((n for n in ANSWER_FIELDS if n in placeholders(self.demo_template)), "label_word")
        self.texts = [
            render(self.demo_template, {**example_fields(ex), answer: a}, strict=True)
            for ex, a in zip(self.examples, self.answers, strict=True)
        ]
        self._index = {text: i for i, text in reversed(list(enumerate(self.texts)))}

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def num_classes(self) -> int:
        return 0 if self.labels[0] is None else max(int(label) for label in self.labels if label is not None) + 1

    def render(self, ids: Sequence[int]) -> str:
        """The block of demonstrations ``ids``, in order."""
        return "".join(self.texts[i] for i in ids)

    def parse(self, block: str) -> list[int] | None:
        """The pool ids whose demonstrations make up ``block`` in order (the first of identical
        ones), or None when it is not such a block."""
        ids: list[int] = []
        position = 0
        lengths = sorted({len(t) for t in self.texts}, reverse=True)
        while position < len(block):
            found = None
            for length in lengths:  # the longest demonstration that continues the block
                index = self._index.get(block[position : position + length])
                if index is not None:
                    found = index
                    break
            if found is None:
                return None
            ids.append(found)
            position += len(self.texts[found])
        return ids


__all__ = [
    "ANSWER_FIELDS",
    "PLACEHOLDER",
    "SLOTS",
    "DemoPool",
    "LabeledPrompt",
    "check_placeholders",
    "example_fields",
    "has_demos_slot",
    "input_fields",
    "label_word_of",
    "model_template",
    "placeholders",
    "render",
    "segments",
    "shows_input",
    "verbalizer_with",
]
