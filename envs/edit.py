"""PromptEditEnv: improve a manual prompt by a bounded number of edits (TEMPERA/GrIPS style)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces

from rlprompt.config import Config, check_ranges
from rlprompt.envs.base import Chooser, EnvConfig, PromptEnv, ScoreRequest, ScoreResult
from rlprompt.envs.selection import load_candidates
from rlprompt.envs.vocab import build_vocabulary
from rlprompt.errors import ConfigError
from rlprompt.template import LabeledPrompt

if TYPE_CHECKING:
    from rlprompt.task import Task


@dataclass
class EditEnvConfig(EnvConfig):
    """``env`` section of the edit env."""

    kind: str = "edit"
    pool: list[str] | str | None = None
    """What insert/replace edits draw from. null: the task model's ``pool_size`` most common whole
    words; a list: those phrases, all of them; a file of candidates as ``env.candidates`` reads it
    (e.g. the selection env's candidate instructions): the distinct words of its prompts (outer
    punctuation stripped but a final colon kept, as in "Answer:") in first-seen order, cut to ``pool_size`` -
    GrIPS-style edits in the task's own words instead of the language's commonest ones."""
    pool_size: int = 50
    """Size of the default pool and the most a file's pool keeps."""
    max_units: int | None = None
    """Longest prompt, in words; null: the start prompt's words plus 3, at least 8 (so a long
    instruction can still grow)."""
    max_edits: int = 5
    """Edits per episode."""
    label_words: list[Any] | None = None
    """Label-word edits (TEMPERA's verbalizer edits) beside the instruction's: the words a ``label``
    edit may set a class's word to (one list for every class, or one per class; the manual word
    is each class's first), so the prompt becomes the instruction with its own label words;
    null: instruction edits only. Classification on an LM task model; one token each."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, "env", at_least_one=("pool_size", "max_units", "max_edits"))
        if self.label_words is not None:
            from rlprompt.envs.label_words import check_word_lists

            check_word_lists(self.label_words, "env.label_words")
        if self.pool is not None and not isinstance(self.pool, (str, list)):
            raise ConfigError(f"env.pool must be null, a list of phrases or a candidates file, got {self.pool!r}")
        if isinstance(self.pool, list):
            if not self.pool:
                raise ConfigError("env.pool is an empty list (null: the task model's most common words)")
            if not all(isinstance(p, str) and p.strip() for p in self.pool):
                raise ConfigError(f"env.pool: every entry must be a non-empty string, got {self.pool!r}")

    @staticmethod
    def upgrade_saved(section: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        """Runs saved when ``max_units`` defaulted to 8 stored it; where null now builds the same
        env (the start prompt has at most 5 words) it reads as null, so they compare equal."""
        prompt = config.get("prompt")
        if isinstance(prompt, str) and section.get("max_units") == default_max_units(prompt):
            return {**section, "max_units": None}
        return section


POOL_PUNCTUATION = ".,;!?\"'()"


def pool_from_file(source: str | os.PathLike[str], size: int) -> list[str]:
    """The distinct words of the prompts of a candidates file (read by
    :func:`~rlprompt.envs.selection.load_candidates`: ``#`` comments and blank lines skipped),
    outer punctuation stripped but a final colon kept, in first-seen order, at most ``size``."""
    try:
        candidates = load_candidates(source)
    except ConfigError as exc:
        raise ConfigError(f"env.pool: {exc}") from None
    words: dict[str, None] = {}
    for candidate in candidates:
        text = candidate["prompt"] if isinstance(candidate, dict) else candidate
        for word in text.split():
            colon = word.rstrip(POOL_PUNCTUATION).endswith(":")  # "Answer:", "negative):" keep a colon
            word = word.strip(POOL_PUNCTUATION + ":")
            if word:
                words[word + ":" if colon else word] = None
    if not words:
        raise ConfigError(f"env.pool: {source} holds no words")
    return list(words)[:size]


def default_max_units(start_prompt: str) -> int:
    """``max_units: null``: room for the start prompt and 3 more words, at least 8."""
    return max(8, len(start_prompt.split()) + 3)


Edit = tuple[str, int, int]  # (operation, position, pool index or second position)


def enumerate_edits(max_units: int, pool_size: int, label_sizes: Sequence[int] = ()) -> list[Edit]:
    """Every edit the action space names: insert/replace a pool phrase, delete, swap, set class
    ``c``'s word to its candidate ``j`` (``label_sizes[c]`` candidates each), stop (last)."""
    edits: list[Edit] = []
    edits += [("insert", i, j) for i in range(max_units) for j in range(pool_size)]
    edits += [("replace", i, j) for i in range(max_units) for j in range(pool_size)]
    edits += [("delete", i, -1) for i in range(max_units)]
    edits += [("swap", i, k) for i in range(max_units) for k in range(i + 1, max_units)]
    edits += [("label", c, j) for c, size in enumerate(label_sizes) for j in range(size)]
    edits.append(("stop", -1, -1))
    return edits


class PromptEditEnv(PromptEnv):
    """Start from the manual prompt (split into words) and edit it phrase by phrase.

    * Action: ``Discrete(len(edits))`` over :func:`enumerate_edits`; an edit that does not
      apply to the current prompt (position past its end, insert into a full prompt) is a
      no-op that still uses up an edit. :meth:`action_masks` marks the applicable ones.
    * Observation: ``MultiDiscrete`` of the prompt's unit ids (0 = empty, ``u + 1`` = unit ``u``
      of :attr:`units`: the start prompt's words, then the pool), with ``label_words`` each
      class's word (``j + 1``: its candidate ``j``), plus the edits used.
    * With ``label_words``, ``label`` edits set a class's word (to one no other class reads), and
      prompts are :class:`~rlprompt.template.LabeledPrompt`: the instruction with its own words.
    * Reward: improvement of the task score on the episode's minibatch (drawn at reset), so an
      episode's rewards sum to final minus start score. Terminates on ``stop``; truncates after
      ``max_edits`` edits. ``reset(options={"prompt": text})`` starts from another prompt made
      of known units (what hill-climbing search does).
    """

    kind = "edit"
    config_class = EditEnvConfig
    reset_scorings = 1
    _state_keys = ("_prompt", "_words", "_edits_used", "_score", "_start_score", "_stopped", "_changed")

    def __init__(
        self,
        task: Task | None = None,
        config: Config | dict | str | None = None,
        overrides: list[str] | None = None,
        *,
        start_prompt: str | None = None,
        pool: Sequence[str] | str | os.PathLike[str] | None = None,
        pool_size: int = 50,
        max_units: int | None = None,
        max_edits: int = 5,
        label_words: Sequence[Any] | None = None,
        batch_size: int | None = 16,
        split: str = "train",
        render_mode: str | None = None,
    ) -> None:
        super().__init__(task, config, overrides, batch_size=batch_size, split=split, render_mode=render_mode)
        self.start_prompt = self.task.config.prompt if start_prompt is None else start_prompt
        self.word_candidates: list[list[str]] = []
        """Per class, the words ``label`` edits choose from (the manual word first); empty: none."""
        if label_words is not None:
            from rlprompt.envs.label_words import label_word_candidates

            if self.task.shows_demos:
                raise ConfigError(
                    "env.label_words edits the classes' words of an instruction prompt: remove '{demos}' "
                    "from the template"
                )
            self.word_candidates = label_word_candidates(self.task, list(label_words))
        max_units = default_max_units(self.start_prompt) if max_units is None else max_units
        if max_units < 1 or max_edits < 1:
            raise ConfigError(f"max_units and max_edits must be >= 1, got {max_units} and {max_edits}")
        start_units = self.start_prompt.split()
        if len(start_units) > max_units:
            raise ConfigError(f"start prompt has {len(start_units)} words, more than max_units={max_units}")
        if isinstance(pool, (str, os.PathLike)):
            pool = pool_from_file(pool, pool_size)
        self.pool = build_vocabulary(self.task.task_model, pool, pool_size if pool is None else None)
        self.units = list(dict.fromkeys(start_units + list(self.pool)))
        self._unit_id = {u: i for i, u in enumerate(self.units)}
        self._pool_ids = [self._unit_id[p] for p in self.pool]
        self._start_ids = [self._unit_id[u] for u in start_units]
        self.max_units = max_units
        self.max_edits = max_edits
        self.edits = enumerate_edits(max_units, len(self.pool), [len(w) for w in self.word_candidates])
        self.action_space = spaces.Discrete(len(self.edits))
        words_nvec = (
            [max(len(w) for w in self.word_candidates) + 1] * len(self.word_candidates) if self.word_candidates else []
        )
        nvec = np.array([len(self.units) + 1] * max_units + words_nvec + [max_edits + 1], dtype=np.int64)
        self.observation_space = spaces.MultiDiscrete(nvec)
        self._prompt: list[int] = []
        self._words: list[int] = [0] * len(self.word_candidates)
        self._edits_used = 0
        self._score = 0.0
        self._start_score = 0.0
        self._stopped = False
        self._changed = False

    @classmethod
    def from_config(cls, task: Task, config: EditEnvConfig) -> PromptEditEnv:
        return cls(
            task=task,
            pool=config.pool,
            pool_size=config.pool_size,
            max_units=config.max_units,
            max_edits=config.max_edits,
            label_words=config.label_words,
            batch_size=config.batch_size,
        )

    @property
    def episode_length(self) -> int:
        return self.max_edits

    def sample_action(self, rng: np.random.Generator) -> int:
        return int(rng.choice(np.flatnonzero(self.action_masks()[:-1])))  # an applicable edit, never "stop"

    def decode(self, choose: Chooser) -> Any:
        units, words = list(self._start_ids), [0] * len(self.word_candidates)
        for used in range(self.max_edits):
            action = self.discrete_action(choose(self.observation_of(units, used, words), self.mask_of(units, words)))
            if self.edits[action][0] == "stop":
                break
            units, words = self.apply_edit(units, action), self.apply_label(words, action)
        return self.prompt_of(units, words)

    def prompt_of(self, units: Sequence[int], words: Sequence[int] | None = None) -> Any:
        """The prompt of units (and, with label edits, each class's word; None: the manual ones):
        text or a labeled prompt."""
        if not self.word_candidates:
            return self.text_of(units)
        words = [0] * len(self.word_candidates) if words is None else words
        return LabeledPrompt(self.text_of(units), tuple(self.word_candidates[c][j] for c, j in enumerate(words)))

    def current_prompt(self) -> Any:
        return self.prompt_of(self._prompt, self._words)

    def default_prompt(self) -> Any:
        """The start prompt as written (with label edits: read with the manual words)."""
        if not self.word_candidates:
            return self.start_prompt
        return LabeledPrompt(self.start_prompt, tuple(words[0] for words in self.word_candidates))

    @property
    def lm_calls_end_training(self) -> bool:
        """Without label edits every new instruction costs LM calls; with them, word edits are
        read from cached forwards, so an LM-call budget alone might never end training."""
        return not self.word_candidates

    def current_prompt_text(self) -> str:
        prompt = self.current_prompt()
        return prompt.describe() if isinstance(prompt, LabeledPrompt) else prompt

    def observation_of(self, units: Sequence[int], edits_used: int, words: Sequence[int] = ()) -> np.ndarray:
        """The observation of a prompt (unit ids; with label edits each class's word) after
        ``edits_used`` edits, statelessly."""
        classes = len(self.word_candidates)
        obs: np.ndarray = np.zeros(self.max_units + classes + 1, dtype=np.int64)
        obs[: len(units)] = np.asarray(units, dtype=np.int64) + 1
        if classes:
            obs[self.max_units : self.max_units + classes] = (
                np.asarray(list(words) or [0] * classes, dtype=np.int64) + 1
            )
        obs[-1] = edits_used
        return obs

    def _observation(self) -> np.ndarray:
        return self.observation_of(self._prompt, self._edits_used, self._words)

    def _info(self, result: ScoreResult | None, **extra: Any) -> dict[str, Any]:
        info = super()._info(result, **extra)
        info["prompt_value"] = self.current_prompt()  # what a search restarts from (text or labeled prompt)
        return info

    def text_of(self, units: Sequence[int]) -> str:
        return " ".join(self.units[u] for u in units)

    def words_of(self, prompt: LabeledPrompt) -> list[int]:
        """Each class's candidate index of a labeled prompt's words (one clear error otherwise)."""
        if len(prompt.label_words) != len(self.word_candidates) or any(
            w not in self.word_candidates[c] for c, w in enumerate(prompt.label_words)
        ):
            raise ConfigError(
                f"prompt {prompt.describe()} has label words this edit env cannot read (its candidates: "
                f"{self.word_candidates})"
            )
        return [self.word_candidates[c].index(w) for c, w in enumerate(prompt.label_words)]

    def units_of(self, prompt: str) -> list[int]:
        words = prompt.split()
        unknown = [w for w in words if w not in self._unit_id]
        if unknown or len(words) > self.max_units:
            raise ConfigError(f"prompt {prompt!r} is not expressible in this edit env (unknown units {unknown})")
        return [self._unit_id[w] for w in words]

    def apply_edit(self, units: Sequence[int], action: int) -> list[int]:
        """The prompt's units after edit ``action`` (unchanged when it does not apply, or when it
        is a ``label`` edit); pure."""
        op, i, k = self.edits[int(action)]
        out = list(units)
        if op in ("stop", "label") or not self.applicable(self.edits[int(action)], len(out)):
            return out
        if op == "insert":
            out.insert(i, self._pool_ids[k])
        elif op == "replace":
            out[i] = self._pool_ids[k]
        elif op == "delete":
            del out[i]
        elif op == "swap":
            out[i], out[k] = out[k], out[i]
        return out

    def apply_label(self, words: Sequence[int], action: int) -> list[int]:
        """Each class's word after edit ``action`` (a ``label`` edit that applies changes one); pure."""
        op, c, j = self.edits[int(action)]
        out = list(words)
        if op == "label" and self._label_applicable(out, c, j):
            out[c] = j
        return out

    def _label_applicable(self, words: Sequence[int], c: int, j: int) -> bool:
        """Class ``c`` may read its candidate ``j``: a change, and a word no other class reads."""
        word = self.word_candidates[c][j]
        return words[c] != j and all(self.word_candidates[k][i] != word for k, i in enumerate(words) if k != c)

    def mask_of(self, units: Sequence[int], words: Sequence[int] | None = None) -> np.ndarray:
        words = self._words if words is None else words
        return np.array(
            [
                self._label_applicable(words, e[1], e[2]) if e[0] == "label" else self.applicable(e, len(units))
                for e in self.edits
            ],
            dtype=bool,
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed, options=options)
        start = (options or {}).get("prompt")
        if start is not None and not isinstance(start, (str, LabeledPrompt)):
            raise ConfigError(f"reset options['prompt'] must be a prompt string, got {type(start).__name__} {start!r}")
        words = [0] * len(self.word_candidates)
        if isinstance(start, LabeledPrompt):
            words = self.words_of(start)
            start = start.text
        units = list(self._start_ids) if start is None else self.units_of(start)
        self._prompt, self._words = units, words  # both checked before either changes
        self._edits_used = 0
        self._stopped = False
        self._episode_indices = self._draw_indices()
        result = self._score_now(self._request(self.current_prompt()))
        self._last_result = result
        self._score = self._start_score = result.reward
        return self._observation(), self._info(result, start_score=self._start_score)

    def episode_over(self) -> bool:
        return self._stopped or self._edits_used >= self.max_edits

    def applicable(self, edit: Edit, length: int) -> bool:
        op, i, k = edit
        if op == "insert":
            return length < self.max_units and i <= length
        if op in ("replace", "delete"):
            return i < length
        if op == "swap":
            return k < length
        return True

    def action_masks(self) -> np.ndarray:
        """Boolean mask of the edits that change (or stop) the current prompt."""
        return self.mask_of(self._prompt)

    def _apply(self, action: Any) -> ScoreRequest | None:
        if self._stopped or self._edits_used >= self.max_edits:
            raise ConfigError("the episode is over (stopped or out of edits): call reset()")
        index = self.discrete_action(action)
        if self.edits[index][0] == "stop":
            self._stopped = True
            return None
        self._edits_used += 1
        before = (self._prompt, self._words)
        self._prompt, self._words = self.apply_edit(self._prompt, index), self.apply_label(self._words, index)
        self._changed = (self._prompt, self._words) != before
        return self._request(self.current_prompt()) if self._changed else None

    def _finish(self, result: ScoreResult | None) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward = 0.0
        if result is not None:
            reward = result.reward - self._score
            self._score = result.reward
            self._last_result = result
        truncated = not self._stopped and self._edits_used >= self.max_edits
        info = self._info(result, score=self._score, start_score=self._start_score, edits_used=self._edits_used)
        return self._observation(), float(reward), self._stopped, truncated, info
