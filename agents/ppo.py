"""PPO (clipped objective, GAE, value head) for the token and edit envs.

One iteration: every env copy runs ``n_steps`` steps of the current policy (episodes end at
the prompt length / edit budget, so a default rollout is one episode per copy); advantages
come from GAE; ``n_epochs`` passes of shuffled minibatches minimise the clipped surrogate,
the value loss and an entropy bonus. The loss helpers live in ``rlprompt.rl`` and are shared
with the fine-tuning PPO.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rlprompt.agents.base import Agent
from rlprompt.agents.networks import (
    ActorCritic,
    current_masks,
    masked_logits,
    sample_actions,
    seeded_module,
)
from rlprompt.agents.ppo_config import PPOConfig
from rlprompt.envs.base import Chooser, MaskedActions
from rlprompt.rl import gae, ppo_policy_loss, ppo_value_loss


class PPO(Agent):
    config_class = PPOConfig

    def _setup(self) -> None:
        space, n_actions = self.env.observation_space, int(self.env.action_space.n)
        self.net = seeded_module(self.seed, lambda: ActorCritic(space, n_actions, self.config.hidden))
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.config.learning_rate)
        self.n_steps = self.config.n_steps or self.env.episode_length

    def _learn_step(self) -> dict[str, float]:
        cfg = self.config
        has_masks = isinstance(self.env, MaskedActions)
        obs_buf, act_buf, logp_buf, val_buf, rew_buf, done_buf, mask_buf = [], [], [], [], [], [], []
        obs = self.reset_envs()
        # 1. Rollout with the current policy.
        for _ in range(self.n_steps):
            obs_t = torch.as_tensor(obs)
            mask = current_masks(self.vec_env.envs)
            with torch.no_grad():
                logits, value = self.net(obs_t)
                logits = masked_logits(logits, mask)
                actions = sample_actions(logits, self.torch_rng)
                logp = torch.log_softmax(logits, -1).gather(-1, actions[:, None]).squeeze(-1)
            obs, reward, terminated, truncated, _ = self.step_envs(actions.numpy())
            obs_buf.append(obs_t)
            act_buf.append(actions)
            logp_buf.append(logp)
            val_buf.append(value)
            mask_buf.append(mask)
            rew_buf.append(torch.as_tensor(reward, dtype=torch.float32))
            done_buf.append(torch.as_tensor(terminated | truncated))
        # 2. Advantages (no bootstrap past an episode's end).
        with torch.no_grad():
            last_value = self.net(torch.as_tensor(obs))[1]
        advantages, returns = gae(
            torch.stack(rew_buf), torch.stack(val_buf), torch.stack(done_buf), last_value, cfg.gamma, cfg.gae_lambda
        )
        flat_obs = torch.cat(obs_buf)
        flat_act, flat_logp, flat_val = torch.cat(act_buf), torch.cat(logp_buf), torch.cat(val_buf)
        flat_adv, flat_ret = advantages.flatten(), returns.flatten()
        flat_mask = torch.cat(mask_buf) if has_masks else None
        # 3. Clipped-surrogate updates over shuffled minibatches.
        n = flat_obs.shape[0]
        stats = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clip_fraction": 0.0}
        updates = 0
        for _ in range(cfg.n_epochs):
            order = torch.as_tensor(self.rng.permutation(n))
            for start in range(0, n, cfg.minibatch_size):
                idx = order[start : start + cfg.minibatch_size]
                logits, values = self.net(flat_obs[idx])
                logits = masked_logits(logits, flat_mask[idx] if flat_mask is not None else None)
                log_probs = torch.log_softmax(logits, -1)
                new_logp = log_probs.gather(-1, flat_act[idx][:, None]).squeeze(-1)
                entropy = -(log_probs.exp() * log_probs).nan_to_num().sum(-1).mean()
                adv = flat_adv[idx]
                if cfg.normalize_advantage and len(idx) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                policy_loss, clip_fraction = ppo_policy_loss(new_logp, flat_logp[idx], adv, cfg.clip_range)
                value_loss = ppo_value_loss(values, flat_val[idx], flat_ret[idx], cfg.clip_range_vf)
                loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
                self.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                for key, value in (
                    ("policy_loss", policy_loss),
                    ("value_loss", value_loss),
                    ("entropy", entropy),
                    ("clip_fraction", clip_fraction),
                ):
                    stats[key] += float(value.detach())
                updates += 1
        row = {key: value / max(updates, 1) for key, value in stats.items()}
        row["mean_reward"] = float(torch.stack(rew_buf).sum(0).mean())
        return row

    def chooser(self, deterministic: bool = True) -> Chooser:
        """The policy as ``(observation, mask) -> action``: greedy, or sampled."""

        def choose(obs: np.ndarray, mask: np.ndarray | None) -> int:
            with torch.no_grad():
                logits = self.net(torch.as_tensor(obs)[None])[0][0]
            logits = masked_logits(logits, torch.as_tensor(mask) if mask is not None else None)
            if deterministic:
                return int(logits.argmax())
            return int(sample_actions(logits[None], self.torch_rng)[0])

        return choose

    def predict(self, deterministic: bool = True) -> Any:
        return self.env.decode(self.chooser(deterministic))

    def _state(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def _load_state(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
