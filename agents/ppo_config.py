"""Config of PPO (``agent.name: ppo``); the algorithm is in ``ppo.py``."""

from __future__ import annotations

from dataclasses import dataclass

from rlprompt.agents.config import AgentConfig, register_agent
from rlprompt.config import check_ranges
from rlprompt.errors import ConfigError


@register_agent(
    "ppo", agent="rlprompt.agents.ppo:PPO", env_kinds=("token", "edit", "demos", "label_words", "demos_per_input")
)
@dataclass
class PPOConfig(AgentConfig):
    n_envs: int = 16
    """Env copies per rollout (their prompts are scored in one batched call per step)."""
    n_steps: int | None = None
    """Rollout length per env; default one episode (prompt length or edit budget)."""
    learning_rate: float = 3e-3
    """Adam step size."""
    gamma: float = 1.0
    """Discount (1: the prompt's reward counts fully for every token)."""
    gae_lambda: float = 1.0
    """GAE's bias/variance trade-off; 1 (Monte-Carlo advantages) suits the short episodes
    with one terminal reward of prompt envs (0.95 stalled in local optima on the toy task)."""
    clip_range: float = 0.2
    """PPO's ratio clip epsilon."""
    clip_range_vf: float | None = None
    """Clip of the value update around the rollout's values (None: no clip)."""
    n_epochs: int = 4
    """Passes over each rollout."""
    minibatch_size: int = 32
    """Transitions per gradient step."""
    ent_coef: float = 0.05
    """Entropy bonus weight (keeps exploring a large vocabulary)."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = 0.5
    """Gradient clipping norm."""
    hidden: int = 64
    """Width of the policy/value MLP."""
    normalize_advantage: bool = True
    """Standardise advantages per minibatch."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(
            self,
            "agent",
            positive=("learning_rate", "max_grad_norm", "clip_range_vf"),
            non_negative=("ent_coef", "vf_coef"),
            at_least_one=("hidden",),
        )
        if not 0 < self.clip_range < 1:
            raise ConfigError("agent.clip_range must lie in (0, 1)")
        if self.n_steps is not None and self.n_steps < 1:
            raise ConfigError("agent.n_steps must be >= 1")
        if self.n_epochs < 1 or self.minibatch_size < 1:
            raise ConfigError("agent.n_epochs and agent.minibatch_size must be >= 1")
        if not 0 <= self.gae_lambda <= 1 or not 0 <= self.gamma <= 1:
            raise ConfigError("agent.gamma and agent.gae_lambda must lie in [0, 1]")
