"""PromptSelectionEnv: pick one of K candidate prompts (or template/verbalizer sets): a noisy bandit."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces

from rlprompt.config import Config, read_json_file, read_text_file_limited, read_yaml
from rlprompt.envs.base import Chooser, EnvConfig, PromptEnv, ScoreRequest, ScoreResult
from rlprompt.errors import ConfigError

if TYPE_CHECKING:
    from rlprompt.task import Task


@dataclass
class SelectionEnvConfig(EnvConfig):
    """``env`` section of the selection env."""

    kind: str = "selection"
    candidates: str = "sentiment"
    """A built-in candidate set (``sentiment``, ``topic``) or a file of candidates (.txt: one
    prompt per line; .json/.yaml: prompts or mappings with ``prompt``)."""


BUILTIN_CANDIDATES = ("sentiment", "topic")
Candidate = str | dict[str, Any]


def _read_candidates_file(path: Path) -> list[Candidate]:
    """A candidates file's items, read within the limits of config files (size, nesting, values:
    :func:`rlprompt.config.read_yaml`); every problem is one :class:`ConfigError` naming the file."""
    if path.suffix in (".json", ".yaml", ".yml"):
        reader = read_json_file if path.suffix == ".json" else read_yaml
        loaded = reader(path, "candidates file")
        if not isinstance(loaded, list):
            raise ConfigError(f"{path}: candidates file must hold a list")
        return loaded
    text = read_text_file_limited(path, "candidates file")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def load_candidates(source: Sequence[Candidate] | str | os.PathLike[str]) -> list[Candidate]:
    """Candidates from a list, a built-in name (``sentiment``, ``topic``) or a file.

    ``.txt``: one prompt per line (blank lines and ``#`` comments skipped); ``.json``/``.yaml``:
    a list of prompts or of mappings with ``prompt`` and optional ``template``/``verbalizers``.
    """
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        if name in BUILTIN_CANDIDATES:
            path = Path(str(resources.files("rlprompt.envs") / "candidates" / f"{name}.txt"))
        else:
            path = Path(name)
            if not path.is_file():
                raise ConfigError(f"candidates file not found: {path} (or use one of {list(BUILTIN_CANDIDATES)})")
        items: list[Candidate] = _read_candidates_file(path)
    else:
        items = list(source)
    for item in items:
        if isinstance(item, dict):
            unknown = set(item) - {"prompt", "template", "verbalizers"}
            if unknown or "prompt" not in item:
                raise ConfigError(f"candidate {item} needs 'prompt' and may have only 'template', 'verbalizers'")
        elif not isinstance(item, str):
            raise ConfigError(f"candidate {item!r} must be a prompt string or a mapping")
    if not items:
        raise ConfigError("PromptSelectionEnv needs at least one candidate (K = 0 given)")
    return items


class PromptSelectionEnv(PromptEnv):
    """Single-step episodes: the action picks candidate ``k``; reward = its task reward on a
    minibatch drawn from ``self.np_random`` (different draws give different rewards).

    Candidates that change the template or verbalizers get their own task sharing the loaded
    model's weights. Observation: ``Discrete(1)`` (the bandit has no state).
    """

    kind = "selection"
    config_class = SelectionEnvConfig
    _state_keys = ("_choice",)

    def __init__(
        self,
        task: Task | None = None,
        config: Config | dict | str | None = None,
        overrides: list[str] | None = None,
        *,
        candidates: Sequence[Candidate] | str = "sentiment",
        batch_size: int | None = 16,
        split: str = "train",
        render_mode: str | None = None,
    ) -> None:
        super().__init__(task, config, overrides, batch_size=batch_size, split=split, render_mode=render_mode)
        self.candidates = load_candidates(candidates)
        self._tasks = [self._task_for(c) for c in self.candidates]
        self.observation_space = spaces.Discrete(1)
        self.action_space = spaces.Discrete(len(self.candidates))
        self._choice: int | None = None

    @classmethod
    def from_config(cls, task: Task, config: SelectionEnvConfig) -> PromptSelectionEnv:
        return cls(task=task, candidates=config.candidates, batch_size=config.batch_size)

    def sample_action(self, rng: np.random.Generator) -> int:
        return int(rng.integers(0, len(self.candidates)))

    def decode(self, choose: Chooser) -> str:
        return self.candidate_prompt(self.discrete_action(choose(np.zeros((), dtype=np.int64), None)))

    def _task_for(self, candidate: Candidate) -> Task:
        from rlprompt.task import Task
        from rlprompt.task_models import build_task_model

        if isinstance(candidate, str) or ("template" not in candidate and "verbalizers" not in candidate):
            return self.task
        base = self.task
        if not base.num_classes:
            raise ConfigError(
                f"candidate {candidate}: template/verbalizer candidates are for classification tasks; "
                "a generation task's candidates are prompts (one instruction per line)"
            )
        config = replace(
            base.config,
            template=candidate.get("template", base.config.template),
            verbalizers=list(candidate.get("verbalizers", base.config.verbalizers)),
        )
        if len(config.verbalizers) != base.num_classes:
            raise ConfigError(
                f"candidate {candidate} has {len(config.verbalizers)} verbalizers for {base.num_classes} classes"
            )
        if getattr(base.task_model, "model", None) is None or getattr(base.task_model, "tokenizer", None) is None:
            raise ConfigError("template/verbalizer candidates need a Hugging Face task model")
        model = build_task_model(
            config.task_model,
            config.model_template,
            config.verbalizers,
            model=base.task_model.model,
            tokenizer=base.task_model.tokenizer,
        )
        model.stats = base.task_model.stats  # one LM-call count for the env, whatever the candidate
        return Task(config, base.data, model)

    @property
    def has_variant_tasks(self) -> bool:
        return any(t is not self.task for t in self._tasks)

    def candidate_prompt(self, k: int) -> str:
        candidate = self.candidates[k]
        return candidate if isinstance(candidate, str) else str(candidate["prompt"])

    def current_prompt_text(self) -> str:
        return "" if self._choice is None else self.candidate_prompt(self._choice)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed, options=options)
        self._choice = None
        self._last_result = None
        return 0, self._info(None)

    def _apply(self, action: Any) -> ScoreRequest | None:
        k = self.discrete_action(action)
        self._choice = k
        return ScoreRequest(
            self._tasks[k], self.candidate_prompt(k), self._draw_indices(), self.split, budget_task=self.task
        )

    def _finish(self, result: ScoreResult | None) -> tuple[int, float, bool, bool, dict[str, Any]]:
        assert result is not None
        self._last_result = result
        return 0, float(result.reward), True, False, self._info(result, candidate=self._choice)
