"""Config of CMA-ES over the soft-prompt subspace (``agent.name: cma_es``); the algorithm is in ``cma_es.py``."""

from __future__ import annotations

from dataclasses import dataclass

from rlprompt.agents.config import AgentConfig, register_agent
from rlprompt.errors import ConfigError


@register_agent("cma_es", agent="rlprompt.agents.cma_es:CMAES", env_kinds=("soft",))
@dataclass
class CMAESConfig(AgentConfig):
    n_envs: int = 16
    """Env copies: population members scored per batched call."""
    sigma0: float = 0.5
    """Initial step size, in units of the [-1, 1] box."""
    popsize: int | None = None
    """Population size; None uses CMA-ES's default 4 + 3 ln(d)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.sigma0 > 0:
            raise ConfigError(f"agent.sigma0 must be > 0, got {self.sigma0}")
        if self.popsize is not None and self.popsize < 2:
            raise ConfigError(f"agent.popsize must be >= 2, got {self.popsize}")
