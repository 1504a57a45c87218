"""REINFORCE with a baseline and an entropy bonus.

* Token and demonstration envs: a categorical policy over the next word (or demonstration)
  given the prefix (the shared :class:`ActorCritic` network; its value head is the learned
  baseline), masked where the env marks valid actions.
* Soft env: a diagonal Gaussian policy over the subspace point ``z`` (mean and log-std are the
  parameters; a moving-average baseline), actions clipped to ``[-1, 1]``.

One iteration: every env copy plays one episode; returns are the episode's reward-to-go;
the policy gradient step weights log-probs by ``return - baseline``.
"""

from __future__ import annotations

import numpy as np
import torch

from rlprompt.agents.base import Agent
from rlprompt.agents.networks import ActorCritic, current_masks, masked_logits, sample_actions, seeded_module
from rlprompt.agents.reinforce_config import ReinforceConfig
from rlprompt.envs.base import Chooser, SoftSubspace
from rlprompt.errors import ConfigError
from rlprompt.rl import discounted_returns
from rlprompt.task_models import Prompt


class Reinforce(Agent):
    config_class = ReinforceConfig

    def _setup(self) -> None:
        self.soft = isinstance(self.env, SoftSubspace)  # a soft-prompt subspace: a Gaussian policy
        self.moving_baseline = 0.0
        self.baseline_initialised = False
        if self.soft:
            d = self.env.subspace_dim
            self.mean = torch.zeros(d, requires_grad=True)
            self.log_std = torch.full((d,), self.config.init_log_std, requires_grad=True)
            self.optimizer = torch.optim.Adam([self.mean, self.log_std], lr=self.config.soft_learning_rate)
        else:
            space, n = self.env.observation_space, int(self.env.action_space.n)
            self.net = seeded_module(self.seed, lambda: ActorCritic(space, n, self.config.hidden))
            self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.config.learning_rate)

    def _baseline_update(self, returns: torch.Tensor) -> float:
        value = float(returns.mean())
        if not self.baseline_initialised:
            self.moving_baseline, self.baseline_initialised = value, True
        else:
            decay = self.config.baseline_decay
            self.moving_baseline = decay * self.moving_baseline + (1 - decay) * value
        return self.moving_baseline

    def _advantage(self, adv: torch.Tensor) -> torch.Tensor:
        if self.config.normalize_advantage and adv.numel() > 1:
            return (adv - adv.mean()) / (adv.std() + 1e-8)
        return adv

    def _learn_step(self) -> dict[str, float]:
        return self._soft_step() if self.soft else self._token_step()

    def _soft_step(self) -> dict[str, float]:
        n = self.vec_env.num_envs
        noise = torch.randn(n, self.mean.shape[0], generator=self.torch_rng)
        with torch.no_grad():
            sample = self.mean + self.log_std.exp() * noise  # the Gaussian's own sample (for log-probs)
            z = sample.clamp(-1.0, 1.0)  # what the env gets
        _, reward, _, _, _ = self.step_envs(z.numpy())
        returns = torch.as_tensor(reward, dtype=torch.float32)
        baseline = self._baseline_update(returns)
        adv = self._advantage(returns - baseline)
        dist = torch.distributions.Normal(self.mean, self.log_std.exp())
        log_prob = dist.log_prob(sample).sum(-1)
        loss = -(log_prob * adv).mean() - self.config.ent_coef * dist.entropy().sum()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.mean.clamp_(-1.0, 1.0)
        return {
            "loss": float(loss.detach()),
            "mean_reward": float(returns.mean()),
            "std": float(self.log_std.detach().exp().mean()),
        }

    def _token_step(self) -> dict[str, float]:
        obs = self.reset_envs()
        obs_buf, act_buf, rew_buf, done_buf, mask_buf = [], [], [], [], []
        for _ in range(self.env.episode_length):
            obs_t = torch.as_tensor(obs)
            mask = current_masks(self.vec_env.envs)  # envs with action masks (edit, demos): valid actions only
            with torch.no_grad():
                actions = sample_actions(masked_logits(self.net(obs_t)[0], mask), self.torch_rng)
            obs, reward, terminated, truncated, _ = self.step_envs(actions.numpy())
            obs_buf.append(obs_t)
            act_buf.append(actions)
            mask_buf.append(mask)
            rew_buf.append(torch.as_tensor(reward, dtype=torch.float32))
            done_buf.append(torch.as_tensor(terminated | truncated))
        dones = torch.stack(done_buf)
        returns = discounted_returns(torch.stack(rew_buf), dones, gamma=1.0).flatten()
        # Steps after a copy's last finished episode belong to an unfinished one (prompts that
        # stopped early): their return is unknown, so they are left out of the loss.
        steps = torch.arange(dones.shape[0])[:, None].expand_as(dones)
        last_done = torch.where(dones, steps, torch.full_like(steps, -1)).max(0).values
        valid = (steps <= last_done[None, :]).flatten()
        logits, values = self.net(torch.cat(obs_buf))
        logits = masked_logits(logits, torch.cat(mask_buf) if mask_buf[0] is not None else None)
        logits, values, returns = logits[valid], values[valid], returns[valid]
        log_probs = torch.log_softmax(logits, -1)
        chosen = log_probs.gather(-1, torch.cat(act_buf)[valid][:, None]).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
        if self.config.baseline == "learned":
            adv = self._advantage(returns - values.detach())
            value_loss = 0.5 * (values - returns).pow(2).mean()
        else:
            adv = self._advantage(returns - self._baseline_update(returns))
            value_loss = torch.zeros(())
        loss = -(chosen * adv).mean() - self.config.ent_coef * entropy + 0.5 * value_loss
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.optimizer.step()
        return {
            "loss": float(loss.detach()),
            "entropy": float(entropy.detach()),
            "mean_reward": float(torch.stack(rew_buf).sum(0).mean()),
        }

    def predict(self, deterministic: bool = True) -> Prompt:
        if self.soft:
            with torch.no_grad():
                z = (
                    self.mean
                    if deterministic
                    else (self.mean + self.log_std.exp() * torch.randn(self.mean.shape, generator=self.torch_rng))
                )
            return self.env.soft_prompt(z.detach().clamp(-1.0, 1.0).numpy())

        return self.env.decode(self.chooser(deterministic))

    def chooser(self, deterministic: bool = True) -> Chooser:
        """The categorical policy as ``(observation, mask) -> action`` (discrete envs)."""
        if self.soft:
            raise ConfigError(
                "REINFORCE on the soft env has a Gaussian policy over vectors: there is no discrete "
                "policy to choose actions with"
            )

        def choose(obs: np.ndarray, mask: np.ndarray | None) -> int:
            with torch.no_grad():
                logits = masked_logits(
                    self.net(torch.as_tensor(obs)[None])[0], torch.as_tensor(mask)[None] if mask is not None else None
                )
            return int(logits.argmax()) if deterministic else int(sample_actions(logits, self.torch_rng)[0])

        return choose

    def _state(self) -> dict:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "baseline": (self.moving_baseline, self.baseline_initialised),
        }
        if self.soft:
            state.update(mean=self.mean.detach().clone(), log_std=self.log_std.detach().clone())
        else:
            state["net"] = self.net.state_dict()
        return state

    def _load_state(self, state: dict) -> None:
        if self.soft:
            with torch.no_grad():
                self.mean.copy_(state["mean"])
                self.log_std.copy_(state["log_std"])
        else:
            self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.moving_baseline, self.baseline_initialised = state["baseline"]
