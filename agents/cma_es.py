"""CMA-ES over the soft-prompt subspace (Black-Box Tuning's setting).

One iteration is one generation: sample a population of subspace points ``z`` from
``N(m, sigma^2 C)``, score them as soft prompts (batched calls of ``n_envs`` prompts),
then update the mean, the evolution paths, the covariance (rank-one + rank-mu) and the step
size (cumulative step-size adaptation), as in Hansen's tutorial (arXiv:1604.00772). Points
are clipped to the ``[-1, 1]`` box before scoring and the update uses the clipped points
(repair), so the search stays where the env can go. The greedy prompt is the mean.

The algorithm is written out here rather than taken from the ``cma`` package: its whole
state is a handful of arrays, so checkpoints hold plain tensors (``cma`` keeps state only
as a pickle, and evaluates option strings, both of which would let a checkpoint run code).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlprompt.agents.base import Agent
from rlprompt.agents.cma_es_config import CMAESConfig
from rlprompt.envs.base import SoftSubspace
from rlprompt.task_models import Prompt


class CMAState:
    """The search distribution ``N(mean, sigma^2 C)`` and its adaptation constants."""

    def __init__(self, dim: int, sigma0: float, popsize: int | None = None) -> None:
        n = dim
        self.dim = n
        self.popsize = popsize or 4 + int(3 * np.log(n))
        self.mu = self.popsize // 2
        weights = np.log(self.mu + 0.5) - np.log(np.arange(1, self.mu + 1))
        self.weights = weights / weights.sum()
        self.mueff = 1.0 / np.sum(self.weights**2)
        self.cs = (self.mueff + 2) / (n + self.mueff + 5)
        self.ds = 1 + 2 * max(0.0, np.sqrt((self.mueff - 1) / (n + 1)) - 1) + self.cs
        self.cc = (4 + self.mueff / n) / (n + 4 + 2 * self.mueff / n)
        self.c1 = 2 / ((n + 1.3) ** 2 + self.mueff)
        self.cmu = min(1 - self.c1, 2 * (self.mueff - 2 + 1 / self.mueff) / ((n + 2) ** 2 + self.mueff))
        self.chi_n = np.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))
        self.mean = np.zeros(n)
        self.sigma = float(sigma0)
        self.cov = np.eye(n)
        self.path_c = np.zeros(n)
        self.path_s = np.zeros(n)
        self.generation = 0

    def _eigen(self) -> tuple[np.ndarray, np.ndarray]:
        cov = (self.cov + self.cov.T) / 2
        eigenvalues, basis = np.linalg.eigh(cov)
        return basis, np.sqrt(np.maximum(eigenvalues, 1e-20))

    def ask(self, rng: np.random.Generator) -> np.ndarray:
        """``[popsize, dim]`` candidate points (before clipping)."""
        basis, scales = self._eigen()
        z = rng.standard_normal((self.popsize, self.dim))
        return self.mean + self.sigma * (z * scales) @ basis.T

    def tell(self, points: np.ndarray, losses: np.ndarray) -> None:
        """Update the distribution from evaluated ``points`` (lower ``losses`` are better)."""
        basis, scales = self._eigen()
        order = np.argsort(losses, kind="stable")[: self.mu]
        steps = (points[order] - self.mean) / self.sigma  # y_i
        step = self.weights @ steps  # y_w
        self.mean = self.mean + self.sigma * step
        inv_sqrt_cov = basis @ np.diag(1 / scales) @ basis.T
        self.path_s = (1 - self.cs) * self.path_s + np.sqrt(self.cs * (2 - self.cs) * self.mueff) * inv_sqrt_cov @ step
        self.generation += 1
        norm_s = np.linalg.norm(self.path_s) / np.sqrt(1 - (1 - self.cs) ** (2 * self.generation))
        h_sigma = float(norm_s < (1.4 + 2 / (self.dim + 1)) * self.chi_n)
        self.path_c = (1 - self.cc) * self.path_c + h_sigma * np.sqrt(self.cc * (2 - self.cc) * self.mueff) * step
        rank_mu = (steps * self.weights[:, None]).T @ steps
        decay = 1 - self.c1 - self.cmu + (1 - h_sigma) * self.c1 * self.cc * (2 - self.cc)
        self.cov = decay * self.cov + self.c1 * np.outer(self.path_c, self.path_c) + self.cmu * rank_mu
        self.sigma *= float(np.exp((self.cs / self.ds) * (np.linalg.norm(self.path_s) / self.chi_n - 1)))

    def state(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "sigma": self.sigma,
            "cov": self.cov,
            "path_c": self.path_c,
            "path_s": self.path_s,
            "generation": self.generation,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        for key in ("mean", "cov", "path_c", "path_s"):
            value = np.asarray(state[key], dtype=np.float64)
            if value.shape != getattr(self, key).shape:
                raise ValueError(f"CMA-ES {key} has shape {value.shape}, expected {getattr(self, key).shape}")
            setattr(self, key, value)
        self.sigma, self.generation = float(state["sigma"]), int(state["generation"])


class CMAES(Agent):
    config_class = CMAESConfig
    requires = (SoftSubspace,)

    def _setup(self) -> None:
        self.es = CMAState(self.env.subspace_dim, self.config.sigma0, self.config.popsize)

    def _mean(self) -> np.ndarray:
        return np.clip(self.es.mean, -1.0, 1.0).astype(np.float32)

    def _learn_step(self) -> dict[str, float]:
        population = np.clip(self.es.ask(self.rng), -1.0, 1.0).astype(np.float32)
        rewards: list[float] = []
        n = self.vec_env.num_envs
        for start in range(0, len(population), n):
            chunk = population[start : start + n]
            actions = np.zeros((n, chunk.shape[1]), dtype=np.float32)
            actions[: len(chunk)] = chunk
            if len(chunk) < n:  # pad with the mean: scored, but not told to the ES
                actions[len(chunk) :] = self._mean()
            _, reward, _, _, _ = self.step_envs(actions)
            rewards.extend(float(r) for r in reward[: len(chunk)])
        self.es.tell(population.astype(np.float64), -np.asarray(rewards))
        return {"mean_reward": float(np.mean(rewards)), "max_reward": float(np.max(rewards)), "sigma": self.es.sigma}

    def predict(self, deterministic: bool = True) -> Prompt:
        if deterministic:
            return self.env.soft_prompt(self._mean())
        return self.env.soft_prompt(np.clip(self.es.ask(self.rng)[0], -1.0, 1.0).astype(np.float32))

    def _state(self) -> dict:
        return {"es": self.es.state()}

    def _load_state(self, state: dict) -> None:
        self.es.load_state(state["es"])
