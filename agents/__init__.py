"""Prompt-optimization agents (installed as ``rlprompt.agents``).

Every agent is registered by name with its config dataclass in :data:`AGENT_REGISTRY`;
:func:`make_agent_config` builds a config from a dict (unknown keys rejected by name).
"""

from rlprompt.agents.base import (
    AGENT_REGISTRY,
    Agent,
    AgentConfig,
    BestPrompt,
    Callback,
    CheckpointCallback,
    Logger,
    PromptTracker,
    StopOnReward,
    env_kind,
    make_agent_config,
    register_agent,
)
from rlprompt.agents.ppo import PPO, PPOConfig
from rlprompt.agents.random_search import RandomSearch, RandomSearchConfig

__all__ = [
    "AGENT_REGISTRY",
    "PPO",
    "Agent",
    "AgentConfig",
    "BestPrompt",
    "Callback",
    "CheckpointCallback",
    "Logger",
    "PPOConfig",
    "PromptTracker",
    "RandomSearch",
    "RandomSearchConfig",
    "StopOnReward",
    "env_kind",
    "make_agent_config",
    "register_agent",
]
