"""Config of greedy hill-climbing over edits or slot swaps and replacements (``agent.name: hill_climb``); the algorithm is in ``hill_climb.py``."""

from __future__ import annotations

from dataclasses import dataclass

from rlprompt.agents.config import AgentConfig, register_agent
from rlprompt.config import check_ranges


@register_agent("hill_climb", agent="rlprompt.agents.hill_climb:HillClimb", env_kinds=("edit", "demos", "label_words"))
@dataclass
class HillClimbConfig(AgentConfig):
    n_envs: int = 16
    """Candidate edits tried per iteration (scored in one batched call)."""
    min_improvement: float = 0.0
    """Keep an edit only if it raises the score by more than this."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, "agent", non_negative=("min_improvement",))
