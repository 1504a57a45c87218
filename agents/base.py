"""The agent base class (Stable-Baselines3's shape: ``learn``, ``predict``, ``save``, ``load``).

An :class:`Agent` learns on a prompt env (or a batched vector env of copies sharing one task)
until a budget of prompt evaluations, LM calls or env steps is spent; ``predict()`` returns
its greedy prompt without spending evaluations; ``best_prompt()`` re-scores the greedy prompt
and the top prompts seen during training (plus any given ones, e.g. the manual prompt) on
whole splits and returns the best (RLPrompt's dev selection, on train + dev by default); ``save``/``load`` keep the whole state (networks,
optimizers, buffers, RNGs, search state, counters) so a killed run resumes exactly.

Each algorithm lives in one file of this package, its update loop readable top to bottom in
``_learn_step``, with its config dataclass in the ``*_config.py`` module beside it. Agents
meet envs only through the generic env methods (``episode_length``, ``sample_action``,
``decode``, ``default_prompt``), never through their kinds.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol, cast, runtime_checkable

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from rlprompt import progress
from rlprompt.agents.config import AgentConfig, AgentSpec
from rlprompt.budget import API_KEYS, Budget, BudgetExhausted
from rlprompt.callbacks import Callback
from rlprompt.checkpoint import load_checkpoint, save_checkpoint
from rlprompt.config import config_from_dict
from rlprompt.envs import BatchedPromptVectorEnv, PromptEnv
from rlprompt.envs.base import Chooser
from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.logger import Logger
from rlprompt.registry import AGENTS
from rlprompt.task import Task
from rlprompt.task_models.base import Prompt, prompt_key
from rlprompt.template import LabeledPrompt
from rlprompt.tracker import PromptRecord, PromptTracker


@runtime_checkable
class DiscretePolicy(Protocol):
    """An agent with a policy over discrete actions (PPO, A2C, REINFORCE, DQN, the Q-table): it
    can choose actions for any observation, which is what decodes a prompt from a fresh episode
    or, on the per-input env, each input's prompt."""

    def chooser(self, deterministic: bool = True) -> Chooser:
        """The policy as ``(observation, action mask or None) -> action``."""
        ...


@dataclass
class BestPrompt:
    """The selected prompt with its scores and the cost of selecting it."""

    prompt: Prompt
    text: str | None
    train_reward: float | None
    """Its mean train reward over the minibatches training scored it on (None: never scored)."""
    scores: dict[str, Any]
    """Its metrics on the selection splits, pooled (example-weighted means)."""
    dev_lm_calls: int
    """LM calls of the selection (named for RLPrompt's dev selection)."""
    candidates: int
    extra_won: bool = False
    """One of the ``extra`` prompts (the manual prompt) won: nothing training found beat it."""
    guard_dropped: int = 0
    """Found candidates that outranked the winner on the pooled splits but scored below the first
    ``extra`` prompt on a guard split (``selection.guard_splits``), and were dropped."""


def pool_split_metrics(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Metrics of several splits as one set of examples: each numeric metric's example-weighted
    mean (exact for means over examples: accuracy, rewards, EM, F1, ROUGE; an approximation for
    corpus-level BLEU/chrF), ``n`` summed."""
    if len(parts) == 1:
        return dict(parts[0])
    total = sum(int(part["n"]) for part in parts)
    pooled: dict[str, Any] = {"n": total}
    for key, value in parts[0].items():
        numeric = [part.get(key) for part in parts]
        if key == "n" or isinstance(value, bool) or not all(isinstance(v, (int, float)) for v in numeric):
            continue
        values = cast(list[float], numeric)  # every one an int or a float (checked above)
        pooled[key] = sum(float(v) * int(part["n"]) for v, part in zip(values, parts, strict=True)) / max(total, 1)
    return pooled


# ------------------------------------------------------------------ the base class


class Agent(ABC):
    """Base class of all agents (see module docstring)."""

    config_class: ClassVar[type[AgentConfig]] = AgentConfig
    """The registered config dataclass; its registration (:class:`AgentSpec`) sets the three below."""
    name: ClassVar[str] = "agent"
    env_kinds: ClassVar[tuple[str, ...]] = ()
    """Which env kinds the agent runs on (the first is its main one)."""
    is_baseline: ClassVar[bool] = False
    requires: ClassVar[tuple[type, ...]] = ()
    """Capability protocols of ``rlprompt.envs.base`` the env must have (``WordVocabulary``,
    ``SoftSubspace``), checked when the agent is built. Capabilities an agent uses only where an
    env has them (``MaskedActions``, ``SlotChoices``) are tested with ``isinstance`` where they
    are read, never probed by attribute name."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec: AgentSpec | None = getattr(cls.config_class, "agent_spec", None)
        if spec is not None:
            cls.name, cls.env_kinds, cls.is_baseline = spec.name, spec.env_kinds, spec.is_baseline

    def __init__(
        self, env: PromptEnv | BatchedPromptVectorEnv, config: AgentConfig | None = None, logger: Logger | None = None
    ) -> None:
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise ConfigError(
                f"agent '{self.name}' needs a {self.config_class.__name__}, got {type(self.config).__name__}"
            )
        if isinstance(env, gym.Wrapper):
            raise ConfigError(
                "pass env.unwrapped to an agent: agents step envs through their batched API, "
                "so Gymnasium wrappers would be bypassed"
            )
        if isinstance(env, BatchedPromptVectorEnv):
            if env.autoreset_mode != AutoresetMode.SAME_STEP:
                raise ConfigError(
                    "agents need a vector env with autoreset_mode='SameStep' "
                    "(make_batched_vector_env(..., autoreset_mode='SameStep'))"
                )
            self.vec_env = env
        else:
            if not isinstance(env, PromptEnv):
                raise ConfigError(f"{type(env).__name__} is not an rlprompt prompt env")
            copies = [env] + [env.spawn() for _ in range(self.config.n_envs - 1)]
            self.vec_env = BatchedPromptVectorEnv(copies, autoreset_mode="SameStep")
        self.env: PromptEnv = self.vec_env.envs[0]
        kind = self.env.kind
        if getattr(self.env, "has_variant_tasks", False):
            raise ConfigError(
                "agents search prompt-only candidates; candidates with their own template or "
                "verbalizers are for direct env use (dev selection could not re-score them)"
            )
        if kind not in self.env_kinds:
            raise ConfigError(f"agent '{self.name}' runs on {list(self.env_kinds)} envs, not on a {kind} env")
        missing = [cap.__name__ for cap in self.requires if not isinstance(self.env, cap)]
        if missing:
            raise ConfigError(f"agent '{self.name}' needs an env with {', '.join(missing)}; this {kind} env has none")
        self.task: Task = self.env.task
        self.logger = logger or Logger(None)
        self.seed = 0 if self.config.seed is None else int(self.config.seed)
        self.rng = np.random.default_rng(self.seed)
        self.torch_rng = torch.Generator().manual_seed(self.seed)
        self.tracker = PromptTracker(self.config.top_k)
        self.iterations = 0
        self.prompt_evals = 0
        self.lm_calls = self.env.setup_lm_calls  # what building the env spent is part of the search
        self.api_spent: dict[str, float] = dict.fromkeys(API_KEYS, 0)
        """Served models' requests, tokens and money spent by ``learn()`` (see ``API_KEYS``)."""
        self.env_steps = 0
        self._in_learn = False
        self._budget: Budget | None = None
        self._start_api: dict[str, float] = dict.fromkeys(API_KEYS, 0)
        self._obs: Any = None
        self.checkpoint_extra: dict[str, Any] | None = None
        self._setup()

    # ---------------------------------------------------------- for subclasses

    def _setup(self) -> None:  # noqa: B027 - optional hook
        """Build networks, optimizers and search state."""

    @abstractmethod
    def _learn_step(self) -> dict[str, float]:
        """One learning iteration (a rollout and its update, or one search generation)."""

    @abstractmethod
    def predict(self, deterministic: bool = True) -> Prompt:
        """The agent's own prompt: its greedy policy's output (no evaluations spent)."""

    def _state(self) -> dict[str, Any]:
        """Algorithm state to save (networks, optimizers, buffers, search state)."""
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what :meth:`_state` returned."""

    # ---------------------------------------------------------- env interaction

    def reset_envs(self) -> Any:
        if self._obs is None:
            self._obs, _ = self.vec_env.reset(seed=self.seed)
        return self._obs

    def step_envs(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step the vector env (same-step autoreset) and record every scored prompt (text or soft)
        in the tracker, with its reward.

        Inside ``learn()`` the steps are charged to the budget first: a step that would
        exceed it raises ``BudgetExhausted`` before anything runs."""
        if self._budget is not None:
            self._budget.charge("steps", self.vec_env.num_envs)
        obs, rewards, terminated, truncated, infos = self.vec_env.step(actions)
        self._obs = obs
        self.env_steps += self.vec_env.num_envs
        for result in self.vec_env.scored:
            self.tracker.add(result.prompt, result.reward, result.gain)
        return obs, rewards, terminated, truncated, infos

    # ---------------------------------------------------------- the loop

    @property
    def served(self) -> bool:
        """The task model is reached over an API (requests, tokens and money are counted)."""
        return bool(self.task.task_model.served)

    def spent(self) -> dict[str, float]:
        """Budgets spent so far: inside ``learn()`` up to now, outside it what ``learn()`` spent
        (evaluations made after training, such as dev selection, are not training cost).
        Served models add ``requests``, ``tokens`` and ``cost``."""
        if self._in_learn:
            return self._spent()
        spent: dict[str, float] = {
            "prompt_evals": self.prompt_evals,
            "lm_calls": self.lm_calls,
            "steps": self.env_steps,
        }
        return {**spent, **self.api_spent} if self.served else spent

    def _api_usage(self) -> dict[str, float]:
        stats = self.task.task_model.stats
        return {"requests": stats.requests, "tokens": stats.prompt_tokens + stats.completion_tokens, "cost": stats.cost}

    def _spent(self) -> dict[str, float]:
        spent: dict[str, float] = {
            "prompt_evals": self.task.prompt_evals - self._start_prompt_evals + self.prompt_evals,
            "lm_calls": self.task.task_model.stats.lm_calls - self._start_lm_calls + self.lm_calls,
            "steps": self.env_steps,
        }
        if self.served:
            usage = self._api_usage()
            spent.update({k: usage[k] - self._start_api[k] + self.api_spent[k] for k in API_KEYS})
        return spent

    def learn(
        self,
        total_prompt_evals: int | None = None,
        total_lm_calls: int | None = None,
        total_steps: int | None = None,
        callbacks: Sequence[Callback] = (),
        *,
        total_requests: int | None = None,
        total_tokens: int | None = None,
        total_cost: float | None = None,
    ) -> Agent:
        """Train until a budget is spent (budgets count from the agent's creation, across
        ``learn`` calls and reloads) or a callback stops it.

        Budgets are hard caps: costs are charged before they are spent, and the iteration
        that would cross a budget stops there, without its update (see ``rlprompt.budget``).
        """
        limits: dict[str, float | None] = {
            "prompt_evals": total_prompt_evals,
            "lm_calls": total_lm_calls,
            "steps": total_steps,
            "requests": total_requests,
            "tokens": total_tokens,
            "cost": total_cost,
        }
        if all(v is None for v in limits.values()):
            raise ConfigError("learn() needs a budget: total_prompt_evals, total_lm_calls or total_steps")
        for key, value in limits.items():
            whole = key != "cost"
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or value <= 0
            ):
                raise ConfigError(
                    f"learn(): total_{key} must be a positive {'integer' if whole else 'number'}, got {value!r}"
                )
            if value is not None and key in API_KEYS and not self.served:
                raise ConfigError(f"a {key} budget needs a served task model (task_model.kind: openai)")
        ending = [k for k, v in limits.items() if v is not None and k != "lm_calls"]
        if total_lm_calls is not None and not ending and not self.env.lm_calls_end_training:
            raise ConfigError(
                f"{type(self.env).__name__} prices every choice from forwards it caches, so training soon "
                "costs no LM calls and an LM-call budget alone would never end it: give "
                "total_prompt_evals or total_steps (budget.prompt_evals / budget.steps)"
            )
        limits = {k: v for k, v in limits.items() if v is not None or k not in API_KEYS}
        already = self.spent()
        self._budget = Budget({k: None if v is None else v - already[k] for k, v in limits.items()})
        self._start_prompt_evals = self.task.prompt_evals
        self._start_lm_calls = self.task.task_model.stats.lm_calls
        self._start_api = self._api_usage()
        self._in_learn = True
        try:
            with self.task.spending(self._budget):
                self._train(limits, callbacks)
        finally:
            spent = self._spent()
            self._in_learn = False
            self._budget = None
            # the counts are ints (only the API's cost is a float)
            self.prompt_evals, self.lm_calls = cast(int, spent["prompt_evals"]), cast(int, spent["lm_calls"])
            if self.served:
                self.api_spent = {k: spent[k] for k in API_KEYS}
            self._start_prompt_evals = self.task.prompt_evals
            self._start_lm_calls = self.task.task_model.stats.lm_calls
            self._start_api = self._api_usage()
        for callback in callbacks:
            callback.on_end(self)
        return self

    def _train(self, limits: dict[str, float | None], callbacks: Sequence[Callback]) -> None:
        def exhausted() -> bool:
            spent = self._spent()
            return any(limit is not None and spent[key] >= limit for key, limit in limits.items())

        try:
            self.reset_envs()
        except BudgetExhausted:
            return
        for callback in callbacks:
            callback.on_start(self)
        stalled = 0  # iterations in a row that spent none of the limited budgets
        while not exhausted():
            before = self._spent()
            try:
                row = self._learn_step()
            except BudgetExhausted:
                self._obs = None  # unfinished episodes are dropped: a later learn() starts with fresh ones
                break  # the unfinished iteration is dropped too; its scored prompts stay tracked
            self.iterations += 1
            after = self._spent()
            progressed = any(after[k] > before[k] for k, limit in limits.items() if limit is not None)
            stalled = 0 if progressed else stalled + 1
            if stalled >= 1000:
                limited = [k for k, limit in limits.items() if limit is not None]
                raise RLPromptError(
                    f"agent '{self.name}' spent no {' or '.join(limited)} in 1000 iterations: "
                    "that budget would never run out; give it another budget"
                )
            if self.iterations % self.config.log_interval == 0:
                best = self.tracker.best()
                spent = self._spent()
                self.logger.record(
                    {
                        "iteration": self.iterations,
                        **spent,
                        "best_train_reward": best.mean_reward if best else float("nan"),
                        **row,
                    },
                    step=cast(int, spent["prompt_evals"]),  # a count: an int
                )
            if not all(callback.on_step(self) for callback in callbacks):
                break

    # ---------------------------------------------------------- results

    def prompt_text(self, prompt: Prompt) -> str | None:
        """A prompt as one line of text (None for a soft prompt)."""
        if isinstance(prompt, LabeledPrompt):
            return prompt.describe()
        return prompt if isinstance(prompt, str) else None

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """LM calls made inside this block (dev selection, test scoring from a callback) are
        evaluation, not training: they are left out of the agent's ``lm_calls`` budget."""
        outermost = not getattr(self, "_evaluating", False)
        self._evaluating = True
        before = self.task.task_model.stats.lm_calls
        api_before = self._api_usage()
        try:
            with self.task.spending(None):
                yield
        finally:
            if outermost:
                self._evaluating = False
                if self._in_learn:
                    self._start_lm_calls += self.task.task_model.stats.lm_calls - before
                    api_after = self._api_usage()
                    self._start_api = {k: self._start_api[k] + api_after[k] - api_before[k] for k in API_KEYS}

    def best_prompt(
        self,
        k: int | None = None,
        splits: Sequence[str] = ("dev",),
        extra: Sequence[Prompt] = (),
        guard_splits: Sequence[str] = (),
    ) -> BestPrompt:
        """Re-score the greedy prompt, the top-k train prompts and the ``extra`` ones on ``splits``
        (pooled); the best wins (``task.selection_key``: the reward, then accuracy, for
        classification; the main metric, then the reward, for generation; the earlier candidate on
        a tie, so an extra prompt wins only by scoring higher). A found prompt that scores below the
        first extra one on any of ``guard_splits`` (each one of ``splits``) cannot win. LM calls
        are reported, not budgeted."""
        candidates: list[tuple[Prompt, float | None]] = []
        seen: set[str] = set()
        extra_keys = {prompt_key(p) for p in extra}
        found = [self.predict(deterministic=True)] + [record.prompt for record in self.tracker.top(k)]
        for prompt in [*found, *extra]:
            if prompt_key(prompt) not in seen:
                seen.add(prompt_key(prompt))
                record = self.tracker.records.get(prompt_key(prompt))
                candidates.append((prompt, record.mean_reward if record else None))
        # the manual prompt, met again by training, still counts as the manual prompt (listed last)
        candidates.sort(key=lambda c: prompt_key(c[0]) in extra_keys)
        before = self.task.task_model.stats.lm_calls
        per_split: list[dict[str, dict[str, Any]]] = []
        with self.evaluating(), progress.stage(f"selecting on {'+'.join(splits)}", total=len(candidates) * len(splits)):
            for p, _ in candidates:
                parts = {}
                for s in splits:
                    progress.step(f"{progress.shorten(self.prompt_text(p))} on {s}")
                    parts[s] = self.task.evaluate(p, s)
                per_split.append(parts)
        key = self.task.selection_key
        pooled = [pool_split_metrics([parts[s] for s in splits]) for parts in per_split]
        is_extra = [prompt_key(p) in extra_keys for p, _ in candidates]
        reference = is_extra.index(True) if any(is_extra) else None

        def admissible(i: int) -> bool:
            if reference is None or is_extra[i]:
                return True
            return all(key(per_split[i][s]) >= key(per_split[reference][s]) for s in guard_splits)

        ranked = sorted(range(len(candidates)), key=lambda i: (key(pooled[i]), -i), reverse=True)
        best = next(i for i in ranked if admissible(i))
        prompt, train = candidates[best]
        return BestPrompt(
            prompt,
            self.prompt_text(prompt),
            train,
            pooled[best],
            self.task.task_model.stats.lm_calls - before,
            len(candidates),
            is_extra[best],
            guard_dropped=ranked.index(best),
        )

    # ---------------------------------------------------------- persistence

    def save(self, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> None:
        """Write the full state atomically (a checkpoint to resume from); ``extra`` (e.g. the
        task model's cache) is stored beside it and comes back as ``checkpoint_extra``.
        The file is safetensors + JSON (``rlprompt.checkpoint``): loading it runs no code."""
        spent = self.spent()
        payload = {
            "agent": self.name,
            "config": asdict(self.config),
            "state": self._state(),
            "rng": self.rng.bit_generator.state,
            "torch_rng": self.torch_rng.get_state(),
            "envs": [env.get_state() for env in self.vec_env.envs],
            "tracker": {
                "records": {
                    k: (r.prompt, r.total_reward, r.count, r.total_gain, r.gain_count)
                    for k, r in self.tracker.records.items()
                },
                "evaluations": self.tracker.evaluations,
            },
            "counters": {
                "iterations": self.iterations,
                "prompt_evals": spent["prompt_evals"],
                "lm_calls": spent["lm_calls"],
                "env_steps": self.env_steps,
                "api": {k: spent.get(k, 0) for k in API_KEYS},
            },
            "obs": self._obs,
            "spaces": [repr(self.env.observation_space), repr(self.env.action_space)],
            "extra": extra,
        }
        save_checkpoint(path, payload)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        env: PromptEnv | BatchedPromptVectorEnv,
        logger: Logger | None = None,
        expected: tuple[str, Any] | None = None,
    ) -> Agent:
        """Rebuild an agent saved with :meth:`save` on ``env`` (same kind and sizes). ``expected``
        (agent name, agent config): a checkpoint of another agent, or of other agent settings, is
        an error naming both (a resumed run never trains one agent under another's name)."""
        payload = load_checkpoint(path)
        try:
            name = payload["agent"]
            if name not in AGENTS:
                raise RLPromptError(f"checkpoint {path} is of unknown agent '{name}'")
            config_class, agent_class = AGENTS[name].config_class, AGENTS[name].agent_class
            saved = config_from_dict(payload["config"], cls=config_class)
            if expected is not None:
                _check_expected_agent(path, name, saved, *expected)
            agent = agent_class(env, saved, logger)
            spaces_now = [repr(agent.env.observation_space), repr(agent.env.action_space)]
            if payload.get("spaces", spaces_now) != spaces_now:
                raise RLPromptError(
                    f"checkpoint {path} was made on an env with spaces {payload['spaces']}, not {spaces_now}"
                )
            if len(payload["envs"]) != agent.vec_env.num_envs:
                raise RLPromptError(
                    f"checkpoint has {len(payload['envs'])} env copies, the agent {agent.vec_env.num_envs}"
                )
            agent._load_state(payload["state"])
            agent.rng.bit_generator.state = payload["rng"]
            agent.torch_rng.set_state(payload["torch_rng"])
            for env_, state in zip(agent.vec_env.envs, payload["envs"], strict=True):
                env_.set_state(state)
            records = payload["tracker"]["records"]
            agent.tracker.records = {k: PromptRecord(*fields) for k, fields in records.items()}  # 3 fields: no gains
            agent.tracker.evaluations = payload["tracker"]["evaluations"]
            counters = payload["counters"]
            agent.iterations = counters["iterations"]
            agent.prompt_evals = counters["prompt_evals"]
            agent.lm_calls = counters["lm_calls"]
            agent.api_spent = {k: counters.get("api", {}).get(k, 0) for k in API_KEYS}
            agent.env_steps = counters["env_steps"]
            agent._obs = payload["obs"]
            agent.checkpoint_extra = payload.get("extra")
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            if isinstance(exc, RLPromptError):
                raise
            raise RLPromptError(
                f"checkpoint {path} does not fit this agent and env ({type(exc).__name__}: {exc})"
            ) from None
        return agent


def _check_expected_agent(path: Any, name: str, saved: Any, expected_name: str, expected_config: Any) -> None:
    """The checkpoint's agent is the one the run's config names, with the same settings."""
    if name != expected_name:
        raise RLPromptError(
            f"checkpoint {path} was trained by agent '{name}' but the run's config.json names agent "
            f"'{expected_name}': restore agent.name={name} in config.json, or start a new run"
        )
    a, b = asdict(saved), asdict(expected_config)
    changed = [key for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
    if changed:
        shown = ", ".join(
            f"agent.{key}: {a.get(key)!r} in the checkpoint, {b.get(key)!r} in config.json" for key in changed[:3]
        )
        raise RLPromptError(
            f"checkpoint {path} of agent '{name}' was trained with other settings than the run's "
            f"config.json ({shown}): restore them, or start a new run"
        )


def step_info(infos: dict[str, Any], key: str, index: int) -> Any:
    """``infos[key][index]`` of the step itself: under same-step autoreset a finished
    sub-env's step info sits in ``final_info`` (the top level holds its reset info)."""
    final_mask = infos.get("_final_info")
    if final_mask is not None and final_mask[index]:
        return infos["final_info"][key][index]
    return infos[key][index]
