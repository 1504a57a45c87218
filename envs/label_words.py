"""LabelWordsEnv: choose the word each class is read as (the verbalizers' words).

The instruction stays the config's; an episode picks one label word per class, class by class,
from that class's candidates. Candidates are a list (shared by every class, or one list per
class) or words of the task model's vocabulary: whole words that are one token, filtered by a
regular expression, and for each class the words the model finds most likely after the manual
prompt on that class's train examples among those that lean to it (more likely there than on
the train split as a whole): the rule of LM-BFF's automatic label-word search (Gao et al.,
2021), optionally led by the manual words.

Each class's verbalizer keeps its form with the word replaced (``" negative"`` -> ``" bad"``).
A language model reads every candidate's probability in the same forward pass, so one scoring
per example prices every choice of words: the task scores labeled prompts through one model
reading all candidates (:meth:`rlprompt.task.Task.label_word_model`), and a train example scored
once is a cache hit for every later choice. Calibration (``calibration: batch``) matters here:
without it frequent words win whatever the input.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
from gymnasium import spaces

from rlprompt.config import Config, check_ranges
from rlprompt.envs.base import Chooser, EnvConfig, PromptEnv, ScoreRequest, ScoreResult, minibatch_seed_option
from rlprompt.envs.vocab import build_vocabulary
from rlprompt.errors import ConfigError
from rlprompt.template import LabeledPrompt, verbalizer_with

if TYPE_CHECKING:
    from rlprompt.task import Task


@dataclass
class LabelWordsEnvConfig(EnvConfig):
    """``env`` section of the label-word env."""

    kind: str = "label_words"
    searches: ClassVar[str] = "label_words"
    """The prompt part this env searches: the classes' words (the instruction stays the config's)."""
    candidates: list[Any] | None = None
    """Label words to choose from: one list shared by every class, or one list per class; null:
    words of the task model's vocabulary ranked per class (``per_class``, ``vocab_regex``,
    ``vocab_top_k``)."""
    per_class: int = 16
    """Vocabulary candidates kept per class (the likeliest of those leaning to it on the train split)."""
    vocab_regex: str | None = "[a-z]{3,}"
    """Vocabulary words must match it in full (default: lower-case words of 3+ letters)."""
    vocab_top_k: int = 3000
    """The most frequent whole words of the vocabulary that are ranked (tokenizer order)."""
    seed_manual: bool = True
    """Each class's manual word is its first candidate (so the manual choice is in the space)."""
    batch_size: int | None = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, "env", at_least_one=("per_class", "vocab_top_k"))
        if self.candidates is not None:
            check_word_lists(self.candidates, "env.candidates")
        if self.vocab_regex is not None:
            try:
                re.compile(self.vocab_regex)
            except re.error as exc:
                raise ConfigError(
                    f"env.vocab_regex {self.vocab_regex!r} is not a valid regular expression: {exc}"
                ) from None


def check_word_lists(value: Any, key: str) -> None:
    """``value`` is a non-empty list of words, or of word lists (one per class), not a mix; each
    word non-empty text without surrounding spaces. One :class:`ConfigError` naming ``key``."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(
            f"{key} must be a non-empty list of label words (or of word lists, one per class), got {value!r}"
        )
    nested = [isinstance(c, (list, tuple)) for c in value]
    if any(nested) and not all(nested):
        raise ConfigError(f"{key} must be a list of words, or a list of word lists (one per class), not a mix")
    for word in (w for c in value for w in (c if isinstance(c, (list, tuple)) else [c])):
        if not isinstance(word, str) or not word.strip() or word != word.strip():
            raise ConfigError(f"{key}: {word!r} is not a word (non-empty text, no surrounding spaces)")


def rank_label_words(task: Task, words: Sequence[str], per_class: int, seed_manual: bool = True) -> list[list[str]]:
    """Per class, the ``per_class`` words of ``words`` with the highest mean log-probability
    (of the word's verbalizer after the manual prompt) on the class's train examples, among the
    words that lean to the class: whose mean there minus their mean over all train examples is
    highest for it (so a word goes to one class). With ``seed_manual`` each class's manual word
    leads its list. Likely words, not merely contrastive ones: a rare fragment can lean to a
    class by chance on a few examples."""
    import torch

    classes = task.num_classes
    manual = list(task.manual_label_words)
    train = task.data.split("train")
    labels = torch.as_tensor(train.labels, dtype=torch.long)
    missing = [c for c in range(classes) if not bool((labels == c).any())]
    if missing:
        raise ConfigError(
            f"label words are ranked on the train examples of each class, and class(es) {missing} "
            "have none: give env.candidates"
        )
    verbalizers = [[_form(task, c, w) for w in words] for c in range(classes)]
    task.label_word_model([v for per in verbalizers for v in per])  # one model reads every class's forms
    association, likelihood = [], []
    for c in range(classes):
        with torch.no_grad():
            scores = task.verbalizer_scores(task.config.manual_prompt, train.texts, verbalizers[c])  # [N, W]
        likelihood.append(scores[labels == c].mean(0))
        association.append(likelihood[-1] - scores.mean(0))
    favoured = torch.stack(association).argmax(0)  # [W]: the class each word leans to
    out: list[list[str]] = []
    for c in range(classes):
        order = [int(i) for i in torch.argsort(likelihood[c], descending=True) if int(favoured[i]) == c]
        ranked = [words[i] for i in order if words[i] not in manual]
        head = [manual[c]] if seed_manual else []
        out.append((head + ranked)[:per_class])
    return out


def _form(task: Task, c: int, word: str) -> str:
    """Class ``c``'s verbalizer reading ``word``."""
    return verbalizer_with(cast(list[str], task.config.verbalizers)[c], word)  # filled by the config's family


def label_word_candidates(
    task: Task,
    candidates: Sequence[Any] | None = None,
    per_class: int = 16,
    vocab_regex: str | None = "[a-z]{3,}",
    vocab_top_k: int = 3000,
    seed_manual: bool = True,
) -> list[list[str]]:
    """Each class's candidate label words: ``candidates`` (one list for every class, or one per
    class) or vocabulary words ranked by :func:`rank_label_words`; with ``seed_manual`` the
    manual word first. Checks that the task model reads label words, that each candidate is one
    token, and that every class keeps a word whatever the others take; builds the one model that
    reads them all (:meth:`rlprompt.task.Task.label_word_model`). Ranking costs one forward per
    train example."""
    from rlprompt.task_models.base import Relabelable  # (imports torch: not at env import)

    if candidates is not None:
        check_word_lists(list(candidates), "env.candidates")

    if not task.num_classes:
        raise ConfigError("label words are the classes' words: they are for classification tasks")
    classes = task.num_classes
    manual = list(task.manual_label_words)
    model = task.task_model
    if not isinstance(model, Relabelable):
        raise ConfigError(
            f"label words are read from a language model's head, and the task model "
            f"{type(model).__name__} scores classes otherwise: label-word search needs "
            "task_model.kind causal_lm or masked_lm"
        )
    if candidates is None:
        vocabulary = build_vocabulary(model, None, vocab_top_k, vocab_regex)
        single = [w for w in vocabulary if all(model.verbalizer_length(_form(task, c, w)) == 1 for c in range(classes))]
        if len(single) < classes:
            raise ConfigError(
                f"the vocabulary has {len(single)} whole words that are one token and match "
                f"env.vocab_regex {vocab_regex!r}: too few for {classes} classes"
            )
        out = rank_label_words(task, single, per_class, seed_manual)
    else:
        lists = (
            [list(c) for c in candidates] if isinstance(candidates[0], (list, tuple)) else [list(candidates)] * classes
        )
        if len(lists) != classes:
            raise ConfigError(
                f"env.candidates has {len(lists)} word lists for {classes} classes (give one per class, "
                "or one list shared by all)"
            )
        out = [list(dict.fromkeys(([manual[c]] if seed_manual else []) + lists[c])) for c in range(classes)]
    for c, words in enumerate(out):
        if len(words) < classes:  # the classes before it take at most classes - 1 of its words
            raise ConfigError(
                f"class {c} has {len(words)} candidate label word(s) {words}: each class needs at "
                f"least {classes} (one per class), so a word is left whatever the others take"
            )
        for word in words:
            length = model.verbalizer_length(_form(task, c, word))
            if length != 1:
                what = "is not in the tokenizer's vocabulary" if length == 0 else f"spans {length} tokens"
                raise ConfigError(
                    f"label word {word!r} of class {c} ({_form(task, c, word)!r}) {what}: label-word "
                    "search reads one token per class (every candidate's probability comes from "
                    "one forward)"
                )
    # one model reads every candidate: labeled prompts share its forwards and cache
    task.label_word_model([_form(task, c, w) for c in range(classes) for w in out[c]])
    return out


class LabelWordsEnv(PromptEnv):
    """The agent picks class ``c``'s word at step ``c``; the instruction is the config's.

    * Observation: ``MultiDiscrete([M + 1] * C)`` over at most ``M`` candidates per class: per
      class 0 (not chosen yet) or ``i + 1`` (its candidate ``i``).
    * Action: ``Discrete(M)``. :meth:`action_masks` marks the candidates of the class whose turn
      it is that no earlier class took (a masked action takes the first allowed candidate, so
      agents without masks run too).
    * Reward: 0 until the last class, then the task reward of the labeled prompt on a
      minibatch of ``split`` examples drawn then.
    """

    kind = "label_words"
    config_class = LabelWordsEnvConfig
    lm_calls_end_training = False
    _state_keys = ("_slots", "_minibatch_seed")

    def __init__(
        self,
        task: Task | None = None,
        config: Config | dict | str | None = None,
        overrides: list[str] | None = None,
        *,
        candidates: Sequence[Any] | None = None,
        per_class: int = 16,
        vocab_regex: str | None = "[a-z]{3,}",
        vocab_top_k: int = 3000,
        seed_manual: bool = True,
        batch_size: int | None = 16,
        split: str = "train",
        render_mode: str | None = None,
    ) -> None:
        super().__init__(task, config, overrides, batch_size=batch_size, split=split, render_mode=render_mode)
        task = self.task
        if not task.num_classes:
            raise ConfigError("env.kind=label_words chooses the classes' words: it is for classification tasks")
        if task.shows_demos:
            raise ConfigError(
                "env.kind=label_words keeps the instruction and searches the classes' words: remove "
                "'{demos}' from the template (demonstrations are searched with env.kind: demos)"
            )
        self.instruction = task.config.manual_prompt
        before = task.task_model.stats.lm_calls
        self.candidates = label_word_candidates(task, candidates, per_class, vocab_regex, vocab_top_k, seed_manual)
        self.setup_lm_calls = task.task_model.stats.lm_calls - before
        classes = task.num_classes
        self.size = max(len(words) for words in self.candidates)
        self.observation_space = spaces.MultiDiscrete(np.full(classes, self.size + 1, dtype=np.int64))
        self.action_space = spaces.Discrete(self.size)
        self._slots: list[int] = []
        self._minibatch_seed: int | None = None

    @classmethod
    def from_config(cls, task: Task, config: LabelWordsEnvConfig) -> LabelWordsEnv:
        return cls(
            task=task,
            candidates=config.candidates,
            per_class=config.per_class,
            vocab_regex=config.vocab_regex,
            vocab_top_k=config.vocab_top_k,
            seed_manual=config.seed_manual,
            batch_size=config.batch_size,
        )

    # ------------------------------------------------------------ slot choices

    @property
    def episode_length(self) -> int:
        return len(self.candidates)

    def episode_over(self) -> bool:
        return len(self._slots) >= len(self.candidates)

    def mask_of(self, slots: Sequence[int]) -> np.ndarray:
        """The candidates the next class (after ``slots``) may take: its own, not taken before."""
        mask: np.ndarray = np.zeros(self.size, dtype=bool)
        c = len(slots)
        if c >= len(self.candidates):
            return mask
        taken = {self.candidates[k][i] for k, i in enumerate(slots)}
        for i, word in enumerate(self.candidates[c]):
            mask[i] = word not in taken
        return mask

    swappable = False
    """Each slot is its own class's: exchanging two would read one class's list with another's index."""

    def mask_at(self, slots: Sequence[int], position: int) -> np.ndarray:
        """Class ``position``'s candidates that no other class took."""
        taken = {self.candidates[c][i] for c, i in enumerate(slots) if c != position}
        mask: np.ndarray = np.zeros(self.size, dtype=bool)
        for i, word in enumerate(self.candidates[position]):
            mask[i] = word not in taken
        return mask

    def action_masks(self) -> np.ndarray:
        return self.mask_of(self._slots)

    def sample_action(self, rng: np.random.Generator) -> int:
        return int(rng.choice(np.flatnonzero(self.action_masks())))

    def observation_of(self, slots: Sequence[int]) -> np.ndarray:
        obs: np.ndarray = np.zeros(len(self.candidates), dtype=np.int64)
        obs[: len(slots)] = np.asarray(slots, dtype=np.int64) + 1
        return obs

    def _allowed(self, slots: Sequence[int], action: int) -> int:
        """``action`` where the mask allows it, else the class's first allowed candidate."""
        mask = self.mask_of(slots)
        return action if mask[action] else int(np.flatnonzero(mask)[0])

    def decode(self, choose: Chooser) -> LabeledPrompt:
        slots: list[int] = []
        while len(slots) < len(self.candidates):
            slots.append(
                self._allowed(slots, self.discrete_action(choose(self.observation_of(slots), self.mask_of(slots))))
            )
        return self.prompt_text(slots)

    def prompt_text(self, slots: Sequence[int]) -> LabeledPrompt:
        """The labeled prompt of the chosen words (classes not chosen yet keep a word of their
        own: the manual one, or their first candidate no other class took)."""
        words = [self.candidates[c][i] for c, i in enumerate(slots)]
        manual = self.task.manual_label_words
        for c in range(len(words), len(self.candidates)):
            options = [manual[c], *self.candidates[c]]
            words.append(next(w for w in options if w not in words))
        return LabeledPrompt(self.instruction, tuple(words))

    def current_prompt_text(self) -> str:
        return self.prompt_text(self._slots).describe()

    def default_prompt(self) -> LabeledPrompt:
        return LabeledPrompt(self.instruction, self.task.manual_label_words)

    def shared_minibatch(self, seed: int) -> dict[str, Any]:
        """Reset options under which copies reset together score on one seeded minibatch."""
        return {"minibatch_seed": int(seed)}

    # ------------------------------------------------------------ episodes

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed, options=options)
        self._minibatch_seed = minibatch_seed_option(options)
        self._slots = []
        self._last_result = None
        return self.observation_of(self._slots), self._info(None)

    def _minibatch(self) -> np.ndarray:
        if self._minibatch_seed is None or self.batch_size is None:
            return self._draw_indices()
        order = np.random.default_rng(self._minibatch_seed).permutation(self.num_examples)
        return np.sort(order[: self.batch_size])

    def _apply(self, action: Any) -> ScoreRequest | None:
        if self.episode_over():
            raise ConfigError("the episode is over (every class has its word): call reset()")
        self._slots.append(self._allowed(self._slots, self.discrete_action(action)))
        if not self.episode_over():
            return None
        return self._request(self.prompt_text(self._slots), self._minibatch())

    def _finish(self, result: ScoreResult | None) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward = 0.0
        if result is not None:
            self._last_result = result
            reward = result.reward
        words = [self.candidates[c][i] for c, i in enumerate(self._slots)]
        info = self._info(result, label_words=words)
        return self.observation_of(self._slots), float(reward), self.episode_over(), False, info


__all__ = ["LabelWordsEnv", "LabelWordsEnvConfig", "label_word_candidates", "rank_label_words"]
