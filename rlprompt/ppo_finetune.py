"""PPO fine-tuning of a causal LM on a task reward: rlprompt's own, compact implementation.

trl >= 1.13 dropped its PPOTrainer; this file keeps PPO available, readable top to bottom in
:meth:`PPOFinetuner.step`: sample answers, score them, shape per-token rewards with a KL
penalty to the frozen reference model, estimate advantages with GAE from a value head, then
take clipped-surrogate steps on minibatches for a few epochs (Ouyang et al. / Ziegler et al.).

The reference model is the policy with its LoRA adapter disabled (no second copy in memory)
or, for full fine-tuning, a frozen copy made at the start. Queries are left-padded so every
answer starts at the same position.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any, Literal, overload

import torch
from torch import nn

from rlprompt.config import PPOFinetuneConfig
from rlprompt.errors import ConfigError
from rlprompt.rl import gae, ppo_policy_loss, ppo_value_loss

RewardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(example_indices [B], answer_ids [B, T]) -> rewards [B]``."""


class PPOFinetuner:
    """PPO on ``policy`` (a causal LM, optionally a PEFT model) for ``reward_fn``."""

    def __init__(
        self,
        policy: Any,
        pad_token_id: int,
        reward_fn: RewardFn,
        config: PPOFinetuneConfig,
        *,
        learning_rate: float,
        kl_coef: float,
        temperature: float,
        max_new_tokens: int,
    ) -> None:
        self.policy = policy
        self.pad_token_id = pad_token_id
        self.reward_fn = reward_fn
        self.config = config
        self.kl_coef = kl_coef
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.device = next(policy.parameters()).device
        hidden = (
            policy.config.get_text_config().hidden_size
            if hasattr(policy.config, "get_text_config")
            else policy.config.hidden_size
        )
        self.value_head = nn.Linear(hidden, 1).to(self.device)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.uses_adapter = hasattr(policy, "disable_adapter")
        self.reference = None if self.uses_adapter else copy.deepcopy(policy).eval().requires_grad_(False)
        self.policy_parameters = [p for p in policy.parameters() if p.requires_grad]
        if not self.policy_parameters:
            raise ConfigError("the policy has no trainable parameters (a LoRA adapter, or requires_grad weights)")
        self.optimizer = torch.optim.Adam(self.policy_parameters + list(self.value_head.parameters()), lr=learning_rate)

    # ------------------------------------------------------------------ pieces

    @contextlib.contextmanager
    def _reference(self) -> Iterator[Any]:
        if self.uses_adapter:
            with self.policy.disable_adapter():
                yield self.policy
        else:
            yield self.reference

    @overload
    def _forward(
        self, model: Any, ids: torch.Tensor, mask: torch.Tensor, n_query: int, with_values: Literal[True]
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    @overload
    def _forward(
        self, model: Any, ids: torch.Tensor, mask: torch.Tensor, n_query: int, with_values: Literal[False]
    ) -> tuple[torch.Tensor, None]: ...

    def _forward(
        self, model: Any, ids: torch.Tensor, mask: torch.Tensor, n_query: int, with_values: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs ``[B, T]`` of the answer tokens (at temperature) and values ``[B, T]``."""
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=with_values)
        logits = out.logits[:, n_query - 1 : -1].float() / self.temperature
        answer = ids[:, n_query:]
        log_probs = torch.log_softmax(logits, dim=-1).gather(-1, answer.unsqueeze(-1)).squeeze(-1)
        values = None
        if with_values:
            # detached: the value head reads the policy's features without reshaping them, so the
            # value loss cannot pull the (LoRA) weights away from the policy objective
            states = out.hidden_states[-1][:, n_query - 1 : -1].detach().float()
            values = self.value_head(states).squeeze(-1)
        return log_probs, values

    @torch.no_grad()
    def generate(self, query_ids: torch.Tensor, query_mask: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """Answer ids ``[B, max_new_tokens]`` (padded after an early end)."""
        kwargs: dict[str, Any] = {
            "do_sample": sample,
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.max_new_tokens,
            "pad_token_id": self.pad_token_id,
        }
        if sample:
            kwargs.update(temperature=self.temperature, top_k=0, top_p=1.0)
        out = self.policy.generate(input_ids=query_ids, attention_mask=query_mask, **kwargs)
        return out[:, query_ids.shape[1] :]

    # ------------------------------------------------------------------ one PPO iteration

    def step(
        self, example_indices: torch.Tensor, query_ids: torch.Tensor, query_mask: torch.Tensor
    ) -> dict[str, float]:
        """Roll out one answer per query row, then run the PPO epochs on that rollout."""
        cfg = self.config
        n_query = query_ids.shape[1]
        # 1. rollout: sample answers and score them with the task reward
        answers = self.generate(query_ids, query_mask)
        ids = torch.cat([query_ids, answers], dim=1)
        mask = torch.cat([query_mask, torch.ones_like(answers)], dim=1)
        scores = self.reward_fn(example_indices, answers).to(self.device).float()
        with torch.no_grad():
            old_log_probs, old_values = self._forward(self.policy, ids, mask, n_query, with_values=True)
            with self._reference() as reference:
                ref_log_probs, _ = self._forward(reference, ids, mask, n_query, with_values=False)
        # 2. per-token rewards: KL penalty at every answer token, the task score at the last
        kl = old_log_probs - ref_log_probs
        rewards = -self.kl_coef * kl
        rewards[:, -1] += scores
        dones = torch.zeros_like(rewards)
        dones[:, -1] = 1.0
        # 3. advantages by GAE (time-major), returns for the value head
        advantages, returns = gae(
            rewards.T, old_values.T, dones.T, torch.zeros_like(scores), gamma=cfg.gamma, lam=cfg.gae_lambda
        )
        advantages, returns = advantages.T, returns.T
        if cfg.whiten_advantages and advantages.numel() > 1:
            centred = advantages - advantages.mean()
            std = advantages.std()
            # equal advantages carry no signal: dividing their rounding noise by ~0 would invent one
            advantages = centred / (std + 1e-8) if std > 1e-6 else torch.zeros_like(centred)
        # 4. clipped-surrogate epochs over minibatches (dropout stays off: eval mode keeps the
        #    ratio of an unchanged policy at exactly 1)
        batch = ids.shape[0]
        size = max(1, batch // cfg.minibatches)
        stats: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clip_fraction": []}
        for _ in range(cfg.epochs):
            order = torch.randperm(batch, device=self.device)
            for start in range(0, batch, size):
                rows = order[start : start + size]
                log_probs, values = self._forward(self.policy, ids[rows], mask[rows], n_query, with_values=True)
                policy_loss, clip_fraction = ppo_policy_loss(
                    log_probs, old_log_probs[rows], advantages[rows], cfg.clip_range
                )
                value_loss = ppo_value_loss(values, old_values[rows], returns[rows], cfg.value_clip)
                loss = policy_loss + cfg.vf_coef * value_loss
                self.optimizer.zero_grad()
                loss.backward()
                # clipped apart: a large value-loss gradient must not shrink the policy's step
                nn.utils.clip_grad_norm_(self.policy_parameters, cfg.max_grad_norm)
                nn.utils.clip_grad_norm_(self.value_head.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                stats["policy_loss"].append(float(policy_loss.detach()))
                stats["value_loss"].append(float(value_loss.detach()))
                stats["clip_fraction"].append(float(clip_fraction))
        return {
            "reward": float(scores.mean()),
            "kl": float(kl.sum(-1).mean()),
            **{key: sum(v) / len(v) for key, v in stats.items()},
        }
