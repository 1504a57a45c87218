"""Random search: uniformly random actions in any prompt env; the best prompt seen wins.

The baseline every agent must beat at equal budget. Each env kind says what a random action
is (``PromptEnv.sample_action``): a random word (token env), a random candidate (selection),
a random applicable edit (edit), a random subspace point ``z ~ U[-1, 1]^d`` (soft).
"""

from __future__ import annotations

import numpy as np

from rlprompt.agents.base import Agent
from rlprompt.agents.random_search_config import RandomSearchConfig
from rlprompt.task_models.base import Prompt


class RandomSearch(Agent):
    config_class = RandomSearchConfig

    def _learn_step(self) -> dict[str, float]:
        rewards = []
        for _ in range(self.env.episode_length):
            actions = np.stack([np.asarray(env.sample_action(self.rng)) for env in self.vec_env.envs])
            _, reward, terminated, truncated, _ = self.step_envs(actions)
            rewards.append(reward)
            if np.all(terminated | truncated):
                break
        return {"mean_step_reward": float(np.mean(rewards))}

    def predict(self, deterministic: bool = True) -> Prompt:
        best = self.tracker.best()
        return best.prompt if best is not None else self.env.default_prompt()
