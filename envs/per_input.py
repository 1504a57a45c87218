"""PerInputDemoEnv: choose each input's own demonstrations, seeing the input.

The demonstration env (:mod:`rlprompt.envs.demos`) searches one block for every input; here an
episode is one input of the split, drawn at reset, and the agent fills its ``k`` demonstration
slots observing the input's sentence embedding (the same encoder retrieval uses, ``demos.encoder``)
and the pool examples chosen so far. The reward is that input's own reward under its block: its
raw class scores (one input scored alone cannot be batch-calibrated; evaluation calibrates over
the split as :meth:`rlprompt.task.Task.evaluate_per_input` does). A policy trained here gives any
input, seen or new, its own block (:meth:`PerInputDemoEnv.prompts_for`): the input-conditioned
counterpart of retrieval, where an observation finally carries information.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces

from rlprompt.config import Config
from rlprompt.envs.base import Chooser, ScoreRequest
from rlprompt.envs.demos import DemoSelectionEnv, DemosEnvConfig
from rlprompt.errors import ConfigError
from rlprompt.template import shows_input

if TYPE_CHECKING:
    from rlprompt.task import Task


@dataclass
class PerInputDemosEnvConfig(DemosEnvConfig):
    """``env`` section of the per-input demonstration env (``batch_size`` is unused: an episode
    scores its own input)."""

    kind: str = "demos_per_input"
    encoder: str | None = None
    """Sentence encoder of the observed input (a path or ``embedded:minilm``; null: ``demos.encoder``)."""


class PerInputDemoEnv(DemoSelectionEnv):
    """One input per episode; the agent picks its ``k`` demonstrations one slot at a time.

    * Observation: ``Box(-1, 1, (D + N,))``: the input's unit-length sentence embedding ``[D]``
      and, per pool example, 1.0 when it fills a slot already.
    * Action: ``Discrete(N)`` as in the demonstration env; :meth:`action_masks` also masks the
      pool examples that show the input itself (it is never its own demonstration).
    * Reward: 0 until the last slot, then the input's reward under its block (raw class scores).
    """

    kind = "demos_per_input"
    config_class = PerInputDemosEnvConfig
    _state_keys = ("_slots", "_input")

    def __init__(
        self,
        task: Task | None = None,
        config: Config | dict | str | None = None,
        overrides: list[str] | None = None,
        *,
        k: int = 4,
        balanced: bool = False,
        encoder: str | None = None,
        sentence_encoder: Any = None,
        batch_size: int | None = 16,
        split: str = "train",
        render_mode: str | None = None,
    ) -> None:
        super().__init__(
            task, config, overrides, k=k, balanced=balanced, batch_size=batch_size, split=split, render_mode=render_mode
        )
        if sentence_encoder is None:
            from rlprompt.task_models.embedding import SentenceEncoder

            sentence_encoder = SentenceEncoder(encoder or self.task.config.demos.encoder)
        elif not callable(getattr(sentence_encoder, "encode", None)):
            raise ConfigError(
                f"sentence_encoder must have encode(texts) -> [n, D] embeddings, got {type(sentence_encoder).__name__}"
            )
        self.encoder = sentence_encoder
        self.inputs = self.task.inputs(split)
        for i, example in enumerate(self.inputs):  # every input can fill its k slots without itself
            if not self._fillable(self._query_of(np.zeros(0, dtype=np.float32), example)[1]):
                raise ConfigError(
                    f"{split} input {i} cannot get k={k} demonstrations from the pool without its own "
                    f"entry{' within the class quota' if self.quota else ''}: lower env.k"
                )
        self._embeddings = self.embed(self.inputs)
        self.dim = int(self._embeddings.shape[1])
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(self.dim + len(self.pool),), dtype=np.float32)
        self._input = 0
        self._query: tuple[np.ndarray, np.ndarray] = self._query_of(self._embeddings[0], self.inputs[0])

    @classmethod
    def from_config(cls, task: Task, config: PerInputDemosEnvConfig) -> PerInputDemoEnv:
        return cls(
            task=task, k=config.k, balanced=config.balanced, encoder=config.encoder, batch_size=config.batch_size
        )

    # ------------------------------------------------------------ the observed input

    def embed(self, examples: Sequence[Any]) -> np.ndarray:
        """Unit-length sentence embeddings ``[n, D]`` of inputs (texts or field mappings)."""
        from rlprompt.retrieval import query_text

        if not examples:
            return np.zeros((0, getattr(self, "dim", 0)), dtype=np.float32)
        vectors = np.asarray(self.encoder.encode([query_text(x) for x in examples]), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.clip(vectors / np.maximum(norms, 1e-12), -1.0, 1.0).astype(np.float32)

    def _query_of(self, embedding: np.ndarray, example: Any) -> tuple[np.ndarray, np.ndarray]:
        """(embedding, mask of the pool examples that do not show ``example``)."""
        allowed = np.array([not shows_input(text, example) for text in self.pool.texts], dtype=bool)
        return embedding, allowed

    def _fillable(self, allowed: np.ndarray) -> bool:
        """Whether ``k`` slots can be filled from the ``allowed`` pool examples (class quota kept)."""
        if self.quota is None:
            return int(allowed.sum()) >= self.k
        labels = np.asarray(self.pool.labels, dtype=np.int64)[allowed]
        return int(np.minimum(np.bincount(labels, minlength=self.pool.num_classes), self.quota).sum()) >= self.k

    def mask_of(self, slots: Sequence[int]) -> np.ndarray:
        return super().mask_of(slots) & self._query[1]

    def observation_of(self, slots: Sequence[int]) -> np.ndarray:
        chosen: np.ndarray = np.zeros(len(self.pool), dtype=np.float32)
        chosen[[i for i in slots if i >= 0]] = 1.0
        return np.concatenate([self._query[0], chosen]).astype(np.float32)

    def prompts_for(self, examples: Sequence[Any], choose: Chooser) -> list[str]:
        """Each example's block as the policy ``choose`` fills it, observing that example (the
        env's own episode is left as it was)."""
        saved = self._query
        try:
            out = []
            for embedding, example in zip(self.embed(list(examples)), examples, strict=True):
                self._query = self._query_of(embedding, example)
                out.append(self.decode(choose))
            return out
        finally:
            self._query = saved

    # ------------------------------------------------------------ episodes

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed, options=options)
        chosen = (options or {}).get("input")
        if chosen is None:
            chosen = int(self.np_random.integers(len(self.inputs)))
        elif (
            isinstance(chosen, bool) or not isinstance(chosen, (int, np.integer)) or not 0 <= chosen < len(self.inputs)
        ):
            raise ConfigError(
                f"reset option input must be an index of the {self.split} split (0..{len(self.inputs) - 1}), "
                f"got {chosen!r}"
            )
        self._input = int(chosen)
        self._query = self._query_of(self._embeddings[self._input], self.inputs[self._input])
        return self.observation_of(self._slots), self._info(None, input=self._input)

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._query = self._query_of(self._embeddings[self._input], self.inputs[self._input])

    def _apply(self, action: Any) -> ScoreRequest | None:
        if self.episode_over():
            raise ConfigError("the episode is over (every demonstration slot is filled): call reset()")
        action = self.discrete_action(action)
        self._slots.append(action if self.action_masks()[action] else -1)
        if not self.episode_over():
            return None
        return ScoreRequest(self.task, self.current_prompt_text(), np.array([self._input]), self.split, calibrate=False)


__all__ = ["PerInputDemoEnv", "PerInputDemosEnvConfig"]
