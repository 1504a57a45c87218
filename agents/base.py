"""The agent base class, callbacks, logger and prompt tracker (Stable-Baselines3's shape).

An :class:`Agent` learns on a prompt env (or a batched vector env of copies sharing one task)
until a budget of prompt evaluations, LM calls or env steps is spent; ``predict()`` returns
its greedy prompt without spending evaluations; ``best_prompt()`` re-scores the greedy prompt
and the top prompts seen during training on the dev split and returns the best (dev
selection, as in RLPrompt's paper); ``save``/``load`` keep the whole state (networks,
optimizers, buffers, RNGs, search state, counters) so a killed run resumes exactly.

Each algorithm lives in one file of this package, its update loop readable top to bottom in
``_learn_step``; its typed config dataclass sits beside it and is registered with
:func:`register_agent`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from rlprompt.budget import Budget, BudgetExhausted
from rlprompt.checkpoint import checkpoint_type, load_checkpoint, save_checkpoint
from rlprompt.config import config_from_dict
from rlprompt.envs import BatchedPromptVectorEnv, PromptEnv
from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.io import atomic_write_text
from rlprompt.task import Task
from rlprompt.task_models import Prompt

ENV_KINDS = ("token", "selection", "edit", "soft")


def check_ranges(
    config: Any,
    prefix: str = "agent",
    *,
    positive: Sequence[str] = (),
    non_negative: Sequence[str] = (),
    at_least_one: Sequence[str] = (),
    unit_interval: Sequence[str] = (),
) -> None:
    """Raise one :class:`ConfigError` naming the first field outside its range (None values are skipped)."""
    rules = [
        (positive, lambda v: v > 0, "> 0"),
        (non_negative, lambda v: v >= 0, ">= 0"),
        (at_least_one, lambda v: v >= 1, ">= 1"),
        (unit_interval, lambda v: 0 <= v <= 1, "in [0, 1]"),
    ]
    for names, ok, text in rules:
        for name in names:
            value = getattr(config, name)
            if value is not None and not ok(value):
                raise ConfigError(f"{prefix}.{name} must be {text}, got {value!r}")


@dataclass
class AgentConfig:
    """Fields every agent has."""

    seed: int = 0
    """Seeds the agent's numpy and torch generators and the envs' first reset."""
    n_envs: int = 1
    """Env copies stepped together (one batched task-model call per step) when the agent is
    given a single env; a given vector env keeps its own size."""
    top_k: int = 10
    """Prompts (by mean train reward) kept for dev selection."""
    log_interval: int = 1
    """Log a row every this many learning iterations."""

    def __post_init__(self) -> None:
        check_ranges(self, at_least_one=("n_envs", "top_k", "log_interval"))


# ------------------------------------------------------------------ registry

AGENT_REGISTRY: dict[str, tuple[type[AgentConfig], type[Agent]]] = {}


def register_agent(name: str, config_class: type[AgentConfig]) -> Callable[[type[Agent]], type[Agent]]:
    """Class decorator: ``@register_agent("ppo", PPOConfig)``."""

    def decorate(cls: type[Agent]) -> type[Agent]:
        cls.name = name
        cls.config_class = config_class
        AGENT_REGISTRY[name] = (config_class, cls)
        return cls

    return decorate


def make_agent_config(name: str, fields: dict[str, Any] | None = None) -> AgentConfig:
    """The config of agent ``name`` from a dict, with unknown keys rejected by name."""
    if name not in AGENT_REGISTRY:
        raise ConfigError(f"unknown agent '{name}'; registered agents: {sorted(AGENT_REGISTRY)}")
    return config_from_dict(fields or {}, cls=AGENT_REGISTRY[name][0])


# ------------------------------------------------------------------ callbacks and logging


class Callback:
    """Called after every learning iteration; return False from ``on_step`` to stop."""

    def on_start(self, agent: Agent) -> None:
        """Before the first iteration."""

    def on_step(self, agent: Agent) -> bool:
        return True

    def on_end(self, agent: Agent) -> None:
        """After the last iteration."""


class StopOnReward(Callback):
    """Stop once the best mean train reward reaches ``threshold``."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def on_step(self, agent: Agent) -> bool:
        best = agent.tracker.best()
        return best is None or best.mean_reward < self.threshold


class CheckpointCallback(Callback):
    """Save the agent to ``path`` every ``every`` iterations (atomically)."""

    def __init__(self, path: str | os.PathLike[str], every: int = 10) -> None:
        self.path = Path(path)
        self.every = every

    def on_step(self, agent: Agent) -> bool:
        if agent.iterations % self.every == 0:
            agent.save(self.path)
        return True


class Logger:
    """Rows of scalars to ``metrics.csv`` (header grows with new keys) and TensorBoard.

    Every row gets a ``time_s`` column (seconds since the run began, resumed runs included).
    A resumed run passes ``keep_iterations``: rows logged after its checkpoint are dropped (the
    resumed run logs them again) and TensorBoard events from that point on are purged.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, tensorboard: bool = True,
                 keep_iterations: int | None = None) -> None:  # fmt: skip
        import time

        self.directory = Path(directory) if directory is not None else None
        self.rows: list[dict[str, Any]] = []
        self._clock = time.perf_counter
        existing = self.directory / "metrics.csv" if self.directory is not None else None
        if existing is not None and existing.is_file():  # a resumed run appends to its rows
            with existing.open(newline="") as handle:
                self.rows = list(csv.DictReader(handle))
            if keep_iterations is not None:
                self.rows = [r for r in self.rows if int(r["iteration"]) <= keep_iterations]
                self._write_csv()
        last_time = float(self.rows[-1].get("time_s") or 0.0) if self.rows else 0.0
        self._start = self._clock() - last_time
        purge_step = None
        if keep_iterations is not None:  # events past the last kept row were logged after the checkpoint
            last = self.rows[-1] if self.rows else {}
            purge_step = int(float(last["prompt_evals"])) + 1 if "prompt_evals" in last else 0
        self._writer = None
        if self.directory is not None and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.directory / "tensorboard"), purge_step=purge_step)
            except ImportError:  # pragma: no cover - tensorboard is a dependency
                self._writer = None

    def elapsed(self) -> float:
        """Seconds since the run began (time of killed sessions up to their last kept row included)."""
        return self._clock() - self._start

    def record(self, row: dict[str, float], step: int) -> None:
        row = {**row, "time_s": round(self._clock() - self._start, 3)}
        self.rows.append(row)
        if self._writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and np.isfinite(value):
                    self._writer.add_scalar(key, value, step)
        if self.directory is not None:
            self._write_csv()

    def _write_csv(self) -> None:
        keys: list[str] = []
        for row in self.rows:
            keys.extend(k for k in row if k not in keys)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        assert self.directory is not None
        atomic_write_text(self.directory / "metrics.csv", buffer.getvalue())

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


# ------------------------------------------------------------------ prompt tracker


def prompt_key(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "soft:" + hashlib.sha1(prompt.detach().float().contiguous().cpu().numpy().tobytes()).hexdigest()


@checkpoint_type
@dataclass
class PromptRecord:
    prompt: Prompt
    total_reward: float = 0.0
    count: int = 0

    @property
    def mean_reward(self) -> float:
        return self.total_reward / max(self.count, 1)


@dataclass
class PromptTracker:
    """Mean train reward of every prompt scored (over repeated minibatches); keeps the top k."""

    top_k: int = 10
    records: dict[str, PromptRecord] = field(default_factory=dict)
    evaluations: int = 0

    def add(self, prompt: Prompt, reward: float) -> None:
        key = prompt_key(prompt)
        record = self.records.get(key)
        if record is None:
            stored = prompt if isinstance(prompt, str) else prompt.detach().float().cpu().clone()
            record = self.records[key] = PromptRecord(stored)
        record.total_reward += float(reward)
        record.count += 1
        self.evaluations += 1
        if len(self.records) > 50 * self.top_k:
            self._prune()

    def _prune(self) -> None:
        keep = sorted(self.records.items(), key=lambda kv: kv[1].mean_reward, reverse=True)[: 10 * self.top_k]
        self.records = dict(keep)

    def top(self, k: int | None = None) -> list[PromptRecord]:
        return sorted(self.records.values(), key=lambda r: r.mean_reward, reverse=True)[: k or self.top_k]

    def best(self) -> PromptRecord | None:
        top = self.top(1)
        return top[0] if top else None


@dataclass
class BestPrompt:
    """The dev-selected prompt with its scores and the cost of selecting it."""

    prompt: Prompt
    text: str | None
    train_reward: float | None
    dev: dict[str, Any]
    dev_lm_calls: int
    candidates: int


# ------------------------------------------------------------------ the base class


class Agent(ABC):
    """Base class of all agents (see module docstring)."""

    name: ClassVar[str] = "agent"
    config_class: ClassVar[type[AgentConfig]] = AgentConfig
    env_kinds: ClassVar[tuple[str, ...]] = ENV_KINDS
    """Which env kinds the agent runs on: token, selection, edit, soft (the first is its main one)."""
    is_baseline: ClassVar[bool] = False
    """True for random search, the baseline the learning agents are measured against."""
    full_soft_space: ClassVar[bool] = False
    """True when a soft-env agent searches all soft prompts, not only the env's subspace."""

    def __init__(self, env: PromptEnv | BatchedPromptVectorEnv, config: AgentConfig | None = None,
                 logger: Logger | None = None) -> None:  # fmt: skip
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise ConfigError(
                f"agent '{self.name}' needs a {self.config_class.__name__}, got {type(self.config).__name__}"
            )
        if isinstance(env, gym.Wrapper):
            raise ConfigError("pass env.unwrapped to an agent: agents step envs through their batched API, "
                              "so Gymnasium wrappers would be bypassed")  # fmt: skip
        if isinstance(env, BatchedPromptVectorEnv):
            if env.autoreset_mode != AutoresetMode.SAME_STEP:
                raise ConfigError("agents need a vector env with autoreset_mode='SameStep' "
                                  "(make_batched_vector_env(..., autoreset_mode='SameStep'))")  # fmt: skip
            self.vec_env = env
        else:
            env_kind(env)
            copies = [env] + [env.spawn() for _ in range(self.config.n_envs - 1)]
            self.vec_env = BatchedPromptVectorEnv(copies, autoreset_mode="SameStep")
        self.env: PromptEnv = self.vec_env.envs[0]
        kind = env_kind(self.env)
        if getattr(self.env, "has_variant_tasks", False):
            raise ConfigError("agents search prompt-only candidates; candidates with their own template or "
                              "verbalizers are for direct env use (dev selection could not re-score them)")  # fmt: skip
        if kind not in self.env_kinds:
            raise ConfigError(f"agent '{self.name}' runs on {list(self.env_kinds)} envs, not on a {kind} env")
        self.task: Task = self.env.task
        self.logger = logger or Logger(None)
        self.rng = np.random.default_rng(self.config.seed)
        self.torch_rng = torch.Generator().manual_seed(self.config.seed)
        self.tracker = PromptTracker(self.config.top_k)
        self.iterations = 0
        self.prompt_evals = 0
        self.lm_calls = 0
        self.env_steps = 0
        self._in_learn = False
        self._budget: Budget | None = None
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
            self._obs, _ = self.vec_env.reset(seed=self.config.seed)
        return self._obs

    def step_envs(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step the vector env (same-step autoreset), record scored text prompts in the tracker.

        Inside ``learn()`` the steps are charged to the budget first: a step that would
        exceed it raises ``BudgetExhausted`` before anything runs."""
        if self._budget is not None:
            self._budget.charge("steps", self.vec_env.num_envs)
        obs, rewards, terminated, truncated, infos = self.vec_env.step(actions)
        self._obs = obs
        self.env_steps += self.vec_env.num_envs
        for source in (infos, infos.get("final_info")):
            if source and "_metrics" in source:
                for i in np.flatnonzero(source["_metrics"]):
                    prompt = source["prompt"][i]
                    if isinstance(prompt, str) and not prompt.startswith("<soft"):
                        self.tracker.add(prompt, float(source["metrics"]["reward"][i]))
        return obs, rewards, terminated, truncated, infos

    # ---------------------------------------------------------- the loop

    def spent(self) -> dict[str, int]:
        """Budgets spent so far: inside ``learn()`` up to now, outside it what ``learn()`` spent
        (evaluations made after training, such as dev selection, are not training cost)."""
        if self._in_learn:
            return self._spent()
        return {"prompt_evals": self.prompt_evals, "lm_calls": self.lm_calls, "steps": self.env_steps}

    def _spent(self) -> dict[str, int]:
        return {
            "prompt_evals": self.task.prompt_evals - self._start_prompt_evals + self.prompt_evals,
            "lm_calls": self.task.task_model.stats.lm_calls - self._start_lm_calls + self.lm_calls,
            "steps": self.env_steps,
        }

    def learn(
        self,
        total_prompt_evals: int | None = None,
        total_lm_calls: int | None = None,
        total_steps: int | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> Agent:
        """Train until a budget is spent (budgets count from the agent's creation, across
        ``learn`` calls and reloads) or a callback stops it.

        Budgets are hard caps: costs are charged before they are spent, and the iteration
        that would cross a budget stops there, without its update (see ``rlprompt.budget``).
        """
        limits = {"prompt_evals": total_prompt_evals, "lm_calls": total_lm_calls, "steps": total_steps}
        if all(v is None for v in limits.values()):
            raise ConfigError("learn() needs a budget: total_prompt_evals, total_lm_calls or total_steps")
        for key, value in limits.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"learn(): total_{key} must be a positive integer, got {value!r}")
        already = self.spent()
        self._budget = Budget({k: None if v is None else v - already[k] for k, v in limits.items()})
        self._start_prompt_evals = self.task.prompt_evals
        self._start_lm_calls = self.task.task_model.stats.lm_calls
        self._in_learn = True
        try:
            with self.task.spending(self._budget):
                self._train(limits, callbacks)
        finally:
            spent = self._spent()
            self._in_learn = False
            self._budget = None
            self.prompt_evals, self.lm_calls = spent["prompt_evals"], spent["lm_calls"]
            self._start_prompt_evals = self.task.prompt_evals
            self._start_lm_calls = self.task.task_model.stats.lm_calls
        for callback in callbacks:
            callback.on_end(self)
        return self

    def _train(self, limits: dict[str, int | None], callbacks: Sequence[Callback]) -> None:
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
                raise RLPromptError(f"agent '{self.name}' spent no {' or '.join(limited)} in 1000 iterations: "
                                    "that budget would never run out; give it another budget")  # fmt: skip
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
                    step=spent["prompt_evals"],
                )
            if not all(callback.on_step(self) for callback in callbacks):
                break

    # ---------------------------------------------------------- results

    def prompt_text(self, prompt: Prompt) -> str | None:
        return prompt if isinstance(prompt, str) else None

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """LM calls made inside this block (dev selection, test scoring from a callback) are
        evaluation, not training: they are left out of the agent's ``lm_calls`` budget."""
        outermost = not getattr(self, "_evaluating", False)
        self._evaluating = True
        before = self.task.task_model.stats.lm_calls
        try:
            with self.task.spending(None):
                yield
        finally:
            if outermost:
                self._evaluating = False
                if self._in_learn:
                    self._start_lm_calls += self.task.task_model.stats.lm_calls - before

    def best_prompt(self, k: int | None = None, split: str = "dev") -> BestPrompt:
        """Re-score the greedy prompt and the top-k train prompts on ``split``; the best wins
        (by the configured reward, then accuracy). Dev LM calls are reported, not budgeted."""
        candidates: list[tuple[Prompt, float | None]] = [(self.predict(deterministic=True), None)]
        seen = {prompt_key(candidates[0][0])}
        for record in self.tracker.top(k):
            if prompt_key(record.prompt) not in seen:
                seen.add(prompt_key(record.prompt))
                candidates.append((record.prompt, record.mean_reward))
        before = self.task.task_model.stats.lm_calls
        with self.evaluating():
            scored = [(self.task.evaluate(p, split), p, r) for p, r in candidates]
        metrics, prompt, train = max(scored, key=lambda item: (item[0]["reward"], item[0]["accuracy"]))
        if train is None:
            record = self.tracker.records.get(prompt_key(prompt))
            train = record.mean_reward if record else None
        return BestPrompt(prompt, self.prompt_text(prompt), train, metrics,
                          self.task.task_model.stats.lm_calls - before, len(candidates))  # fmt: skip

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
                "records": {k: (r.prompt, r.total_reward, r.count) for k, r in self.tracker.records.items()},
                "evaluations": self.tracker.evaluations,
            },  # fmt: skip
            "counters": {
                "iterations": self.iterations,
                "prompt_evals": spent["prompt_evals"],
                "lm_calls": spent["lm_calls"],
                "env_steps": self.env_steps,
            },  # fmt: skip
            "obs": self._obs,
            "spaces": [repr(self.env.observation_space), repr(self.env.action_space)],
            "extra": extra,
        }
        save_checkpoint(path, payload)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], env: PromptEnv | BatchedPromptVectorEnv, logger: Logger | None = None
    ) -> Agent:
        """Rebuild an agent saved with :meth:`save` on ``env`` (same kind and sizes)."""
        payload = load_checkpoint(path)
        try:
            name = payload["agent"]
            if name not in AGENT_REGISTRY:
                raise RLPromptError(f"checkpoint {path} is of unknown agent '{name}'")
            config_class, agent_class = AGENT_REGISTRY[name]
            agent = agent_class(env, config_from_dict(payload["config"], cls=config_class), logger)
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
            agent.tracker.records = {k: PromptRecord(p, t, c) for k, (p, t, c) in records.items()}
            agent.tracker.evaluations = payload["tracker"]["evaluations"]
            counters = payload["counters"]
            agent.iterations = counters["iterations"]
            agent.prompt_evals = counters["prompt_evals"]
            agent.lm_calls = counters["lm_calls"]
            agent.env_steps = counters["env_steps"]
            agent._obs = payload["obs"]
            agent.checkpoint_extra = payload.get("extra")
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            if isinstance(exc, RLPromptError):
                raise
            raise RLPromptError(f"checkpoint {path} does not fit this agent and env ({type(exc).__name__}: {exc})") from None
        return agent


def step_info(infos: dict[str, Any], key: str, index: int) -> Any:
    """``infos[key][index]`` of the step itself: under same-step autoreset a finished
    sub-env's step info sits in ``final_info`` (the top level holds its reset info)."""
    final_mask = infos.get("_final_info")
    if final_mask is not None and final_mask[index]:
        return infos["final_info"][key][index]
    return infos[key][index]


def env_kind(env: PromptEnv) -> str:
    """``token``, ``selection``, ``edit`` or ``soft``, from the env's class."""
    from rlprompt.envs import PromptEditEnv, PromptSelectionEnv, SoftPromptEnv, TokenPromptEnv

    for kind, cls in (
        ("token", TokenPromptEnv),
        ("selection", PromptSelectionEnv),
        ("edit", PromptEditEnv),
        ("soft", SoftPromptEnv),
    ):
        if isinstance(env, cls):
            return kind
    raise ConfigError(f"{type(env).__name__} is not an rlprompt prompt env")
