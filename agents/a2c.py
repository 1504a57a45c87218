"""A2C: synchronous advantage actor-critic for the token and edit envs.

One iteration: every env copy runs ``n_steps`` steps; advantages are n-step (GAE with
``gae_lambda``) returns minus the critic's values; one gradient step on
``policy loss + vf_coef * value loss - ent_coef * entropy`` (no clipping, no reuse of the
rollout: that is what separates it from PPO).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rlprompt.agents.a2c_config import A2CConfig
from rlprompt.agents.base import Agent
from rlprompt.agents.networks import (
    ActorCritic,
    current_masks,
    masked_logits,
    sample_actions,
    seeded_module,
)
from rlprompt.envs.base import Chooser, MaskedActions
from rlprompt.rl import gae


class A2C(Agent):
    config_class = A2CConfig

    def _setup(self) -> None:
        space, n_actions = self.env.observation_space, int(self.env.action_space.n)
        self.net = seeded_module(self.seed, lambda: ActorCritic(space, n_actions, self.config.hidden))
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.config.learning_rate)
        self.n_steps = self.config.n_steps or self.env.episode_length

    def _learn_step(self) -> dict[str, float]:
        cfg = self.config
        has_masks = isinstance(self.env, MaskedActions)
        obs = self.reset_envs()
        obs_buf, act_buf, mask_buf, rew_buf, done_buf = [], [], [], [], []
        for _ in range(self.n_steps):
            obs_t = torch.as_tensor(obs)
            mask = current_masks(self.vec_env.envs)
            with torch.no_grad():
                actions = sample_actions(masked_logits(self.net(obs_t)[0], mask), self.torch_rng)
            obs, reward, terminated, truncated, _ = self.step_envs(actions.numpy())
            obs_buf.append(obs_t)
            act_buf.append(actions)
            mask_buf.append(mask)
            rew_buf.append(torch.as_tensor(reward, dtype=torch.float32))
            done_buf.append(torch.as_tensor(terminated | truncated))
        logits, values = self.net(torch.cat(obs_buf))
        logits = masked_logits(logits, torch.cat(mask_buf) if has_masks else None)
        with torch.no_grad():
            last_value = self.net(torch.as_tensor(obs))[1]
        advantages, returns = gae(
            torch.stack(rew_buf),
            values.detach().view(self.n_steps, -1),
            torch.stack(done_buf),
            last_value,
            cfg.gamma,
            cfg.gae_lambda,
        )
        log_probs = torch.log_softmax(logits, -1)
        chosen = log_probs.gather(-1, torch.cat(act_buf)[:, None]).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).nan_to_num().sum(-1).mean()
        adv = advantages.flatten()
        adv = (adv - adv.mean()) / (adv.std() + 1e-8) if adv.numel() > 1 else adv
        policy_loss = -(chosen * adv).mean()
        value_loss = 0.5 * (values - returns.flatten()).pow(2).mean()
        loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        return {
            "policy_loss": float(policy_loss.detach()),
            "value_loss": float(value_loss.detach()),
            "entropy": float(entropy.detach()),
            "mean_reward": float(torch.stack(rew_buf).sum(0).mean()),
        }

    def chooser(self, deterministic: bool = True) -> Chooser:
        """The policy as ``(observation, mask) -> action``: greedy, or sampled."""

        def choose(obs: np.ndarray, mask: np.ndarray | None) -> int:
            with torch.no_grad():
                logits = self.net(torch.as_tensor(obs)[None])[0]
            logits = masked_logits(logits, torch.as_tensor(mask)[None] if mask is not None else None)
            return int(logits.argmax()) if deterministic else int(sample_actions(logits, self.torch_rng)[0])

        return choose

    def predict(self, deterministic: bool = True) -> Any:
        return self.env.decode(self.chooser(deterministic))

    def _state(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def _load_state(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
