"""rlprompt: prompt optimization for language models with reinforcement learning.

The core API: :class:`~rlprompt.config.Config` (typed YAML configs), :class:`~rlprompt.task.Task`
(data + task model + reward), :func:`~rlprompt.task.evaluate_prompt`, the task models in
:mod:`rlprompt.task_models` and the batch rewards in :mod:`rlprompt.rewards`.
"""

from rlprompt.config import Config, DataConfig, RewardConfig, TaskModelConfig, load_config
from rlprompt.errors import ConfigError, DataError, ModelLoadError, RewardError, RLPromptError
from rlprompt.task import Task, evaluate_prompt

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "DataError",
    "ModelLoadError",
    "RLPromptError",
    "RewardConfig",
    "RewardError",
    "Task",
    "TaskModelConfig",
    "evaluate_prompt",
    "load_config",
]
