"""Config of white-box soft prompt tuning (``agent.name: prompt_tuning``); the algorithm is in ``prompt_tuning.py``."""

from __future__ import annotations

from dataclasses import dataclass

from rlprompt.agents.config import AgentConfig, register_agent
from rlprompt.config import check_ranges


@register_agent(
    "prompt_tuning", agent="rlprompt.agents.prompt_tuning:PromptTuning", env_kinds=("soft",), needs_gradients=True
)
@dataclass
class PromptTuningAgentConfig(AgentConfig):
    learning_rate: float = 0.05
    """Adam step size on the virtual-token embeddings."""
    batch_size: int = 16
    """Train examples per gradient step (the soft env's split)."""
    weight_decay: float = 0.0
    """Adam weight decay."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(
            self, "agent", positive=("learning_rate",), non_negative=("weight_decay",), at_least_one=("batch_size",)
        )
