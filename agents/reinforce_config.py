"""Config of REINFORCE (``agent.name: reinforce``); the algorithm is in ``reinforce.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlprompt.agents.config import AgentConfig, register_agent
from rlprompt.config import check_ranges
from rlprompt.errors import ConfigError


@register_agent(
    "reinforce",
    agent="rlprompt.agents.reinforce:Reinforce",
    env_kinds=("token", "soft", "demos", "label_words", "demos_per_input"),
)
@dataclass
class ReinforceConfig(AgentConfig):
    n_envs: int = 4
    """Episodes per policy-gradient step (scored together)."""
    learning_rate: float = 1e-3
    """Adam step size (token env)."""
    soft_learning_rate: float = 0.05
    """Adam step size of the Gaussian's mean and log-std (soft env)."""
    baseline: Literal["learned", "moving_average"] = "learned"
    """Token env: the value head (``learned``) or a moving average of returns."""
    baseline_decay: float = 0.9
    """Moving-average baseline's decay."""
    ent_coef: float = 0.05
    """Entropy bonus weight."""
    init_log_std: float = -1.0
    """Soft env: initial log standard deviation of the Gaussian."""
    hidden: int = 64
    """Width of the policy MLP (token env)."""
    normalize_advantage: bool = True
    """Standardise advantages over the batch."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(
            self,
            "agent",
            positive=("learning_rate", "soft_learning_rate"),
            non_negative=("ent_coef",),
            at_least_one=("hidden",),
        )
        if not 0 <= self.baseline_decay < 1:
            raise ConfigError("agent.baseline_decay must lie in [0, 1)")
