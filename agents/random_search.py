"""Random search: uniformly random actions in any prompt env; the best prompt seen wins.

The baseline every agent must beat at equal budget. On the token env it samples random
prompts, on the selection env random candidates, on the edit env random applicable edit
sequences, on the soft env random subspace points ``z ~ U[-1, 1]^d``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlprompt.agents.base import Agent, AgentConfig, register_agent
from rlprompt.envs import PromptEditEnv, SoftPromptEnv
from rlprompt.task_models import Prompt


@dataclass
class RandomSearchConfig(AgentConfig):
    n_envs: int = 16
    """Prompts sampled (and scored in one call) per iteration."""


@register_agent("random_search", RandomSearchConfig)
class RandomSearch(Agent):
    env_kinds = ("token", "selection", "edit", "soft")
    is_baseline = True

    def _learn_step(self) -> dict[str, float]:
        envs = self.vec_env.envs
        space = self.vec_env.single_action_space
        rewards = []
        for _ in range(getattr(self.env, "prompt_length", getattr(self.env, "max_edits", 1))):
            if isinstance(self.env, SoftPromptEnv):
                actions = self.rng.uniform(-1.0, 1.0, size=(len(envs), space.shape[0])).astype(np.float32)
            elif isinstance(self.env, PromptEditEnv):
                # random applicable edits, never "stop" (the edit budget ends the episode)
                masks = [e.action_masks()[:-1] for e in envs]
                actions = np.array([self.rng.choice(np.flatnonzero(m)) for m in masks])
            else:
                actions = self.rng.integers(0, space.n, size=len(envs))
            _, reward, terminated, truncated, _ = self.step_envs(actions)
            if isinstance(self.env, SoftPromptEnv):
                for env, z, r in zip(envs, actions, reward, strict=True):
                    self.tracker.add(env.soft_prompt(z), float(r))
            rewards.append(reward)
            if np.all(terminated | truncated):
                break
        return {"mean_step_reward": float(np.mean(rewards))}

    def predict(self, deterministic: bool = True) -> Prompt:
        best = self.tracker.best()
        if best is not None:
            return best.prompt
        if isinstance(self.env, SoftPromptEnv):
            return self.env.soft_prompt(np.zeros(self.env.subspace_dim))
        return self.task.config.prompt
