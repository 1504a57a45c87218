"""Greedy hill-climbing: over edits (GrIPS-like) on the edit env, over swaps and replacements
on slot envs (the demonstration env).

Edit env: one iteration, every env copy restarts from the current prompt
(``reset(options=...)``) and tries one random applicable edit; the env rewards the change of
score on its minibatch; the best edit is kept if it improves by more than ``min_improvement``.
With the whole train split as the minibatch (``batch_size=None``) the current prompt's score is
cached and each candidate costs one evaluation.

Slot envs (:class:`~rlprompt.envs.base.SlotChoices`): the first iteration plays ``n_envs``
random valid sequences and keeps the best. Each later iteration replays the current sequence in
one env copy and a neighbour in each other copy - two slots swapped (order is part of the
search) or one slot replaced by an allowed choice not in the sequence - all scored on one
minibatch drawn for the iteration (each block leaves out the examples it shows), and moves to
the best neighbour if it beats the current sequence by more than ``min_improvement``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlprompt.agents.base import Agent, step_info
from rlprompt.agents.hill_climb_config import HillClimbConfig
from rlprompt.envs.base import SlotChoices


class HillClimb(Agent):
    config_class = HillClimbConfig

    def _setup(self) -> None:
        self.slots: list[int] | None = None
        """Slot envs: the current sequence of choices (None before the first iteration)."""
        self.slots_reward = float("-inf")
        """Its reward when last scored."""
        self.current = self.env.prompt_text([]) if isinstance(self.env, SlotChoices) else self.env.default_prompt()

    def _learn_step(self) -> dict[str, float]:
        if isinstance(self.env, SlotChoices):
            return self._slot_step(self.env)
        envs = self.vec_env.envs
        seed = self.seed if self.iterations == 0 else None
        self.vec_env.reset(seed=seed, options={"prompt": self.current})
        edits = [self.rng.choice(np.flatnonzero(env.action_masks()[:-1])) for env in envs]  # never "stop"
        _, improvement, _, _, infos = self.step_envs(np.array(edits))
        best = int(np.argmax(improvement))
        accepted = improvement[best] > self.config.min_improvement
        if accepted:
            self.current = step_info(infos, "prompt_value", best)
        return {"best_improvement": float(improvement[best]), "accepted": float(accepted)}

    # ------------------------------------------------------------ slot envs

    def _slot_step(self, env: SlotChoices) -> dict[str, float]:
        n = self.vec_env.num_envs
        if self.slots is None:
            candidates = [self._random_slots(env) for _ in range(n)]
            rewards = self._play(env, candidates)
            best = int(np.argmax(rewards))
            self.slots, self.slots_reward = candidates[best], float(rewards[best])
            self.current = env.prompt_text(self.slots)
            return {"best_improvement": 0.0, "accepted": 1.0, "current_reward": self.slots_reward}
        # copy 0 re-scores the current sequence (on this iteration's minibatch) unless it is alone
        replay = [list(self.slots)] if n >= 2 else []
        candidates = replay + [self._neighbour(env, self.slots) for _ in range(n - len(replay))]
        rewards = self._play(env, candidates)
        if replay:
            self.slots_reward = float(rewards[0])
        best = len(replay) + int(np.argmax(rewards[len(replay) :]))
        improvement = float(rewards[best]) - self.slots_reward
        accepted = improvement > self.config.min_improvement
        if accepted:
            self.slots, self.slots_reward = candidates[best], float(rewards[best])
            self.current = env.prompt_text(self.slots)
        return {"best_improvement": improvement, "accepted": float(accepted), "current_reward": self.slots_reward}

    def _play(self, env: SlotChoices, sequences: list[list[int]]) -> np.ndarray:
        """Play one episode per env copy, copy ``i`` choosing ``sequences[i]``, all scored on one
        minibatch (:meth:`SlotChoices.shared_minibatch`); the final rewards."""
        options = env.shared_minibatch(int(self.rng.integers(2**31)))
        self.vec_env.reset(seed=self.seed if self.iterations == 0 else None, options=options)
        rewards = np.zeros(len(sequences))
        for position in range(len(sequences[0])):
            _, rewards, _, _, _ = self.step_envs(np.array([s[position] for s in sequences]))
        return np.asarray(rewards, dtype=np.float64)

    def _random_slots(self, env: SlotChoices) -> list[int]:
        slots: list[int] = []
        while len(slots) < env.episode_length:
            slots.append(int(self.rng.choice(np.flatnonzero(env.mask_of(slots)))))
        return slots

    def _neighbour(self, env: SlotChoices, slots: list[int]) -> list[int]:
        """``slots`` with one position replaced by an allowed choice or, where the env's slots
        are :attr:`~rlprompt.envs.base.SlotChoices.swappable`, two positions swapped (each half
        the time)."""
        out = list(slots)
        swap = env.swappable and len(out) >= 2
        if swap and self.rng.random() < 0.5:
            i, j = self.rng.choice(len(out), size=2, replace=False)
            out[i], out[j] = out[j], out[i]
            return out
        position = int(self.rng.integers(len(out)))
        allowed = env.mask_at(out, position)
        allowed[out[position]] = False
        choices = np.flatnonzero(allowed)
        if len(choices):
            out[position] = int(self.rng.choice(choices))
        elif swap:  # nothing else fits this slot: reorder instead
            i, j = self.rng.choice(len(out), size=2, replace=False)
            out[i], out[j] = out[j], out[i]
        return out

    # ------------------------------------------------------------ prediction and state

    def predict(self, deterministic: bool = True) -> Any:
        return self.current

    def _state(self) -> dict[str, Any]:
        return {"current": self.current, "slots": self.slots, "slots_reward": self.slots_reward}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.current = state["current"]
        self.slots = None if state.get("slots") is None else [int(i) for i in state["slots"]]
        self.slots_reward = float(state.get("slots_reward", float("-inf")))
