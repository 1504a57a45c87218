"""TokenPromptEnv: write a prompt one vocabulary word per step (RLPrompt's setting)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces

from rlprompt.config import Config, check_ranges
from rlprompt.envs.base import Chooser, EnvConfig, PromptEnv, ScoreRequest, ScoreResult
from rlprompt.envs.vocab import build_vocabulary
from rlprompt.errors import ConfigError

if TYPE_CHECKING:
    from rlprompt.task import Task


@dataclass
class TokenEnvConfig(EnvConfig):
    """``env`` section of the token env."""

    kind: str = "token"
    prompt_length: int = 5
    """Words per prompt."""
    vocab_top_k: int = 1000
    """The action vocabulary is the task model's first k alphabetic whole words."""
    vocab_regex: str | None = None
    """Keep only vocabulary words matching this regex."""
    fixed_length: bool = True
    """Prompts have exactly ``prompt_length`` words; false adds a stop action."""
    shaping: bool = False
    """Reward every step by the change of the partial prompt's score (one evaluation per step)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, "env", at_least_one=("prompt_length", "vocab_top_k"))


class TokenPromptEnv(PromptEnv):
    """The agent appends one word of ``vocabulary`` per step; the finished prompt is scored.

    * Observation: ``MultiDiscrete([V + 1] * L)``, the word ids so far shifted by one (0 marks
      an empty slot), so SB3 and tabular agents accept it as is.
    * Action: ``Discrete(V)``; with ``fixed_length=False`` one more action (``V``) stops early.
    * Reward: 0 until the prompt is finished, then the task reward of the prompt on a
      minibatch of train examples drawn at reset (``batch_size=None``: the whole split). With
      ``shaping=True`` every step is rewarded by the change in score of the partial prompt
      (the rewards then sum to the final score; costs one prompt evaluation per step).
    """

    kind = "token"
    config_class = TokenEnvConfig
    _state_keys = ("_tokens", "_previous_score", "_stopped")

    def __init__(
        self,
        task: Task | None = None,
        config: Config | dict | str | None = None,
        overrides: list[str] | None = None,
        *,
        vocabulary: Sequence[str] | None = None,
        vocab_top_k: int | None = 1000,
        vocab_regex: str | None = None,
        prompt_length: int = 5,
        fixed_length: bool = True,
        shaping: bool = False,
        batch_size: int | None = 16,
        split: str = "train",
        render_mode: str | None = None,
    ) -> None:
        super().__init__(task, config, overrides, batch_size=batch_size, split=split, render_mode=render_mode)
        if prompt_length < 1:
            raise ConfigError(f"prompt_length must be >= 1, got {prompt_length}")
        self.vocabulary = build_vocabulary(self.task.task_model, vocabulary, vocab_top_k, vocab_regex)
        self.prompt_length = prompt_length
        self.fixed_length = fixed_length
        self.shaping = shaping
        self.stop_action = None if fixed_length else len(self.vocabulary)
        self.observation_space = spaces.MultiDiscrete(np.full(prompt_length, len(self.vocabulary) + 1, dtype=np.int64))
        self.action_space = spaces.Discrete(len(self.vocabulary) + (0 if fixed_length else 1))
        self._tokens: list[int] = []
        self._previous_score = 0.0
        self._stopped = False

    @classmethod
    def from_config(cls, task: Task, config: TokenEnvConfig) -> TokenPromptEnv:
        return cls(
            task=task,
            prompt_length=config.prompt_length,
            vocab_top_k=config.vocab_top_k,
            vocab_regex=config.vocab_regex,
            fixed_length=config.fixed_length,
            shaping=config.shaping,
            batch_size=config.batch_size,
        )

    @property
    def episode_length(self) -> int:
        return self.prompt_length

    def sample_action(self, rng: np.random.Generator) -> int:
        return int(rng.integers(0, len(self.vocabulary)))  # never the stop action

    def decode(self, choose: Chooser) -> str:
        tokens: list[int] = []
        while len(tokens) < self.prompt_length:
            action = self.discrete_action(choose(self.observation_of(tokens), None))
            if action == self.stop_action:
                break
            tokens.append(action)
        return self.prompt_text(tokens)

    def prompt_text(self, token_ids: Sequence[int]) -> str:
        return " ".join(self.vocabulary[i] for i in token_ids)

    def current_prompt_text(self) -> str:
        return self.prompt_text(self._tokens)

    def observation_of(self, token_ids: Sequence[int]) -> np.ndarray:
        """The observation of a prompt prefix (word ids), without touching the env's state."""
        obs: np.ndarray = np.zeros(self.prompt_length, dtype=np.int64)
        obs[: len(token_ids)] = np.asarray(token_ids, dtype=np.int64) + 1
        return obs

    def _observation(self) -> np.ndarray:
        return self.observation_of(self._tokens)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed, options=options)
        self._tokens = []
        self._previous_score = 0.0
        self._stopped = False
        self._last_result = None
        self._episode_indices = self._draw_indices()
        return self._observation(), self._info(None)

    def _apply(self, action: Any) -> ScoreRequest | None:
        if self._done:
            raise ConfigError("the episode is over (the prompt is finished): call reset()")
        action = self.discrete_action(action)
        if action == self.stop_action:
            self._stopped = True
        else:
            self._tokens.append(action)
        if self._done or self.shaping:
            return self._request(self.current_prompt_text())
        return None

    @property
    def _done(self) -> bool:
        return self._stopped or len(self._tokens) >= self.prompt_length

    def episode_over(self) -> bool:
        return self._done

    def _finish(self, result: ScoreResult | None) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward = 0.0
        if result is not None:
            self._last_result = result
            reward = result.reward - self._previous_score if self.shaping else result.reward
            self._previous_score = result.reward
        info = self._info(result, tokens=list(self._tokens))
        return self._observation(), float(reward), self._done, False, info
