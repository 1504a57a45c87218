"""DQN with a replay buffer and a target network, for the token and edit envs.

Q is a small network over the prompt-so-far observation. One iteration: every env copy
takes one epsilon-greedy step (epsilon decays linearly over ``exploration_steps`` env
steps), transitions go to a ring replay buffer, then ``gradient_steps`` updates of the
Huber TD error against ``r + gamma * max_a' Q_target(s', a')`` (masked for edit envs), and
a Polyak update of the target network.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from rlprompt.agents.base import Agent
from rlprompt.agents.dqn_config import DQNConfig
from rlprompt.agents.networks import QNetwork, current_masks, masked_logits, seeded_module
from rlprompt.envs.base import Chooser
from rlprompt.rl import polyak_update


class DQN(Agent):
    config_class = DQNConfig

    def _setup(self) -> None:
        space, n_actions = self.env.observation_space, int(self.env.action_space.n)
        build = lambda: QNetwork(space, n_actions, self.config.hidden)  # noqa: E731
        self.q = seeded_module(self.seed, build)
        self.q_target = seeded_module(self.seed, build)
        self.q_target.load_state_dict(self.q.state_dict())
        self.optimizer = torch.optim.Adam(self.q.parameters(), lr=self.config.learning_rate)
        obs_dim = int(np.prod(space.shape))
        size = self.config.buffer_size
        obs_dtype = torch.float32 if isinstance(space, spaces.Box) else torch.long  # embeddings stay floats
        self.buffer = {
            "obs": torch.zeros(size, obs_dim, dtype=obs_dtype),
            "next_obs": torch.zeros(size, obs_dim, dtype=obs_dtype),
            "action": torch.zeros(size, dtype=torch.long),
            "reward": torch.zeros(size),
            "done": torch.zeros(size),
            "next_mask": torch.ones(size, n_actions, dtype=torch.bool),
        }
        self.buffer_pos = 0
        self.buffer_full = False

    def epsilon(self) -> float:
        cfg = self.config
        fraction = min(1.0, self.env_steps / max(cfg.exploration_steps, 1))
        return cfg.exploration_initial + fraction * (cfg.exploration_final - cfg.exploration_initial)

    def _learn_step(self) -> dict[str, float]:
        cfg = self.config
        obs = torch.as_tensor(self.reset_envs())
        mask = current_masks(self.vec_env.envs)
        # 1. Act epsilon-greedily.
        with torch.no_grad():
            greedy = masked_logits(self.q(obs), mask).argmax(-1).numpy()
        actions = greedy.copy()
        explore = self.rng.random(len(actions)) < self.epsilon()
        i: int | np.integer  # an env's position: numpy's from flatnonzero, Python's from range
        for i in np.flatnonzero(explore):
            valid = np.flatnonzero(mask[i].numpy()) if mask is not None else np.arange(self.env.action_space.n)
            actions[i] = self.rng.choice(valid)
        next_obs, reward, terminated, truncated, infos = self.step_envs(actions)
        # With same-step autoreset the real next observation of a finished episode is final_obs.
        real_next = np.array(next_obs, copy=True)
        if "final_obs" in infos:
            for i in np.flatnonzero(infos.get("_final_obs", np.zeros(len(actions), bool))):
                real_next[i] = infos["final_obs"][i]
        next_mask = current_masks(self.vec_env.envs)
        # 2. Store transitions.
        done = terminated | truncated
        for i in range(len(actions)):
            p = self.buffer_pos
            self.buffer["obs"][p] = obs[i].reshape(-1)
            self.buffer["next_obs"][p] = torch.as_tensor(real_next[i]).reshape(-1)
            self.buffer["action"][p] = int(actions[i])
            self.buffer["reward"][p] = float(reward[i])
            # the edit budget is part of the observation: its end is terminal, not a time limit
            self.buffer["done"][p] = float(done[i])
            self.buffer["next_mask"][p] = next_mask[i] if next_mask is not None and not done[i] else True
            self.buffer_pos = (p + 1) % cfg.buffer_size
            self.buffer_full = self.buffer_full or self.buffer_pos == 0
        size = cfg.buffer_size if self.buffer_full else self.buffer_pos
        if size < max(cfg.learning_starts, cfg.batch_size):
            return {"epsilon": self.epsilon()}
        # 3. TD updates against the target network, then Polyak.
        losses = []
        for _ in range(cfg.gradient_steps):
            idx = torch.as_tensor(self.rng.integers(0, size, size=cfg.batch_size))
            b = {k: v[idx] for k, v in self.buffer.items()}
            with torch.no_grad():
                next_q = masked_logits(self.q_target(b["next_obs"]), b["next_mask"]).max(-1).values
                target = b["reward"] + cfg.gamma * (1.0 - b["done"]) * next_q
            q = self.q(b["obs"]).gather(-1, b["action"][:, None]).squeeze(-1)
            loss = torch.nn.functional.smooth_l1_loss(q, target)
            self.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.q.parameters(), 10.0)
            self.optimizer.step()
            polyak_update(self.q_target, self.q, cfg.tau)
            losses.append(float(loss.detach()))
        return {"td_loss": float(np.mean(losses)), "epsilon": self.epsilon()}

    def chooser(self, deterministic: bool = True) -> Chooser:
        """The greedy policy of the Q-network (epsilon-greedy when not ``deterministic``)."""

        def choose(obs: np.ndarray, mask: np.ndarray | None) -> int:
            with torch.no_grad():
                q = self.q(torch.as_tensor(obs)[None])[0]
            q = masked_logits(q, torch.as_tensor(mask) if mask is not None else None)
            if not deterministic and self.rng.random() < self.epsilon():
                valid = np.flatnonzero(mask) if mask is not None else np.arange(q.shape[0])
                return int(self.rng.choice(valid))
            return int(q.argmax())

        return choose

    def predict(self, deterministic: bool = True) -> Any:
        return self.env.decode(self.chooser(deterministic))

    def _state(self) -> dict:
        return {
            "q": self.q.state_dict(),
            "q_target": self.q_target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "buffer": self.buffer,
            "buffer_pos": self.buffer_pos,
            "buffer_full": self.buffer_full,
        }

    def _load_state(self, state: dict) -> None:
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.buffer, self.buffer_pos, self.buffer_full = state["buffer"], state["buffer_pos"], state["buffer_full"]
