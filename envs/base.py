"""What every prompt-optimization env shares: the task, minibatch draws, scoring, rendering.

A step is split in two halves so that a vector env can batch the expensive part:
``_apply(action)`` changes the env's state and returns the :class:`ScoreRequest` it needs
(or ``None``), and ``_finish(result)`` turns the scored result into the Gymnasium 5-tuple.
:meth:`PromptEnv.step` runs both halves with a single-request task call; the
:class:`~rlprompt.envs.vector.BatchedPromptVectorEnv` scores the requests of all its
sub-envs in one call.

An env kind is one module: a :class:`PromptEnv` subclass with its ``kind``, its config
dataclass (a subclass of :class:`EnvConfig`, the ``env`` section's fields) and the generic
methods agents use instead of knowing kinds (:attr:`PromptEnv.episode_length`,
:meth:`PromptEnv.sample_action`, :meth:`PromptEnv.decode`, :meth:`PromptEnv.default_prompt`).
Importing an env module imports no torch (the task and its model come from elsewhere).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import json
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np

from rlprompt.checkpoint import checkpoint_type
from rlprompt.config import Config, check_ranges, config_from_dict, config_to_dict, load_config
from rlprompt.errors import ConfigError

if TYPE_CHECKING:
    from rlprompt.task import Task
    from rlprompt.task_models.base import Prompt

Chooser = Callable[[np.ndarray, "np.ndarray | None"], int]
"""A discrete policy for :meth:`PromptEnv.decode`: ``(observation, action mask or None) -> action``."""

SPLITS = ("train", "dev", "test")
"""The splits an env may draw its examples from (``split=``)."""


@dataclass
class EnvConfig:
    """Fields every env kind has (the ``env`` section of a run config)."""

    kind: str = "token"
    """A registered env kind."""
    searches: ClassVar[str] = "instruction"
    """The prompt part the kind searches: ``instruction`` (the template's ``{prompt}``),
    ``demos`` (its ``{demos}``) or ``label_words`` (the classes' words; the instruction fixed);
    the config checks that the template and task fit it."""
    batch_size: int | None = 16
    """Train examples each prompt evaluation is scored on (a fresh minibatch every time);
    null scores every evaluation on the whole split."""

    def __post_init__(self) -> None:
        check_ranges(self, "env", at_least_one=("batch_size",))


@dataclass(frozen=True)
class EnvSpec:
    """The registration of an env kind in :data:`rlprompt.registry.ENVS`."""

    kind: str
    config_class: type[EnvConfig]
    env_class: type[PromptEnv]
    gym_id: str


def make_task(
    task: Task | None = None,
    config: Config | dict | str | os.PathLike | None = None,
    overrides: list[str] | None = None,
) -> Task:
    """The env's task: given, built from a config (object, dict or YAML path), or the default."""
    from rlprompt.task import Task

    _check_task_arguments(task, config, overrides)
    if task is not None:
        if config is not None or overrides:
            raise ConfigError("give an env either task= or config=/overrides=, not both")
        return task
    if isinstance(config, Config):
        cfg = config_from_dict(config_to_dict(config), overrides)
    elif isinstance(config, dict):
        cfg = config_from_dict(config, overrides)
    else:
        cfg = load_config(config, overrides)
    return Task.from_config(cfg)


# ------------------------------------------------------------------ checking constructor arguments


def is_integer(value: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def minibatch_seed_option(options: dict[str, Any] | None) -> int | None:
    """The ``minibatch_seed`` reset option of slot envs (:meth:`SlotChoices.shared_minibatch`):
    None, or a non-negative integer (else one :class:`ConfigError`)."""
    shared = (options or {}).get("minibatch_seed")
    if shared is not None and (isinstance(shared, bool) or not isinstance(shared, (int, np.integer)) or shared < 0):
        raise ConfigError(f"reset option minibatch_seed must be a non-negative integer, got {shared!r}")
    return None if shared is None else int(shared)


def check_seed(seed: Any, name: str = "seed") -> int | None:
    """``seed`` as an int (None stays None): a non-negative integer (Gymnasium's rule), else one error."""
    if seed is None:
        return None
    if not is_integer(seed):
        raise ConfigError(f"{name} must be a non-negative integer or None, got {type(seed).__name__} {seed!r}")
    if int(seed) < 0:
        raise ConfigError(f"{name} must be a non-negative integer or None, got {int(seed)}")
    return int(seed)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _check_task_arguments(task: Any, config: Any, overrides: Any) -> None:
    """``task=`` a Task, ``config=`` a Config, dict or YAML path, ``overrides=`` a list of ``key=value``."""
    if task is not None:
        from rlprompt.task import Task

        if not isinstance(task, Task):
            raise ConfigError(
                f"task= must be an rlprompt Task (rlprompt.task.Task.from_config(...)), got "
                f"{_describe(task)}; to build one from a config pass config= (a Config, a dict "
                "or a YAML path)"
            )
    if config is not None and not isinstance(config, (Config, dict, str, os.PathLike)):
        raise ConfigError(f"config= must be a Config, a dict of sections or a YAML path, got {_describe(config)}")
    if overrides is not None:
        if isinstance(overrides, (str, bytes)) or not isinstance(overrides, (list, tuple)):
            raise ConfigError(f"overrides= must be a list of 'key=value' strings, got {_describe(overrides)}")
        for i, item in enumerate(overrides):
            if not isinstance(item, str):
                raise ConfigError(f"overrides[{i}] must be a 'key=value' string, got {_describe(item)}")


def _type_args(hint: Any) -> set[Any]:
    """The plain types a (union) annotation allows."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return {t for arg in typing.get_args(hint) for t in _type_args(arg)}
    return {typing.get_origin(hint) or hint}


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones, paths as strings, tuples as lists (what a config holds)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def check_env_arguments(
    env_class: type[PromptEnv], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
) -> None:
    """Check the arguments of ``env_class(*args, **kwargs)`` before anything is built or loaded:
    unknown names, ``task=``/``config=``/``overrides=``, ``split=``, and every argument that is a
    field of the kind's config dataclass by the config loader's rules (a str where a number is
    expected is an error, ranges by the dataclass's own checks). One :class:`ConfigError` names
    the argument."""
    kwargs = dict(kwargs or {})
    name = env_class.__name__
    signature = inspect.signature(env_class.__init__)
    params = list(signature.parameters.values())[1:]  # without self
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        for key in kwargs:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f"; it takes {names}"
                raise ConfigError(f"{name}: unknown argument '{key}'{hint}")
    try:
        bound = signature.bind(None, *args, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    arguments = dict(list(bound.arguments.items())[1:])
    _check_task_arguments(arguments.get("task"), arguments.get("config"), arguments.get("overrides"))
    split = arguments.get("split", "train")
    if not isinstance(split, str) or split not in SPLITS:
        raise ConfigError(f"{name}: split must be one of {list(SPLITS)}, got {split!r}")
    for key in ("vocabulary",):
        value = arguments.get(key)
        if value is not None and (isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple))):
            raise ConfigError(f"{name}: {key} must be a list of words, got {_describe(value)}")
    for key in ("init_prompt", "start_prompt"):
        value = arguments.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name}: {key} must be a string (or None), got {_describe(value)}")
    config_class = getattr(env_class, "config_class", EnvConfig)
    hints = typing.get_type_hints(config_class)
    fields = {f.name for f in dataclasses.fields(config_class)} - {"kind"}
    data: dict[str, Any] = {}
    defaults = {p.name: p.default for p in params}
    for key, value in arguments.items():
        if key not in fields:
            continue
        allowed = _type_args(hints[key])
        if value is None:
            if type(None) in allowed or defaults.get(key) is None:
                continue  # None is the field's own value, or the constructor's "from the config"
            raise ConfigError(f"{name}: {key} must not be None (its default is {defaults.get(key)!r})")
        value = _plain(value)
        if isinstance(value, str) and str not in allowed:
            words = {int: "an integer", float: "a number", bool: "True or False", list: "a list"}
            kinds = " or ".join(sorted({words.get(t, t.__name__) for t in allowed if t is not type(None)}))
            raise ConfigError(f"{name}: {key} must be {kinds}, got str {value!r}")
        if isinstance(value, list) and list not in allowed:
            if str in allowed and key == "candidates":
                continue  # a list of candidates (checked when they are read)
            raise ConfigError(f"{name}: {key} must not be a list, got {_describe(value)}")
        try:
            json.dumps(value, allow_nan=True)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{name}: {key} must be plain data (numbers, strings, lists), got {_describe(value)}"
            ) from None
        data[key] = value
    try:
        config_from_dict(data, cls=config_class)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None


@typing.runtime_checkable
class SlotChoices(typing.Protocol):
    """An env whose prompt is a fixed number of slot choices, one per step (the demonstration
    env: a pool example per slot; the label-word env: a word per class). A local search moves
    between such prompts by replacing one slot's choice (:meth:`mask_at`) or, where
    :attr:`swappable`, exchanging two slots."""

    @property
    def episode_length(self) -> int: ...

    @property
    def swappable(self) -> bool:
        """Whether two slots' choices may be exchanged (demonstrations: a reordering; label
        words: no, each slot is its own class's)."""
        ...

    def mask_of(self, slots: typing.Sequence[int]) -> np.ndarray:
        """The choices allowed for the next slot after ``slots``."""
        ...

    def mask_at(self, slots: typing.Sequence[int], position: int) -> np.ndarray:
        """The choices allowed at ``position`` of a full sequence, the other slots as they are."""
        ...

    def prompt_text(self, slots: typing.Sequence[int]) -> typing.Any:
        """The prompt of a full (or partial) sequence of choices (text, or a labeled prompt)."""
        ...

    def shared_minibatch(self, seed: int) -> dict[str, typing.Any]:
        """Reset options under which copies reset together score on the same examples."""
        ...


@typing.runtime_checkable
class MaskedActions(typing.Protocol):
    """An env some of whose discrete actions are illegal in a state (the edit, demonstration and
    label-word envs): policies mask them with :meth:`action_masks` instead of learning to avoid them."""

    def action_masks(self) -> np.ndarray:
        """``[n_actions]`` booleans: which actions the current state allows."""
        ...


@typing.runtime_checkable
class WordVocabulary(typing.Protocol):
    """An env whose prompt is ``prompt_length`` words, each step's action an index into
    ``vocabulary`` (the token env): what a policy that reads the words themselves (soft
    Q-learning's LM-backed policy) needs."""

    vocabulary: list[str]
    prompt_length: int


@typing.runtime_checkable
class SoftSubspace(typing.Protocol):
    """An env whose action is a point ``z`` of a ``subspace_dim``-dimensional box that
    :meth:`soft_prompt` maps to a soft prompt of ``n_tokens`` vectors (the soft env, Black-Box
    Tuning's setting): what CMA-ES, Gaussian REINFORCE and gradient prompt tuning search."""

    subspace_dim: int
    n_tokens: int

    def soft_prompt(self, z: np.ndarray) -> typing.Any:
        """The soft prompt ``[n_tokens, hidden]`` of subspace point ``z``."""
        ...


@typing.runtime_checkable
class PerInputPrompts(typing.Protocol):
    """An env whose prompts depend on the input (the per-input demonstration env): a discrete
    policy gives each input its own prompt, and runs evaluate those per input."""

    def prompts_for(self, examples: typing.Sequence[typing.Any], choose: Chooser) -> list[typing.Any]:
        """Each example's prompt as the policy ``choose`` writes it, observing that example."""
        ...


@dataclass
class ScoreRequest:
    """One prompt to score on ``indices`` of ``split`` with ``task``."""

    task: Task
    prompt: Prompt
    indices: np.ndarray
    split: str = "train"
    budget_task: Task | None = None
    """The env's own task, charged the prompt evaluation when ``task`` is a variant of it."""
    calibrate: bool = True
    """False: the reward reads raw class scores (an input scored alone under its own prompt
    cannot be batch-calibrated: the per-input env)."""


@checkpoint_type
@dataclass
class ScoreResult:
    """A scored prompt: the task reward and the batch metric on the request's examples."""

    reward: float
    metric: float
    """The value of the task's batch metric (``task.batch_metric``, which names it) on the request's
    examples: accuracy for classification, the reward's metric for generation."""
    scorings: int
    prompt: Any = None
    """The prompt that was scored (text or soft-prompt tensor): what agents' trackers record."""
    gain: float | None = None
    """The reward minus the manual prompt's on the same examples (``selection.paired``; else None)."""


def _is_soft(prompt: Any) -> bool:
    return not isinstance(prompt, str)


def score_requests(requests: list[ScoreRequest]) -> list[ScoreResult]:
    """Score many requests with one batched task-model call per (task, split, prompt kind)."""
    results: list[ScoreResult | None] = [None] * len(requests)
    groups: dict[tuple[int, str, bool, bool], list[int]] = {}
    for i, request in enumerate(requests):
        key = (id(request.task), request.split, _is_soft(request.prompt), request.calibrate)
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        first = requests[members[0]]
        indices = [requests[i].indices for i in members]
        rewards, accuracies = first.task.score_requests(
            [requests[i].prompt for i in members], indices, first.split, calibrate=first.calibrate
        )
        # the manual prompt on the same examples, in the env's own task (a selection env's variants share it)
        references = (
            (first.budget_task or first.task).reference_rewards(indices, first.split) if first.calibrate else None
        )
        gains = [None] * len(members) if references is None else (rewards - references).tolist()
        for i, reward, acc, gain in zip(members, rewards.tolist(), accuracies.tolist(), gains, strict=True):
            request = requests[i]
            results[i] = ScoreResult(float(reward), float(acc), int(len(request.indices)), request.prompt, gain)
            if request.budget_task is not None and request.budget_task is not first.task:
                request.budget_task.prompt_evals += 1
    return results  # type: ignore[return-value]


class PromptEnv(gym.Env):
    """Base class: owns the task, draws minibatches from ``self.np_random``, renders ANSI."""

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}
    kind: ClassVar[str] = ""
    """The env kind (``env.kind`` in configs)."""
    config_class: ClassVar[type[EnvConfig]] = EnvConfig
    """The dataclass of this kind's ``env`` section."""
    reset_scorings: ClassVar[int] = 0
    """Prompt evaluations a reset spends (the edit env scores its start prompt)."""
    lm_calls_end_training: ClassVar[bool] = True
    """Whether an LM-call budget alone ends training (False where every choice is priced from
    cached forwards: the label-word env, whose training stops costing LM calls)."""
    setup_lm_calls: int = 0
    """LM calls building the env spent (the label-word env ranks its vocabulary on the train
    split): an agent on the env starts with them in its ``lm_calls``."""
    _state_keys: tuple[str, ...] = ("_episode_indices", "_last_result", "_was_reset")
    """Attributes that make up the episode state (saved with agent checkpoints)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> PromptEnv:
        # the constructor's arguments are checked here, before __init__ builds the task (loads a
        # model): gym.make/make_vec kwargs and direct calls alike (see check_env_arguments)
        if args or kwargs:
            check_env_arguments(cls, args, kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        task: Task | None = None,
        config: Config | dict | str | None = None,
        overrides: list[str] | None = None,
        *,
        batch_size: int | None = 16,
        split: str = "train",
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1 or None (whole split), got {batch_size}")
        self.task = make_task(task, config, overrides)
        self.split = split
        self.num_examples = len(self.task.data.split(split))
        self.batch_size = None if batch_size is None or batch_size >= self.num_examples else batch_size
        self.render_mode = render_mode
        self._last_result: ScoreResult | None = None
        self._episode_indices = np.arange(self.num_examples)
        self._was_reset = False

    @classmethod
    def from_config(cls, task: Task, config: EnvConfig) -> PromptEnv:
        """The env an ``env`` config section describes, on ``task``."""
        raise NotImplementedError

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        """Seed ``self.np_random`` (Gymnasium's rule: a non-negative integer, numpy integers too);
        subclasses call this first and build the episode."""
        seed = check_seed(seed, "reset seed")
        if options is not None and not isinstance(options, dict):
            raise ConfigError(f"reset options must be a dict (or None), got {_describe(options)}")
        super().reset(seed=seed, options=options)
        self._was_reset = True

    def get_state(self) -> dict[str, Any]:
        """Episode state and RNG state: restoring it continues the env exactly."""
        keys = [k for cls in type(self).__mro__ for k in getattr(cls, "_state_keys", ())]
        return {
            "attrs": {k: copy.deepcopy(getattr(self, k)) for k in dict.fromkeys(keys)},
            "rng": self.np_random.bit_generator.state,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        for key, value in state["attrs"].items():
            setattr(self, key, copy.deepcopy(value))
        self.np_random.bit_generator.state = state["rng"]

    def spawn(self) -> PromptEnv:
        """Another copy of this env sharing its task (and loaded model), with its own RNG and
        episode state (both are rebuilt at reset)."""
        clone = copy.copy(self)
        for key in dict.fromkeys(k for cls in type(self).__mro__ for k in getattr(cls, "_state_keys", ())):
            setattr(clone, key, copy.deepcopy(getattr(self, key)))
        clone._np_random = None
        clone._np_random_seed = None
        clone._last_result = None
        return clone

    # ------------------------------------------------------------- what agents use

    @property
    def episode_length(self) -> int:
        """The most steps an episode takes (single-step envs: 1)."""
        return 1

    def episode_over(self) -> bool:
        """Whether the episode ends with the action just applied (single-step envs: always)."""
        return True

    def sample_action(self, rng: np.random.Generator) -> Any:
        """A uniformly random action that changes the prompt (what random search plays)."""
        raise NotImplementedError

    def decode(self, choose: Chooser) -> Prompt:
        """The prompt a discrete policy writes when it plays ``choose`` from a fresh episode,
        without scoring anything (greedy decoding of a policy)."""
        raise ConfigError(f"{type(self).__name__} has continuous actions: there is no discrete policy to decode")

    def default_prompt(self) -> Prompt:
        """The prompt to report before anything was learned (the manual prompt, or the soft start)."""
        return self.task.config.manual_prompt

    # ------------------------------------------------------------- subclass hooks

    def _apply(self, action: Any) -> ScoreRequest | None:
        raise NotImplementedError

    def _finish(self, result: ScoreResult | None) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        raise NotImplementedError

    def current_prompt_text(self) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------- shared pieces

    def apply_action(self, action: Any) -> ScoreRequest | None:
        """The first half of :meth:`step` (what the vector env calls): checks, then ``_apply``."""
        if not self._was_reset:
            raise ConfigError(f"{type(self).__name__}: call reset() before step()")
        return self._apply(self.check_action(action))

    def check_action(self, action: Any) -> Any:
        """``action`` as the env uses it, or one :class:`ConfigError` when it is outside the action
        space (changes nothing: the vector env checks every sub-env's action before applying any).
        Discrete envs: an integer in ``0..n-1``."""
        return self.discrete_action(action)

    def discrete_action(self, action: Any) -> int:
        """``action`` as an int of the env's ``Discrete`` space; anything else is a clear error."""
        value = action
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value[()]
        if type(value).__module__ == "torch" and getattr(value, "dim", lambda: 1)() == 0:
            value = value.item()
        n = int(self.action_space.n)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"action must be an integer of {self.action_space} (0..{n - 1}), got {_describe(action)}")
        if not self.action_space.contains(int(value)):
            raise ConfigError(f"action {int(value)} is outside {self.action_space} (0..{n - 1})")
        return int(value)

    def _draw_indices(self) -> np.ndarray:
        """A minibatch of example indices (sorted), or the whole split."""
        if self.batch_size is None:
            return np.arange(self.num_examples)
        return np.sort(self.np_random.choice(self.num_examples, size=self.batch_size, replace=False))

    def _request(self, prompt: Prompt, indices: np.ndarray | None = None) -> ScoreRequest:
        return ScoreRequest(self.task, prompt, self._episode_indices if indices is None else indices, self.split)

    def _score_now(self, request: ScoreRequest) -> ScoreResult:
        return score_requests([request])[0]

    def _info(self, result: ScoreResult | None, **extra: Any) -> dict[str, Any]:
        info: dict[str, Any] = {
            "prompt": self.current_prompt_text(),
            "scorings": 0 if result is None else result.scorings,
        }
        if result is not None:
            info["metrics"] = {"reward": result.reward, self.task.batch_metric: result.metric}
        info.update(extra)
        return info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        request = self.apply_action(action)
        result = self._score_now(request) if request is not None else None
        return self._finish(result)

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        text = f"prompt: {self.current_prompt_text()!r}"
        if self._last_result is not None:
            text += f" | reward {self._last_result.reward:+.4f} | batch {self.task.batch_metric} {self._last_result.metric:.3f}"
        return text + "\n"
