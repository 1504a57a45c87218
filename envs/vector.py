"""BatchedPromptVectorEnv: N prompt envs stepping together, their N prompts scored in one call.

Gymnasium's ``SyncVectorEnv`` steps sub-envs one by one, so N envs cost N task-model calls
of a small minibatch each. Here every sub-env first applies its action
(``PromptEnv._apply``), then the score requests of all sub-envs go to the task model in
one batched ``score_pairs`` call, then each sub-env finishes its step. Autoreset follows
Gymnasium: ``next_step`` (default: the step after an episode ends resets that sub-env
and ignores its action) or ``same_step`` (reset at once; ``final_obs``/``final_info`` in infos).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from rlprompt.envs.base import (
    PromptEnv,
    ScoreResult,
    check_env_arguments,
    check_seed,
    is_integer,
    make_task,
    score_requests,
)
from rlprompt.errors import ConfigError


class BatchedPromptVectorEnv(VectorEnv):
    """Vector env over :class:`PromptEnv` instances that share one task (one loaded model)."""

    def __init__(
        self, envs: Sequence[PromptEnv], autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP
    ) -> None:
        if not envs:
            raise ConfigError("BatchedPromptVectorEnv needs at least one env")
        self.envs = list(envs)
        self.num_envs = len(self.envs)
        for i, env in enumerate(self.envs):
            if not isinstance(env, PromptEnv):
                raise ConfigError(
                    f"BatchedPromptVectorEnv needs rlprompt prompt envs, got {type(env).__name__} at envs[{i}]"
                )
        first = self.envs[0]
        for env in self.envs[1:]:
            if env.observation_space != first.observation_space or env.action_space != first.action_space:
                raise ConfigError("all sub-envs of a BatchedPromptVectorEnv must have the same spaces")
            if env.task is not first.task:
                raise ConfigError("all sub-envs of a BatchedPromptVectorEnv must share one task (one loaded model)")
        self.autoreset_mode = _autoreset_mode(autoreset_mode)
        if self.autoreset_mode == AutoresetMode.DISABLED:
            raise ConfigError("autoreset_mode must be next_step or same_step")
        self.metadata = {**first.metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = first.render_mode
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._needs_reset: np.ndarray = np.zeros(self.num_envs, dtype=bool)
        self._observations = create_empty_array(self.single_observation_space, self.num_envs)
        self.scored: list[ScoreResult] = []
        """Every prompt the last :meth:`step` scored (its actions', and resets' after episodes
        ended), with rewards: what agents' prompt trackers record."""

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        seeds: Sequence[int | None]
        if seed is None:
            seeds = [None] * self.num_envs
        elif is_integer(seed):
            first = check_seed(seed, "reset seed")
            seeds = [first + i for i in range(self.num_envs)]
        elif isinstance(seed, (list, tuple, np.ndarray)):
            seeds = [check_seed(s, f"reset seed[{i}]") for i, s in enumerate(list(seed))]
            if len(seeds) != self.num_envs:
                raise ConfigError(
                    f"reset seed: {len(seeds)} seeds for {self.num_envs} envs (give one per env, or one int)"
                )
        else:
            raise ConfigError(
                f"reset seed must be a non-negative integer, a list of {self.num_envs} of them, or None, "
                f"got {type(seed).__name__} {seed!r}"
            )
        infos: dict[str, Any] = {}
        observations = []
        for i, (env, env_seed) in enumerate(zip(self.envs, seeds, strict=True)):
            obs, info = env.reset(seed=env_seed, options=options)
            observations.append(obs)
            infos = self._add_info(infos, info, i)
        self._needs_reset[:] = False
        self._observations = concatenate(self.single_observation_space, observations, self._observations)
        return self._observations.copy() if hasattr(self._observations, "copy") else self._observations, infos

    def _split_actions(self, actions: Any) -> list[Any]:
        """One action per sub-env: ``actions`` must have the batched action space's shape
        (``(num_envs,)`` discrete, ``(num_envs, d)`` soft); extra or missing actions are refused."""
        expected = self.action_space.shape
        if isinstance(actions, (str, bytes)) or actions is None:
            raise ConfigError(
                f"actions must be an array of shape {expected} (one action per env), got "
                f"{type(actions).__name__} {actions!r}"
            )
        try:
            array = np.asarray(actions.detach().cpu() if hasattr(actions, "detach") else actions)
        except (TypeError, ValueError):
            raise ConfigError(
                f"actions must be an array of shape {expected} (one action per env), got {actions!r}"
            ) from None
        if array.shape != expected:
            count = f"{array.shape[0]} actions" if array.ndim else "a single action"
            raise ConfigError(
                f"actions must have shape {expected}: one action per env for {self.num_envs} envs, "
                f"got shape {array.shape} ({count})"
            )
        return list(array)

    def step(self, actions: Any):
        requests, pending = [], []
        resetting = (
            self._needs_reset.copy()
            if self.autoreset_mode == AutoresetMode.NEXT_STEP
            else np.zeros(self.num_envs, bool)
        )
        per_env = self._split_actions(actions)
        checked: dict[int, Any] = {}
        for i, env in enumerate(self.envs):  # every action checked before any env changes
            if resetting[i]:
                continue
            if not env._was_reset:
                raise ConfigError("BatchedPromptVectorEnv: call reset() before step()")
            try:
                checked[i] = env.check_action(per_env[i])
            except ConfigError as exc:
                raise ConfigError(f"actions[{i}]: {exc}") from None
        for i, env in enumerate(self.envs):
            if resetting[i]:
                continue
            request = env._apply(checked[i])
            if request is not None:
                pending.append(i)
                requests.append(request)
        budget = self.task.budget
        if budget is not None:  # the whole step's cost, resets included, before anything is scored
            resets = 0
            if self.autoreset_mode == AutoresetMode.SAME_STEP:
                resets = sum(
                    env.reset_scorings for i, env in enumerate(self.envs) if not resetting[i] and env.episode_over()
                )
            budget.check("prompt_evals", len(requests) + resets)
        results = dict(zip(pending, score_requests(requests), strict=True)) if requests else {}
        self.scored = []

        observations: list[Any] = []
        infos: dict[str, Any] = {}
        rewards: np.ndarray = np.zeros(self.num_envs, dtype=np.float64)
        terminations: np.ndarray = np.zeros(self.num_envs, dtype=bool)
        truncations: np.ndarray = np.zeros(self.num_envs, dtype=bool)
        for i, env in enumerate(self.envs):
            if resetting[i]:
                obs, info = env.reset()
                self._record_reset_score(env)
            else:
                if i in results:
                    self.scored.append(results[i])
                obs, reward, terminated, truncated, info = env._finish(results.get(i))
                rewards[i], terminations[i], truncations[i] = reward, terminated, truncated
                if self.autoreset_mode == AutoresetMode.SAME_STEP and (terminated or truncated):
                    final_obs, final_info = obs, info
                    obs, info = env.reset()
                    self._record_reset_score(env)
                    info = {**info, "final_obs": final_obs, "final_info": final_info}
            observations.append(obs)
            infos = self._add_info(infos, info, i)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._needs_reset = terminations | truncations
        self._observations = concatenate(self.single_observation_space, observations, self._observations)
        obs_out = self._observations.copy() if hasattr(self._observations, "copy") else self._observations
        return obs_out, rewards, terminations, truncations, infos

    def _record_reset_score(self, env: PromptEnv) -> None:
        if env.reset_scorings and env._last_result is not None:
            self.scored.append(env._last_result)

    def render(self) -> tuple[Any, ...] | None:
        return tuple(env.render() for env in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()

    @property
    def task(self):
        return self.envs[0].task


def make_batched_vector_env(
    env_cls: type[PromptEnv] | Callable[..., PromptEnv],
    num_envs: int,
    *,
    autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
    task: Any = None,
    config: Any = None,
    overrides: list[str] | None = None,
    **env_kwargs: Any,
) -> BatchedPromptVectorEnv:
    """Build the task once and ``num_envs`` envs of ``env_cls`` sharing it (every argument is
    checked first, before the task loads a model)."""
    if not is_integer(num_envs) or num_envs < 1:
        raise ConfigError(f"num_envs must be an integer >= 1, got {type(num_envs).__name__} {num_envs!r}")
    _autoreset_mode(autoreset_mode)
    if isinstance(env_cls, type) and issubclass(env_cls, PromptEnv):
        check_env_arguments(env_cls, (), {"task": task, "config": config, "overrides": overrides, **env_kwargs})
    shared = make_task(task, config, overrides)
    return BatchedPromptVectorEnv([env_cls(task=shared, **env_kwargs) for _ in range(num_envs)], autoreset_mode)


def _autoreset_mode(mode: Any) -> AutoresetMode:
    try:
        return AutoresetMode(mode)
    except (TypeError, ValueError):
        names = [m.value for m in AutoresetMode if m != AutoresetMode.DISABLED]
        raise ConfigError(f"autoreset_mode must be one of {names}, got {mode!r}") from None


def vector_entry_point(env_class: type[PromptEnv]) -> Callable[..., BatchedPromptVectorEnv]:
    """A ``vector_entry_point`` for ``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``."""

    def build(num_envs: int = 1, **kwargs: Any) -> BatchedPromptVectorEnv:
        return make_batched_vector_env(env_class, num_envs, **kwargs)

    return build
