"""Config of DQN (``agent.name: dqn``); the algorithm is in ``dqn.py``."""

from __future__ import annotations

from dataclasses import dataclass

from rlprompt.agents.config import AgentConfig, register_agent
from rlprompt.config import check_ranges
from rlprompt.errors import ConfigError


@register_agent(
    "dqn", agent="rlprompt.agents.dqn:DQN", env_kinds=("token", "edit", "demos", "label_words", "demos_per_input")
)
@dataclass
class DQNConfig(AgentConfig):
    n_envs: int = 16
    """Env copies stepped together."""
    buffer_size: int = 20_000
    """Replay capacity (transitions)."""
    batch_size: int = 64
    """Transitions per gradient step."""
    learning_rate: float = 1e-3
    """Adam step size."""
    gamma: float = 1.0
    """Discount."""
    tau: float = 0.05
    """Polyak rate of the target network (1: hard copy)."""
    gradient_steps: int = 2
    """Gradient steps per iteration."""
    learning_starts: int = 256
    """Transitions collected before learning."""
    exploration_initial: float = 1.0
    """Initial epsilon."""
    exploration_final: float = 0.05
    """Final epsilon."""
    exploration_steps: int = 8_000
    """Env steps over which epsilon decays."""
    hidden: int = 128
    """Width of the Q MLP."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(
            self,
            "agent",
            positive=("learning_rate",),
            unit_interval=("gamma",),
            at_least_one=("buffer_size", "batch_size", "gradient_steps", "exploration_steps", "hidden"),
            non_negative=("learning_starts",),
        )
        if not 0 < self.tau <= 1:
            raise ConfigError("agent.tau must lie in (0, 1]")
        if not 0 <= self.exploration_final <= self.exploration_initial <= 1:
            raise ConfigError("agent.exploration_final <= exploration_initial must lie in [0, 1]")
        if self.buffer_size < self.batch_size:
            raise ConfigError("agent.buffer_size must be >= agent.batch_size")
