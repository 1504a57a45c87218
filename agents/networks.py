"""Small networks over prompt-env observations, and greedy decoding of a policy into a prompt."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from rlprompt.envs import PromptEnv
from rlprompt.envs.base import MaskedActions
from rlprompt.errors import ConfigError


class ObsEncoder(nn.Module):
    """Embeds each slot of a ``MultiDiscrete`` (or ``Discrete``) observation and concatenates;
    a ``Box`` observation (an input's sentence embedding and the choices so far: the per-input
    env) passes through flattened."""

    def __init__(self, space: spaces.Space, embed_dim: int = 16) -> None:
        super().__init__()
        self.continuous = isinstance(space, spaces.Box)
        if self.continuous:
            self.out_dim = int(np.prod(space.shape))
            return
        if isinstance(space, spaces.MultiDiscrete):
            nvec = np.asarray(space.nvec, dtype=np.int64).reshape(-1)
        elif isinstance(space, spaces.Discrete):
            nvec = np.array([space.n], dtype=np.int64)
        else:
            raise ConfigError(f"ObsEncoder handles Discrete/MultiDiscrete/Box observations, not {space}")
        self.register_buffer("offsets", torch.as_tensor(np.concatenate([[0], np.cumsum(nvec)[:-1]]), dtype=torch.long))
        self.embedding = nn.Embedding(int(nvec.sum()), embed_dim)
        self.out_dim = len(nvec) * embed_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.continuous:
            return obs.float().reshape(obs.shape[0], -1)
        obs = obs.long().reshape(obs.shape[0], -1)
        return self.embedding(obs + self.offsets).flatten(1)


class ActorCritic(nn.Module):
    """Shared encoder + MLP trunk with a policy head (logits) and a value head."""

    def __init__(self, space: spaces.Space, n_actions: int, hidden: int = 64, embed_dim: int = 16) -> None:
        super().__init__()
        self.encoder = ObsEncoder(space, embed_dim)
        self.trunk = nn.Sequential(
            nn.Linear(self.encoder.out_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()
        )
        self.policy = nn.Linear(hidden, n_actions)
        self.value = nn.Linear(hidden, 1)
        nn.init.zeros_(self.policy.weight)
        nn.init.zeros_(self.policy.bias)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(self.encoder(obs))
        return self.policy(h), self.value(h).squeeze(-1)


class QNetwork(nn.Module):
    """Encoder + MLP to one Q-value per action."""

    def __init__(self, space: spaces.Space, n_actions: int, hidden: int = 128, embed_dim: int = 16) -> None:
        super().__init__()
        self.encoder = ObsEncoder(space, embed_dim)
        self.mlp = nn.Sequential(nn.Linear(self.encoder.out_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.encoder(obs))


def masked_logits(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return logits
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min)


def current_masks(envs: list[PromptEnv]) -> torch.Tensor | None:
    """``[N, A]`` action masks of the envs' current states (edit envs), else None."""
    if not isinstance(envs[0], MaskedActions):
        return None
    return torch.as_tensor(np.stack([env.action_masks() for env in envs]))


def seeded_module(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with its initial weights drawn from ``seed`` (global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def sample_actions(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One categorical sample per row, drawn from ``generator`` (reproducible)."""
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
