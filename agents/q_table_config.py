"""Config of tabular Q-learning (``agent.name: q_table``); the algorithm is in ``q_table.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlprompt.agents.config import AgentConfig, register_agent
from rlprompt.config import check_ranges
from rlprompt.errors import ConfigError


@register_agent(
    "q_table", agent="rlprompt.agents.q_table:QTable", env_kinds=("selection", "edit", "demos", "label_words")
)
@dataclass
class QTableConfig(AgentConfig):
    n_envs: int = 8
    """Env copies stepped together."""
    exploration: Literal["epsilon", "ucb"] = "ucb"
    """Epsilon-greedy or UCB1 (optimism over visit counts)."""
    epsilon: float = 0.1
    """Exploration rate of epsilon-greedy."""
    ucb_c: float = 1.0
    """UCB1 exploration constant (in reward units)."""
    learning_rate: float | None = None
    """Step size alpha; None uses the sample mean (1 / visits)."""
    gamma: float = 1.0
    """Discount (edit env)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, "agent", non_negative=("ucb_c",), unit_interval=("gamma",))
        if not 0 <= self.epsilon <= 1:
            raise ConfigError("agent.epsilon must lie in [0, 1]")
        if self.learning_rate is not None and not 0 < self.learning_rate <= 1:
            raise ConfigError("agent.learning_rate must lie in (0, 1]")
