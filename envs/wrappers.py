"""Wrappers for prompt envs: LM-call budget, running reward normalisation, episode statistics."""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np

from rlprompt.envs.base import is_integer
from rlprompt.errors import ConfigError


def _task_of(env: gym.Env) -> Any:
    task = getattr(env.unwrapped, "task", None)
    if task is None:
        raise ConfigError("this wrapper needs an rlprompt prompt env (with a .task)")
    return task


class LMCallBudget(gym.Wrapper):
    """Truncate the episode once the task model has spent ``max_lm_calls`` computed scorings
    or the task ``max_prompt_evals`` prompt evaluations since the wrapper was made.

    The counters live on the shared task model, so envs that share a task share the budget.
    ``info["budget_left"]`` reports what remains; ``info["budget_exhausted"]`` is set when spent.
    """

    def __init__(self, env: gym.Env, max_lm_calls: int | None = None, max_prompt_evals: int | None = None) -> None:
        super().__init__(env)
        if max_lm_calls is None and max_prompt_evals is None:
            raise ConfigError("LMCallBudget needs max_lm_calls or max_prompt_evals")
        for name, value in (("max_lm_calls", max_lm_calls), ("max_prompt_evals", max_prompt_evals)):
            if value is not None and (not is_integer(value) or value < 1):
                raise ConfigError(f"{name} must be an integer >= 1 (or None), got {type(value).__name__} {value!r}")
        self.max_lm_calls = max_lm_calls
        self.max_prompt_evals = max_prompt_evals
        task = _task_of(env)
        self._lm_calls_start = task.task_model.stats.lm_calls
        self._prompt_evals_start = task.prompt_evals

    def spent(self) -> dict[str, int]:
        task = _task_of(self.env)
        return {
            "lm_calls": task.task_model.stats.lm_calls - self._lm_calls_start,
            "prompt_evals": task.prompt_evals - self._prompt_evals_start,
        }

    @property
    def exhausted(self) -> bool:
        spent = self.spent()
        return (self.max_lm_calls is not None and spent["lm_calls"] >= self.max_lm_calls) or (
            self.max_prompt_evals is not None and spent["prompt_evals"] >= self.max_prompt_evals
        )

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        spent = self.spent()
        info = dict(info)
        info["budget_left"] = {
            key: limit - spent[key]
            for key, limit in (("lm_calls", self.max_lm_calls), ("prompt_evals", self.max_prompt_evals))
            if limit is not None
        }
        if self.exhausted:
            info["budget_exhausted"] = True
            truncated = True
        return obs, reward, terminated, truncated, info


class NormalizeReward(gym.Wrapper):
    """Running z-score of the rewards of scored steps (Welford mean/variance).

    Steps that scored nothing (``info["scorings"] == 0``, e.g. the unfinished steps of the token
    env) keep reward 0, so sparse rewards stay sparse. ``clip`` bounds the normalised value.
    """

    def __init__(self, env: gym.Env, epsilon: float = 1e-8, clip: float | None = 10.0) -> None:
        for name, value in (("epsilon", epsilon), ("clip", clip)):
            number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
                value, (bool, np.bool_)
            )
            if (value is not None or name == "epsilon") and not (
                number and value is not None and np.isfinite(value) and value > 0
            ):
                raise ConfigError(
                    f"NormalizeReward: {name} must be a finite number > 0{' (or None)' if name == 'clip' else ''}, "
                    f"got {type(value).__name__} {value!r}"
                )
        super().__init__(env)
        self.epsilon = epsilon
        self.clip = clip
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0

    @property
    def std(self) -> float:
        return float(np.sqrt(self._m2 / self.count)) if self.count > 1 else 1.0

    def normalize(self, reward: float) -> float:
        self.count += 1
        delta = reward - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (reward - self.mean)
        value = (reward - self.mean) / (self.std + self.epsilon) if self.count > 1 else 0.0
        return float(np.clip(value, -self.clip, self.clip)) if self.clip is not None else float(value)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if info.get("scorings", 1):
            info = {**info, "raw_reward": float(reward)}
            reward = self.normalize(float(reward))
        return obs, reward, terminated, truncated, info


class EpisodeStatistics(gym.Wrapper):
    """Adds ``info["episode"]`` at the end of each episode: return ``r``, length ``l``, wall
    time ``t``, the final ``prompt``, its last batch ``metrics`` and the ``scorings`` used."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._return = 0.0
        self._length = 0
        self._scorings = 0
        self._start = time.perf_counter()
        self._metrics: dict[str, float] | None = None

    def reset(self, **kwargs: Any):
        self._reset_counters()
        return self.env.reset(**kwargs)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        self._length += 1
        self._scorings += int(info.get("scorings", 0))
        if "metrics" in info:
            self._metrics = dict(info["metrics"])
        if terminated or truncated:
            info = {
                **info,
                "episode": {
                    "r": self._return,
                    "l": self._length,
                    "t": round(time.perf_counter() - self._start, 6),
                    "prompt": info.get("prompt"),
                    "metrics": self._metrics,
                    "scorings": self._scorings,
                },
            }
        return obs, reward, terminated, truncated, info
