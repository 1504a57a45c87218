"""Greedy hill-climbing over edits (GrIPS-like), on the edit env.

One iteration: every env copy restarts from the current prompt (``reset(options=...)``)
and tries one random applicable edit; the env rewards the change of score on its
minibatch; the best edit is kept if it improves by more than ``min_improvement``. With the
whole train split as the minibatch (``batch_size=None``) the current prompt's score is cached
and each candidate costs one evaluation.
"""

from __future__ import annotations

import numpy as np

from rlprompt.agents.base import Agent, step_info
from rlprompt.agents.hill_climb_config import HillClimbConfig


class HillClimb(Agent):
    config_class = HillClimbConfig

    def _setup(self) -> None:
        self.current = self.env.start_prompt

    def _learn_step(self) -> dict[str, float]:
        envs = self.vec_env.envs
        seed = self.seed if self.iterations == 0 else None
        self.vec_env.reset(seed=seed, options={"prompt": self.current})
        edits = [self.rng.choice(np.flatnonzero(env.action_masks()[:-1])) for env in envs]  # never "stop"
        _, improvement, _, _, infos = self.step_envs(np.array(edits))
        best = int(np.argmax(improvement))
        accepted = improvement[best] > self.config.min_improvement
        if accepted:
            self.current = str(step_info(infos, "prompt", best))
        return {"best_improvement": float(improvement[best]), "accepted": float(accepted)}

    def predict(self, deterministic: bool = True) -> str:
        return self.current

    def _state(self) -> dict:
        return {"current": self.current}

    def _load_state(self, state: dict) -> None:
        self.current = state["current"]
