"""rlprompt: prompt optimization for language models with reinforcement learning.

The core API: :class:`~rlprompt.config.Config` (typed YAML configs, :func:`load_config`),
:class:`~rlprompt.task.Task` (data + task model + reward), :func:`~rlprompt.task.evaluate_prompt`,
the task models in :mod:`rlprompt.task_models`, the envs in :mod:`rlprompt.envs`, the agents in
:mod:`rlprompt.agents` and the batch rewards in :mod:`rlprompt.rewards`. Names are imported
on first use, so ``import rlprompt`` (and the CLI's start) costs no torch import.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_LAZY = {
    "Config": "rlprompt.config",
    "DataConfig": "rlprompt.config",
    "RewardConfig": "rlprompt.config",
    "load_config": "rlprompt.config",
    "ConfigError": "rlprompt.errors",
    "DataError": "rlprompt.errors",
    "ModelLoadError": "rlprompt.errors",
    "RLPromptError": "rlprompt.errors",
    "RewardError": "rlprompt.errors",
    "HFTaskModelConfig": "rlprompt.task_models",
    "TaskModelConfig": "rlprompt.task_models",
    "RunResult": "rlprompt.results",
    "Task": "rlprompt.task",
    "evaluate_prompt": "rlprompt.task",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rlprompt' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
