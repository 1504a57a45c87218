"""Config of A2C (synchronous advantage actor-critic) (``agent.name: a2c``); the algorithm is in ``a2c.py``."""

from __future__ import annotations

from dataclasses import dataclass

from rlprompt.agents.config import AgentConfig, register_agent
from rlprompt.config import check_ranges


@register_agent(
    "a2c", agent="rlprompt.agents.a2c:A2C", env_kinds=("token", "edit", "demos", "label_words", "demos_per_input")
)
@dataclass
class A2CConfig(AgentConfig):
    n_envs: int = 4
    """Env copies per rollout (small rollouts, many updates: one update per rollout)."""
    n_steps: int | None = None
    """Rollout length per env; default one episode."""
    learning_rate: float = 1e-3
    """Adam step size."""
    gamma: float = 1.0
    """Discount."""
    gae_lambda: float = 1.0
    """1: Monte-Carlo advantages (the short, terminal-reward episodes of prompt envs)."""
    ent_coef: float = 0.05
    """Entropy bonus weight."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = 0.5
    """Gradient clipping norm."""
    hidden: int = 64
    """Width of the policy/value MLP."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(
            self,
            "agent",
            positive=("learning_rate", "max_grad_norm"),
            non_negative=("ent_coef", "vf_coef"),
            unit_interval=("gamma", "gae_lambda"),
            at_least_one=("n_steps", "hidden"),
        )
