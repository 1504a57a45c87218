"""DemoSelectionEnv: choose which train examples a prompt shows as demonstrations, in order.

An episode fills ``k`` slots from the task's demonstration pool (``demos.pool``, rendered by
``demos.template`` into the template's ``{demos}`` slot; :mod:`rlprompt.template`): each step's
action is a pool example for the next slot. The finished block is scored on a minibatch of
train examples it does not show (an example never scores itself).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from gymnasium import spaces

from rlprompt.config import Config, check_ranges
from rlprompt.envs.base import Chooser, EnvConfig, PromptEnv, ScoreRequest, ScoreResult, minibatch_seed_option
from rlprompt.errors import ConfigError

if TYPE_CHECKING:
    from rlprompt.task import Task


@dataclass
class DemosEnvConfig(EnvConfig):
    """``env`` section of the demonstration env."""

    kind: str = "demos"
    searches: ClassVar[str] = "demos"
    """The prompt part this env searches: the template's ``{demos}`` slot."""
    k: int = 4
    """Demonstrations per prompt (the episode's steps)."""
    balanced: bool = False
    """Classification: at most ``ceil(k / classes)`` demonstrations of each class (with ``k`` a
    multiple of the classes, exactly as many of each)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, "env", at_least_one=("k",))


class DemoSelectionEnv(PromptEnv):
    """The agent picks one pool example per step for the next demonstration slot.

    * Observation: ``MultiDiscrete([N + 2] * k)`` over a pool of ``N``: per slot 0 (not yet
      filled), ``i + 1`` (example ``i``) or ``N + 1`` (left empty).
    * Action: ``Discrete(N)``. :meth:`action_masks` marks the examples not shown yet (and, with
      ``balanced``, of a class under its quota); a masked action leaves its slot empty (it still
      uses up the step), so agents without masks run too.
    * Reward: 0 until the last slot, then the task reward of the block (instruction fixed by the
      config) on a minibatch of ``split`` examples that it does not show, drawn then.
    """

    kind = "demos"
    config_class = DemosEnvConfig
    _state_keys = ("_slots", "_minibatch_seed")

    def __init__(
        self,
        task: Task | None = None,
        config: Config | dict | str | None = None,
        overrides: list[str] | None = None,
        *,
        k: int = 4,
        balanced: bool = False,
        batch_size: int | None = 16,
        split: str = "train",
        render_mode: str | None = None,
    ) -> None:
        super().__init__(task, config, overrides, batch_size=batch_size, split=split, render_mode=render_mode)
        self.pool = self.task.demo_pool()
        size = len(self.pool)
        if k > size:
            raise ConfigError(f"env.k={k} demonstrations from a pool of {size} examples: k must be at most {size}")
        self.k = k
        self.balanced = balanced
        self.quota: int | None = None
        if balanced:
            classes = self.pool.num_classes
            if classes == 0:
                raise ConfigError("env.balanced counts demonstrations per class: it is for classification tasks")
            self.quota = math.ceil(k / classes)
            available = np.bincount(np.asarray(self.pool.labels, dtype=np.int64), minlength=classes)
            if int(np.minimum(available, self.quota).sum()) < k:
                raise ConfigError(
                    f"env.balanced: the pool's classes {available.tolist()} cannot fill {k} slots with at "
                    f"most {self.quota} of each class"
                )
        self.skip = size + 1
        self.observation_space = spaces.MultiDiscrete(np.full(k, size + 2, dtype=np.int64))
        self.action_space = spaces.Discrete(size)
        self._slots: list[int] = []  # pool ids, -1 for an empty slot
        self._minibatch_seed: int | None = None

    @classmethod
    def from_config(cls, task: Task, config: DemosEnvConfig) -> DemoSelectionEnv:
        return cls(task=task, k=config.k, balanced=config.balanced, batch_size=config.batch_size)

    @property
    def episode_length(self) -> int:
        return self.k

    def episode_over(self) -> bool:
        return len(self._slots) >= self.k

    def mask_of(self, slots: Sequence[int]) -> np.ndarray:
        """Boolean mask of the examples that may fill the next slot after ``slots``."""
        mask: np.ndarray = np.ones(len(self.pool), dtype=bool)
        shown = [i for i in slots if i >= 0]
        mask[shown] = False
        if self.quota is not None:
            labels = np.asarray(self.pool.labels, dtype=np.int64)
            counts = (
                np.bincount(labels[shown], minlength=self.pool.num_classes)
                if shown
                else np.zeros(self.pool.num_classes, dtype=np.int64)
            )
            mask &= counts[labels] < self.quota
        return mask

    swappable = True
    """Exchanging two demonstrations reorders the block (order is part of the search)."""

    def mask_at(self, slots: Sequence[int], position: int) -> np.ndarray:
        """The examples that may fill ``position``, the other slots as they are (the quota and
        repeats do not depend on order)."""
        return self.mask_of([s for i, s in enumerate(slots) if i != position])

    def action_masks(self) -> np.ndarray:
        return self.mask_of(self._slots)

    def sample_action(self, rng: np.random.Generator) -> int:
        return int(rng.choice(np.flatnonzero(self.action_masks())))

    def observation_of(self, slots: Sequence[int]) -> np.ndarray:
        """The observation of filled slots (pool ids, -1 empty), without touching the env's state."""
        obs: np.ndarray = np.zeros(self.k, dtype=np.int64)
        for position, index in enumerate(slots):
            obs[position] = self.skip if index < 0 else index + 1
        return obs

    def decode(self, choose: Chooser) -> str:
        slots: list[int] = []
        while len(slots) < self.k:
            mask = self.mask_of(slots)
            action = self.discrete_action(choose(self.observation_of(slots), mask))
            slots.append(action if mask[action] else -1)
        return self.prompt_text(slots)

    def prompt_text(self, slots: Sequence[int]) -> str:
        return self.pool.render([i for i in slots if i >= 0])

    def current_prompt_text(self) -> str:
        return self.prompt_text(self._slots)

    def shared_minibatch(self, seed: int) -> dict[str, Any]:
        """Reset options under which every copy draws its episode's minibatch from one seeded
        order of the split's examples (the first ``batch_size`` its block does not show): blocks
        scored in one step are compared on (nearly) the same examples."""
        return {"minibatch_seed": int(seed)}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed, options=options)
        self._minibatch_seed = minibatch_seed_option(options)
        self._slots = []
        self._last_result = None
        return self.observation_of(self._slots), self._info(None)

    def _draw_unshown(self, prompt: str) -> np.ndarray:
        """A minibatch (sorted) of the split's examples that ``prompt`` does not show."""
        candidates = np.asarray(self.task.unshown(prompt, self.split, range(self.num_examples)), dtype=np.int64)
        if self.batch_size is None or self.batch_size >= len(candidates):
            return candidates
        if self._minibatch_seed is not None:
            order = np.random.default_rng(self._minibatch_seed).permutation(self.num_examples)
            return np.sort(order[np.isin(order, candidates)][: self.batch_size])
        return np.sort(self.np_random.choice(candidates, size=self.batch_size, replace=False))

    def _apply(self, action: Any) -> ScoreRequest | None:
        if self.episode_over():
            raise ConfigError("the episode is over (every demonstration slot is filled): call reset()")
        action = self.discrete_action(action)
        self._slots.append(action if self.action_masks()[action] else -1)
        if not self.episode_over():
            return None
        prompt = self.current_prompt_text()
        return self._request(prompt, self._draw_unshown(prompt))

    def _finish(self, result: ScoreResult | None) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward = 0.0
        if result is not None:
            self._last_result = result
            reward = result.reward
        info = self._info(result, demos=[i for i in self._slots if i >= 0])
        return self.observation_of(self._slots), float(reward), self.episode_over(), False, info
