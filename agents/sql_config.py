"""Config of soft Q-learning (RLPrompt) (``agent.name: sql``); the algorithm is in ``sql.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlprompt.agents.config import AgentConfig, register_agent
from rlprompt.config import check_ranges
from rlprompt.errors import ConfigError


@register_agent("sql", agent="rlprompt.agents.sql:SoftQLearning", env_kinds=("token",))
@dataclass
class SQLConfig(AgentConfig):
    n_envs: int = 16
    """Episodes sampled per update (their prompts are scored in one batched call)."""
    backbone: str = "embedded"
    """Frozen policy LM: hub id or path; ``embedded`` is the packaged MiniLM encoder."""
    mlp_hidden: int = 256
    """Hidden width of the trainable MLP."""
    learning_rate: float = 1e-3
    """Adam step size of the MLP."""
    tau: float = 0.05
    """Polyak rate of the target MLP."""
    gradient_steps: int = 4
    """Updates per sampled batch (soft Q-learning is off-policy, so a batch can be reused)."""
    loss: Literal["single", "multi", "mixed"] = "mixed"
    """Path-consistency loss: single-step, multi-step, or their mean (RLPrompt's default)."""
    sample_top_k: int | None = 50
    """Top-k sampling during training (None: the full softmax)."""
    reward_scale: float = 5.0
    """Scale of the z-scored rewards."""
    reward_zscore: bool = True
    """Standardise each batch's rewards (RLPrompt's normalisation)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(
            self, "agent", positive=("learning_rate", "reward_scale"), at_least_one=("mlp_hidden", "gradient_steps")
        )
        if not 0 < self.tau <= 1:
            raise ConfigError("agent.tau must lie in (0, 1]")
        if self.sample_top_k is not None and self.sample_top_k < 1:
            raise ConfigError("agent.sample_top_k must be >= 1")
