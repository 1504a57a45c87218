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

from rlprompt.envs.base import PromptEnv, ScoreResult, make_task, score_requests
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
        first = self.envs[0]
        for env in self.envs[1:]:
            if env.observation_space != first.observation_space or env.action_space != first.action_space:
                raise ConfigError("all sub-envs of a BatchedPromptVectorEnv must have the same spaces")
            if env.task is not first.task:
                raise ConfigError("all sub-envs of a BatchedPromptVectorEnv must share one task (one loaded model)")
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        if self.autoreset_mode == AutoresetMode.DISABLED:
            raise ConfigError("autoreset_mode must be next_step or same_step")
        self.metadata = {**first.metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = first.render_mode
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        self._observations = create_empty_array(self.single_observation_space, self.num_envs)
        self.scored: list[ScoreResult] = []
        """Every prompt the last :meth:`step` scored (its actions', and resets' after episodes
        ended), with rewards: what agents' prompt trackers record."""

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        seeds: Sequence[int | None]
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ConfigError(f"{len(seeds)} seeds for {self.num_envs} envs")
        infos: dict[str, Any] = {}
        observations = []
        for i, (env, env_seed) in enumerate(zip(self.envs, seeds, strict=True)):
            obs, info = env.reset(seed=env_seed, options=options)
            observations.append(obs)
            infos = self._add_info(infos, info, i)
        self._needs_reset[:] = False
        self._observations = concatenate(self.single_observation_space, observations, self._observations)
        return self._observations.copy() if hasattr(self._observations, "copy") else self._observations, infos

    def step(self, actions: Any):
        requests, pending = [], []
        resetting = (
            self._needs_reset.copy()
            if self.autoreset_mode == AutoresetMode.NEXT_STEP
            else np.zeros(self.num_envs, bool)
        )
        for i, env in enumerate(self.envs):
            if resetting[i]:
                continue
            request = env.apply_action(actions[i])
            if request is not None:
                pending.append(i)
                requests.append(request)
        budget = self.task.budget
        if budget is not None:  # the whole step's cost, resets included, before anything is scored
            resets = 0
            if self.autoreset_mode == AutoresetMode.SAME_STEP:
                resets = sum(env.reset_scorings for i, env in enumerate(self.envs) if not resetting[i] and env.episode_over())
            budget.check("prompt_evals", len(requests) + resets)
        results = dict(zip(pending, score_requests(requests), strict=True)) if requests else {}
        self.scored = []

        observations, infos = [], {}
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminations = np.zeros(self.num_envs, dtype=bool)
        truncations = np.zeros(self.num_envs, dtype=bool)
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
    """Build the task once and ``num_envs`` envs of ``env_cls`` sharing it."""
    if num_envs < 1:
        raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
    shared = make_task(task, config, overrides)
    return BatchedPromptVectorEnv([env_cls(task=shared, **env_kwargs) for _ in range(num_envs)], autoreset_mode)


def vector_entry_point(env_class: type[PromptEnv]) -> Callable[..., BatchedPromptVectorEnv]:
    """A ``vector_entry_point`` for ``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``."""

    def build(num_envs: int = 1, **kwargs: Any) -> BatchedPromptVectorEnv:
        return make_batched_vector_env(env_class, num_envs, **kwargs)

    return build
