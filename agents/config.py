"""What every agent's config has, and how an agent is registered (torch-free).

Each algorithm has a config module beside it (``ppo_config.py`` beside ``ppo.py``, as TRL keeps
``grpo_config.py`` beside ``grpo_trainer.py``) whose dataclass is registered with
:func:`register_agent`; the algorithm class is imported only when an agent is built, so a
config can be checked without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from rlprompt.config import check_ranges, config_from_dict
from rlprompt.errors import ConfigError
from rlprompt.registry import AGENTS, import_object

C = TypeVar("C", bound=type)


@dataclass
class AgentConfig:
    """Fields every agent has."""

    seed: int | None = None
    """Seeds the agent's numpy and torch generators and the envs' first reset; None follows the
    run's global seed (0 for an agent built directly)."""
    n_envs: int = 1
    """Env copies stepped together (one batched task-model call per step) when the agent is
    given a single env; a given vector env keeps its own size."""
    top_k: int = 10
    """Prompts (by mean train reward) kept for dev selection."""
    log_interval: int = 1
    """Log a row every this many learning iterations."""

    def __post_init__(self) -> None:
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32
        ):
            raise ConfigError(f"agent.seed must be an integer with 0 <= agent.seed < 2**32, got {self.seed!r}")
        check_ranges(self, "agent", at_least_one=("n_envs", "top_k", "log_interval"))


@dataclass(frozen=True)
class AgentSpec:
    """The registration of an agent in :data:`rlprompt.registry.AGENTS`."""

    name: str
    config_class: type[AgentConfig]
    entry_point: str
    """``"module:Class"`` of the algorithm (a :class:`~rlprompt.agents.base.Agent` subclass)."""
    env_kinds: tuple[str, ...]
    """Env kinds it runs on; the first is its main kind (``env.kind: auto``)."""
    is_baseline: bool = False
    """Random search: the baseline the learning agents are measured against."""
    needs_gradients: bool = False
    """Trains through the task model's gradients (class logits): classification tasks only."""

    @property
    def agent_class(self) -> Any:
        return import_object(self.entry_point)


def register_agent(
    name: str, *, agent: str, env_kinds: tuple[str, ...], is_baseline: bool = False, needs_gradients: bool = False
) -> Callable[[C], C]:
    """Decorator of an agent's config dataclass: ``@register_agent("ppo", agent="pkg.mod:PPO", env_kinds=(...))``."""

    def decorate(config_class: C) -> C:
        spec = AgentSpec(name, config_class, agent, tuple(env_kinds), is_baseline, needs_gradients)
        AGENTS.register(name, spec)
        config_class.agent_spec = spec  # type: ignore[attr-defined]
        return config_class

    return decorate


def make_agent_config(name: str, fields: dict[str, Any] | None = None) -> AgentConfig:
    """The config of agent ``name`` from a dict, with unknown keys rejected by name."""
    return config_from_dict(fields or {}, cls=AGENTS[name].config_class)
