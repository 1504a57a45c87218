"""RL building blocks shared by the agents and the fine-tuning PPO: GAE, PPO's clipped losses,
Polyak averaging and the soft Q-learning (path-consistency) losses of RLPrompt.

Every function is pure and works on batches of tensors; tests check them against values
computed by hand.
"""

from __future__ import annotations

import torch


def discounted_returns(
    rewards: torch.Tensor, dones: torch.Tensor, gamma: float, last_value: torch.Tensor | None = None
) -> torch.Tensor:
    """Returns ``G_t = r_t + gamma * G_{t+1}`` over ``[T, ...]`` rollouts, cut at ``dones``."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0]) if last_value is None else last_value
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t] + gamma * running * (1.0 - dones[t].float())
        returns[t] = running
    return returns


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_value: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over ``[T, ...]`` rollouts.

    ``dones[t]`` marks that the episode ended *after* step ``t`` (no bootstrap past it).
    Returns ``(advantages, returns)`` with ``returns = advantages + values``.
    """
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    next_value = last_value
    for t in reversed(range(rewards.shape[0])):
        not_done = 1.0 - dones[t].float()
        delta = rewards[t] + gamma * next_value * not_done - values[t]
        running = delta + gamma * lam * not_done * running
        advantages[t] = running
        next_value = values[t]
    return advantages, advantages + values


def ppo_policy_loss(
    log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate ``-E[min(rho A, clip(rho, 1-eps, 1+eps) A)]`` and the clip fraction."""
    ratio = torch.exp(log_probs - old_log_probs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages
    loss = -torch.minimum(unclipped, clipped).mean()
    clip_fraction = ((ratio - 1.0).abs() > clip).float().mean()
    return loss, clip_fraction


def ppo_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float | None
) -> torch.Tensor:
    """Squared error of the value head, optionally clipped around the rollout's values."""
    if clip is None:
        return 0.5 * (values - returns).pow(2).mean()
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * torch.maximum((values - returns).pow(2), (clipped - returns).pow(2)).mean()


@torch.no_grad()
def polyak_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    """``target <- (1 - tau) * target + tau * source`` parameter-wise (tau=1 copies)."""
    for t_param, s_param in zip(target.parameters(), source.parameters(), strict=True):
        t_param.mul_(1.0 - tau).add_(s_param, alpha=tau)


def soft_values(q_values: torch.Tensor) -> torch.Tensor:
    """``V(s) = logsumexp_a Q(s, a)`` over the last dim (entropy-regularised value, temperature 1)."""
    return torch.logsumexp(q_values, dim=-1)


def sql_single_step_loss(
    q: torch.Tensor, target_q: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Single-step path-consistency loss of soft Q-learning (Guo et al., used by RLPrompt).

    ``q``/``target_q``: ``[B, T, A]`` Q-values of the learned and target networks at each step,
    ``actions`` ``[B, T]``, ``rewards`` ``[B, T]`` (RLPrompt: 0 except the last step),
    ``lengths`` ``[B]`` valid steps. Per step:
    ``0.5 * (-V_bar(s_t) + V_bar(s_{t+1}) + r_t - A(s_t, a_t))^2`` with ``A = Q - V`` of the
    learned network and ``V_bar(s_T) = 0``.
    """
    mask = torch.arange(q.shape[1], device=q.device)[None, :] < lengths[:, None]
    advantage = q.gather(-1, actions.unsqueeze(-1)).squeeze(-1) - soft_values(q)
    v_bar = soft_values(target_q).detach()
    v_bar_next = torch.cat([v_bar[:, 1:], torch.zeros_like(v_bar[:, :1])], dim=1)
    last = mask & ~torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
    v_bar_next = torch.where(last, torch.zeros_like(v_bar_next), v_bar_next)
    residual = -v_bar + v_bar_next + rewards - advantage
    return (0.5 * residual.pow(2) * mask).sum() / mask.sum().clamp_min(1)


def sql_multi_step_loss(
    q: torch.Tensor, target_q: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Multi-step path-consistency loss: for each ``t``,
    ``0.5 * (-V_bar(s_t) + sum_{l>=t} r_l - sum_{l>=t} A(s_l, a_l))^2`` (gamma = 1)."""
    mask = (torch.arange(q.shape[1], device=q.device)[None, :] < lengths[:, None]).float()
    advantage = (q.gather(-1, actions.unsqueeze(-1)).squeeze(-1) - soft_values(q)) * mask
    v_bar = soft_values(target_q).detach()
    reward_to_go = torch.flip(torch.cumsum(torch.flip(rewards * mask, [1]), 1), [1])
    advantage_to_go = torch.flip(torch.cumsum(torch.flip(advantage, [1]), 1), [1])
    residual = -v_bar + reward_to_go - advantage_to_go
    return (0.5 * residual.pow(2) * mask).sum() / mask.sum().clamp_min(1)
