"""Tabular Q-learning with epsilon-greedy or UCB exploration (selection and edit envs).

Q is a table over the states seen (the observation as a key) and the actions. The
selection env is a bandit (one state): Q(a) is the sample mean of a's rewards and UCB1 adds
``c * sqrt(ln t / n(a))``. On the edit env it is one-step Q-learning,
``Q(s, a) += alpha * (r + gamma * max_a' Q(s', a') - Q(s, a))``, over applicable edits.
"""

from __future__ import annotations

import numpy as np

from rlprompt.agents.base import Agent
from rlprompt.agents.q_table_config import QTableConfig
from rlprompt.envs.base import Chooser, MaskedActions
from rlprompt.task_models import Prompt


class QTable(Agent):
    config_class = QTableConfig

    def _setup(self) -> None:
        self.n_actions = int(self.env.action_space.n)
        self.q: dict[bytes, np.ndarray] = {}
        self.visits: dict[bytes, np.ndarray] = {}
        self.total_visits = 0

    def _row(self, key: bytes) -> tuple[np.ndarray, np.ndarray]:
        if key not in self.q:
            self.q[key] = np.zeros(self.n_actions)
            self.visits[key] = np.zeros(self.n_actions)
        return self.q[key], self.visits[key]

    def _choose(self, obs: np.ndarray, mask: np.ndarray | None, explore: bool) -> int:
        q, n = self._row(np.asarray(obs).tobytes())
        valid = np.flatnonzero(mask) if mask is not None else np.arange(self.n_actions)
        if not explore and (n[valid] > 0).any():  # greedy: among actions tried (an untried Q is no estimate)
            valid = valid[n[valid] > 0]
        if explore and self.config.exploration == "epsilon" and self.rng.random() < self.config.epsilon:
            return int(self.rng.choice(valid))
        scores = q[valid].copy()
        if explore and self.config.exploration == "ucb":
            unvisited = valid[n[valid] == 0]
            if len(unvisited):
                return int(self.rng.choice(unvisited))
            scores = scores + self.config.ucb_c * np.sqrt(np.log(max(self.total_visits, 1)) / n[valid])
        best = valid[scores == scores.max()]
        return int(self.rng.choice(best)) if explore else int(best[0])

    def _learn_step(self) -> dict[str, float]:
        obs = self.reset_envs()
        envs = self.vec_env.envs
        masks = [e.action_masks() if isinstance(e, MaskedActions) else None for e in envs]
        actions = np.array([self._choose(obs[i], masks[i], explore=True) for i in range(len(envs))])
        next_obs, reward, terminated, truncated, infos = self.step_envs(actions)
        for i, action in enumerate(actions):
            q, n = self._row(np.asarray(obs[i]).tobytes())
            n[action] += 1
            self.total_visits += 1
            target = float(reward[i])
            if not terminated[i] and not truncated[i]:
                next_q, _ = self._row(np.asarray(next_obs[i]).tobytes())
                mask = envs[i].action_masks() if isinstance(envs[i], MaskedActions) else None
                target += self.config.gamma * float(next_q[mask].max() if mask is not None else next_q.max())
            alpha = self.config.learning_rate or 1.0 / n[action]
            q[action] += alpha * (target - q[action])
        return {"mean_reward": float(np.mean(reward)), "states": float(len(self.q))}

    def chooser(self, deterministic: bool = True) -> Chooser:
        """The table's greedy policy (UCB/epsilon exploration when not ``deterministic``)."""
        return lambda obs, mask: self._choose(obs, mask, explore=not deterministic)

    def predict(self, deterministic: bool = True) -> Prompt:
        return self.env.decode(self.chooser(deterministic))

    def _state(self) -> dict:
        return {"q": self.q, "visits": self.visits, "total_visits": self.total_visits}

    def _load_state(self, state: dict) -> None:
        self.q, self.visits, self.total_visits = state["q"], state["visits"], state["total_visits"]
