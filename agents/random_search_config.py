"""Config of random search (the baseline) (``agent.name: random_search``); the algorithm is in ``random_search.py``."""

from __future__ import annotations

from dataclasses import dataclass

from rlprompt.agents.config import AgentConfig, register_agent


@register_agent(
    "random_search",
    agent="rlprompt.agents.random_search:RandomSearch",
    env_kinds=("token", "selection", "edit", "soft", "demos", "label_words"),
    is_baseline=True,
)
@dataclass
class RandomSearchConfig(AgentConfig):
    n_envs: int = 16
    """Prompts sampled (and scored in one call) per iteration."""
