"""Prompt-optimization agents (installed as ``rlprompt.agents``).

Importing this package registers every agent's config in :data:`rlprompt.registry.AGENTS`
(torch-free: the algorithms import when an agent is built). Each algorithm is a module
(``ppo.py``) with its config beside it (``ppo_config.py``); a new agent is those two files and
one line in ``_CONFIG_MODULES``. ``from rlprompt.agents import PPO`` imports the algorithm.
"""

from __future__ import annotations

import importlib
from typing import Any

from rlprompt.agents.config import AgentConfig, AgentSpec, make_agent_config, register_agent
from rlprompt.registry import AGENTS

_CONFIG_MODULES = (
    "a2c",
    "cma_es",
    "dqn",
    "hill_climb",
    "ppo",
    "prompt_tuning",
    "q_table",
    "random_search",
    "reinforce",
    "sql",
)
for _module in _CONFIG_MODULES:
    importlib.import_module(f"rlprompt.agents.{_module}_config")

AGENT_REGISTRY = AGENTS
"""Name -> :class:`AgentSpec` (``.config_class``, ``.agent_class``, ``.env_kinds``)."""

_LAZY = {
    "Agent": "rlprompt.agents.base",
    "BestPrompt": "rlprompt.agents.base",
    "step_info": "rlprompt.agents.base",
    "A2C": "rlprompt.agents.a2c",
    "A2CConfig": "rlprompt.agents.a2c_config",
    "CMAES": "rlprompt.agents.cma_es",
    "CMAESConfig": "rlprompt.agents.cma_es_config",
    "DQN": "rlprompt.agents.dqn",
    "DQNConfig": "rlprompt.agents.dqn_config",
    "HillClimb": "rlprompt.agents.hill_climb",
    "HillClimbConfig": "rlprompt.agents.hill_climb_config",
    "PPO": "rlprompt.agents.ppo",
    "PPOConfig": "rlprompt.agents.ppo_config",
    "PromptTuning": "rlprompt.agents.prompt_tuning",
    "PromptTuningAgentConfig": "rlprompt.agents.prompt_tuning_config",
    "QTable": "rlprompt.agents.q_table",
    "QTableConfig": "rlprompt.agents.q_table_config",
    "RandomSearch": "rlprompt.agents.random_search",
    "RandomSearchConfig": "rlprompt.agents.random_search_config",
    "Reinforce": "rlprompt.agents.reinforce",
    "ReinforceConfig": "rlprompt.agents.reinforce_config",
    "SoftQLearning": "rlprompt.agents.sql",
    "SQLConfig": "rlprompt.agents.sql_config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rlprompt.agents' has no attribute {name!r}")


__all__ = ["AGENT_REGISTRY", "AgentConfig", "AgentSpec", "make_agent_config", "register_agent", *_LAZY]
