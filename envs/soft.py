"""SoftPromptEnv: continuous actions in a random subspace of soft prompts (Black-Box Tuning)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces

from rlprompt.config import Config, check_ranges
from rlprompt.envs.base import EnvConfig, PromptEnv, ScoreRequest, ScoreResult
from rlprompt.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from rlprompt.task import Task


@dataclass
class SoftEnvConfig(EnvConfig):
    """``env`` section of the soft-prompt env."""

    kind: str = "soft"
    n_tokens: int = 5
    """Virtual tokens."""
    subspace_dim: int = 50
    """Dimension of the random subspace searched (Black-Box Tuning's intrinsic dimension)."""
    bound: float = 1.0
    """Box bound of subspace coordinates."""
    projection_seed: int = 0
    """Seed of the random projection (0 <= seed < 2**32)."""
    clip_actions: bool = False
    """Actions outside the ``[-1, 1]`` box are refused (one error naming the coordinate); true
    clips them to the box instead, and the step's ``info["clipped"]`` says so (the reported
    ``|z|`` is then the clipped action's)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, "env", at_least_one=("n_tokens", "subspace_dim"), positive=("bound",))
        if self.projection_seed is not None and not 0 <= self.projection_seed < 2**32:
            raise ConfigError(f"env.projection_seed must lie in 0 <= seed < 2**32, got {self.projection_seed!r}")


class SoftPromptEnv(PromptEnv):
    """Single-step episodes: an action ``z`` in ``[-1, 1]^d`` becomes the soft prompt

    ``P = P0 + bound * reshape(z @ A, [n_tokens, hidden])``

    where ``A`` is a fixed ``[d, n_tokens * hidden]`` Gaussian projection drawn once from
    ``projection_seed`` (entries ``N(0, sigma_e^2 / d)``, ``sigma_e`` the task model's
    embedding std, so ``P - P0`` has the scale of real embeddings) and ``P0`` the embeddings
    of ``init_prompt`` (zeros without one). Reward: the task reward of ``P`` on a minibatch.
    Observation: a constant ``[0.]`` (the problem has no state between proposals).

    An action outside the box (or of another shape, or not finite) is refused with one error,
    unless ``clip_actions=True``: then it is clipped to the box and ``info["clipped"]`` is true.
    """

    kind = "soft"
    config_class = SoftEnvConfig
    _state_keys = ("_z",)

    def __init__(
        self,
        task: Task | None = None,
        config: Config | dict | str | None = None,
        overrides: list[str] | None = None,
        *,
        n_tokens: int | None = None,
        subspace_dim: int = 50,
        bound: float = 1.0,
        init_prompt: str | None = None,
        projection_seed: int = 0,
        clip_actions: bool = False,
        batch_size: int | None = 16,
        split: str = "train",
        render_mode: str | None = None,
    ) -> None:
        import torch

        super().__init__(task, config, overrides, batch_size=batch_size, split=split, render_mode=render_mode)
        model = self.task.task_model
        if not model.supports_soft_prompts:  # the declared SoftPromptable capability
            raise ConfigError(
                f"the soft env searches input embeddings, and task_model.kind={self.task.config.task_model.kind} "
                "has none (a served model takes text only): soft prompts need a local model"
            )
        hidden = model.hidden_size
        if init_prompt is not None:
            base = model.prompt_embeddings(init_prompt).float()
            if n_tokens is not None and n_tokens != base.shape[0]:
                raise ConfigError(f"init_prompt {init_prompt!r} has {base.shape[0]} tokens but n_tokens={n_tokens}")
        else:
            n_tokens = 5 if n_tokens is None else n_tokens
            if n_tokens < 1:
                raise ConfigError(f"n_tokens must be >= 1, got {n_tokens}")
            base = torch.zeros(n_tokens, hidden)
        self.n_tokens = int(base.shape[0])
        if subspace_dim < 1 or subspace_dim > self.n_tokens * hidden:
            raise ConfigError(
                f"subspace_dim must lie in 1..{self.n_tokens * hidden} (n_tokens x hidden), got {subspace_dim}"
            )
        if not bound > 0:
            raise ConfigError(f"bound must be > 0, got {bound}")
        self.subspace_dim = int(subspace_dim)
        self.bound = float(bound)
        self.clip_actions = bool(clip_actions)
        self.init_prompt = init_prompt
        self.base_prompt = base
        rng = np.random.default_rng(projection_seed)
        scale = model.embedding_std / np.sqrt(subspace_dim)
        self.projection = torch.from_numpy(rng.normal(0.0, scale, size=(subspace_dim, self.n_tokens * hidden))).float()
        self.action_space = spaces.Box(-1.0, 1.0, shape=(subspace_dim,), dtype=np.float32)
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self._z: np.ndarray | None = None
        self._clipped = False

    @classmethod
    def from_config(cls, task: Task, config: SoftEnvConfig) -> SoftPromptEnv:
        return cls(
            task=task,
            n_tokens=config.n_tokens,
            subspace_dim=config.subspace_dim,
            bound=config.bound,
            projection_seed=config.projection_seed,
            clip_actions=config.clip_actions,
            batch_size=config.batch_size,
        )

    def sample_action(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=self.subspace_dim).astype(np.float32)

    def default_prompt(self) -> torch.Tensor:
        return self.soft_prompt(np.zeros(self.subspace_dim, dtype=np.float32))

    def soft_prompt(self, z: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The ``[n_tokens, hidden]`` soft prompt of subspace point ``z`` (checked as an action:
        outside the box it is refused, or clipped with ``clip_actions``)."""
        import torch

        z_t = torch.from_numpy(self.checked_action(z)[0])
        return self.base_prompt + self.bound * (z_t @ self.projection).view(self.n_tokens, -1)

    def checked_action(self, action: Any) -> tuple[np.ndarray, bool]:
        """``action`` as a float32 vector in the box and whether it was clipped; an action of
        another shape, not numbers, not finite, or (without ``clip_actions``) outside the box
        is one :class:`ConfigError`."""
        d = self.subspace_dim
        if isinstance(action, (str, bytes)) or action is None:
            raise ConfigError(f"action must be a vector of {d} numbers, got {type(action).__name__} {action!r}")
        try:
            raw = np.asarray(action.detach().cpu() if hasattr(action, "detach") else action)
            with np.errstate(over="ignore", invalid="ignore"):  # beyond float64: inf, refused below
                z = raw.astype(np.float64)  # checked before the float32 cast, which would overflow to inf
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"action must be a vector of {d} numbers, got {action!r}") from None
        if raw.dtype.kind not in "iuf":
            raise ConfigError(f"action must be {d} finite numbers, got an array of {raw.dtype}")
        if z.shape != (d,):
            raise ConfigError(f"action must be {d} finite numbers (shape ({d},)), got shape {z.shape}")
        bad = np.flatnonzero(~np.isfinite(z))
        if bad.size:
            raise ConfigError(f"action must be {d} finite numbers, got {z[bad[0]]} at coordinate {bad[0]}")
        outside = np.flatnonzero(np.abs(z) > 1.0)
        if not outside.size:
            return z.astype(np.float32), False
        if not self.clip_actions:
            i = outside[0]
            raise ConfigError(
                f"action is outside the action space {self.action_space}: coordinate {i} is {float(z[i])!r} "
                f"({outside.size} of {d} coordinates outside [-1, 1]); clip it, or build the env with "
                "clip_actions=True (env.clip_actions: true) to have such actions clipped"
            )
        return np.clip(z, -1.0, 1.0).astype(np.float32), True

    def check_action(self, action: Any) -> tuple[np.ndarray, bool]:
        return self.checked_action(action)

    def current_prompt_text(self) -> str:
        start = f" around {self.init_prompt!r}" if self.init_prompt else ""
        if self._z is None:
            return f"<soft prompt {self.n_tokens}x{self.base_prompt.shape[1]}{start}>"
        return f"<soft prompt {self.n_tokens}x{self.base_prompt.shape[1]}{start}, |z|={np.linalg.norm(self._z):.3f}>"

    def _observation(self) -> np.ndarray:
        return np.zeros(1, dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed, options=options)
        self._z = None
        self._clipped = False
        self._last_result = None
        return self._observation(), self._info(None)

    def _apply(self, action: tuple[np.ndarray, bool]) -> ScoreRequest | None:
        self._z, self._clipped = action  # checked (and clipped when allowed) by check_action
        return ScoreRequest(self.task, self.soft_prompt(self._z), self._draw_indices(), self.split)

    def _finish(self, result: ScoreResult | None) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert result is not None
        self._last_result = result
        return self._observation(), float(result.reward), True, False, self._info(result, clipped=self._clipped)
