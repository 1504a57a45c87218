"""CMA-ES over the soft-prompt subspace (Black-Box Tuning's setting), with the ``cma`` package.

One iteration is one generation: ``ask`` a population of subspace points ``z`` in
``[-1, 1]^d``, score them as soft prompts (batched calls of ``n_envs`` prompts), ``tell``
the negated rewards. The greedy prompt is the distribution's mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import cma
import numpy as np

from rlprompt.agents.base import Agent, AgentConfig, register_agent
from rlprompt.errors import ConfigError
from rlprompt.task_models import Prompt


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
        if self.sigma0 <= 0:
            raise ConfigError("agent.sigma0 must be > 0")
        if self.popsize is not None and self.popsize < 2:
            raise ConfigError("agent.popsize must be >= 2")


@register_agent("cma_es", CMAESConfig)
class CMAES(Agent):
    env_kinds = ("soft",)

    def _setup(self) -> None:
        d = self.env.subspace_dim
        options = {"bounds": [-1.0, 1.0], "seed": self.config.seed + 1, "verbose": -9}
        if self.config.popsize is not None:
            options["popsize"] = self.config.popsize
        # cma draws from numpy's global generator: keep its state with the agent (and saved),
        # so runs resume exactly and other code's global draws are untouched.
        outer = np.random.get_state()
        self.es = cma.CMAEvolutionStrategy(np.zeros(d), self.config.sigma0, options)
        self._np_state = np.random.get_state()
        np.random.set_state(outer)

    def _ask(self, n: int | None = None) -> list[np.ndarray]:
        outer = np.random.get_state()
        np.random.set_state(self._np_state)
        try:
            return self.es.ask() if n is None else self.es.ask(n)
        finally:
            self._np_state = np.random.get_state()
            np.random.set_state(outer)

    def _mean(self) -> np.ndarray:
        """The distribution's mean in the [-1, 1] box (phenotype of the bounded search)."""
        return np.clip(np.asarray(self.es.result.xfavorite, dtype=np.float32), -1.0, 1.0)

    def _learn_step(self) -> dict[str, float]:
        population = self._ask()
        rewards: list[float] = []
        n = self.vec_env.num_envs
        for start in range(0, len(population), n):
            chunk = np.asarray(population[start : start + n], dtype=np.float32)
            actions = np.zeros((n, chunk.shape[1]), dtype=np.float32)
            actions[: len(chunk)] = chunk
            if len(chunk) < n:  # pad with the mean: scored, but not told to the ES
                actions[len(chunk) :] = self._mean()
            _, reward, _, _, _ = self.step_envs(actions)
            for z, r in zip(chunk, reward[: len(chunk)], strict=True):
                self.tracker.add(self.env.soft_prompt(z), float(r))
            rewards.extend(float(r) for r in reward[: len(chunk)])
        self.es.tell(population, [-r for r in rewards])
        return {
            "mean_reward": float(np.mean(rewards)),
            "max_reward": float(np.max(rewards)),
            "sigma": float(self.es.sigma),
        }

    def predict(self, deterministic: bool = True) -> Prompt:
        z = self._mean() if deterministic else np.clip(np.asarray(self._ask(1)[0], dtype=np.float32), -1.0, 1.0)
        return self.env.soft_prompt(z)

    def _state(self) -> dict:
        return {"es": self.es, "np_state": self._np_state}

    def _load_state(self, state: dict) -> None:
        self.es, self._np_state = state["es"], state["np_state"]
