"""Prompt-optimization agents (installed as ``rlprompt.agents``).

Every agent is registered by name with its config dataclass in :data:`AGENT_REGISTRY`;
:func:`make_agent_config` builds a config from a dict (unknown keys rejected by name).
"""

from rlprompt.agents.a2c import A2C, A2CConfig
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
from rlprompt.agents.cma_es import CMAES, CMAESConfig
from rlprompt.agents.dqn import DQN, DQNConfig
from rlprompt.agents.hill_climb import HillClimb, HillClimbConfig
from rlprompt.agents.ppo import PPO, PPOConfig
from rlprompt.agents.prompt_tuning import PromptTuning, PromptTuningAgentConfig
from rlprompt.agents.q_table import QTable, QTableConfig
from rlprompt.agents.random_search import RandomSearch, RandomSearchConfig
from rlprompt.agents.reinforce import Reinforce, ReinforceConfig
from rlprompt.agents.sql import SoftQLearning, SQLConfig

__all__ = [
    "A2C",
    "AGENT_REGISTRY",
    "CMAES",
    "DQN",
    "PPO",
    "A2CConfig",
    "CMAESConfig",
    "DQNConfig",
    "HillClimb",
    "HillClimbConfig",
    "PromptTuning",
    "PromptTuningAgentConfig",
    "QTable",
    "QTableConfig",
    "Reinforce",
    "ReinforceConfig",
    "SQLConfig",
    "SoftQLearning",
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
