"""Typed experiment configs: dataclasses loaded from YAML with strict keys and ``--set`` overrides.

Every section is a dataclass whose fields are documented in place. Unknown or mistyped keys
are rejected with the dotted key named (and a close match suggested); values are checked
against the field's type (finite numbers only); cross-field checks live in each
``__post_init__``. The resolved config is saved as JSON next to every result
(:func:`save_config`).

Config files, bench files, candidate files and ``--set`` values are read as plain data (text,
numbers, true/false, null, lists, mappings with text keys: what JSON holds) within fixed limits
(:data:`MAX_FILE_BYTES`, :data:`MAX_DEPTH`, :data:`MAX_NODES`, :data:`MAX_ALIASES`), counted
while a YAML document is composed, before anything is built; every breach or other YAML type
(dates, ``!!binary``, ``!!set``, ``!!python/...``) is one :class:`ConfigError` naming the file
and line. An empty or comment-only config file is an error, not the defaults (``{}`` is).

Three sections are *variants*: ``task_model`` (by ``kind``), ``env`` (by ``kind``) and
``agent`` (by ``name``). Their fields are those of the config dataclass registered for that
kind or name in :mod:`rlprompt.registry` (a :class:`Variant` annotation says which registry),
so a ``config.json`` holds exactly the fields of the kinds it uses, and an unknown field of
an agent is reported as ``agent.<field>``. This module imports nothing above it: a registry
loads its provider package (torch-free at import) the first time a name is looked up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from rlprompt.errors import ConfigError, first_line
from rlprompt.registry import AGENTS, ENVS, GENERATION_METRICS, REWARDS, TASK_MODELS, TASKS, Registry
from rlprompt.template import check_placeholders, has_demos_slot, input_fields, model_template, placeholders

DEFAULT_AGENT = "ppo"
DEFAULT_TASK_MODEL = "encoder"


class Variant:
    """Annotation metadata of a variant section: the dataclass registered in ``registry`` under
    the section's ``key`` value (``default`` when absent). Registry entries expose ``config_class``."""

    def __init__(self, registry: Registry[Any], key: str, default: str, deferred: str | None = None) -> None:
        self.registry = registry
        self.key = key
        self.default = default
        self.deferred = deferred
        """A name the containing config resolves itself (``env.kind: auto``)."""

    def config_class(self, name: str, where: str) -> type:
        if not isinstance(name, str):
            raise ConfigError(f"config key '{where}.{self.key}' must be a string, got {name!r}")
        if name not in self.registry:
            names = self.registry.names()
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown {self.registry.what} '{name}'{hint}: config key '{where}.{self.key}' must be one of {names}"
            )
        return self.registry[name].config_class

    def resolve(self, value: Any, where: str) -> Any:
        """A mapping (or a dataclass built in Python) -> the registered config dataclass instance."""
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            self.name_of(value)  # a registered kind's config
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{where}' must be a mapping, got {type(value).__name__}")
        name = value.get(self.key, self.default)
        cls = self.config_class(name, where)
        data = dict(value)
        if self.key not in {f.name for f in dataclasses.fields(cls)}:
            data.pop(self.key, None)
        return _build(cls, data, where)

    def name_of(self, instance: Any) -> str:
        """The registered name of a variant section's dataclass instance."""
        if self.key in {f.name for f in dataclasses.fields(instance)}:
            return str(getattr(instance, self.key))
        for name in self.registry.names():
            if self.registry[name].config_class is type(instance):
                return name
        raise ConfigError(f"{type(instance).__name__} is not the config of a registered {self.registry.what}")


TASK_MODEL_SECTION = Variant(TASK_MODELS, "kind", DEFAULT_TASK_MODEL)
ENV_SECTION = Variant(ENVS, "kind", "auto", deferred="auto")
AGENT_SECTION = Variant(AGENTS, "name", DEFAULT_AGENT)


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
    reference_field: str | None = None
    """Generation tasks: the field holding the reference output(s) (a string or a list of
    accepted strings); found among ``answers``/``targets``/``target``/``reference`` when not set."""
    input_fields: list[str] | None = None
    """Generation tasks: the input fields the template must place (each exactly where it
    wants); null: whatever fields the template names."""
    empty_text: Literal["keep", "skip", "error"] = "keep"
    """Rows whose text is empty: ``keep`` them (scored as the template without a sentence, as
    RLPrompt does; a warning gives the count and rows), ``skip`` them (with a warning), or
    refuse the file (``error``)."""
    test_limit: int | None = None
    """Evaluate on the first N test examples only (null: all). For served models, where each
    example is a paid request, and quick checks; results name the test size (``n``)."""

    def __post_init__(self) -> None:
        if self.test_limit is not None and self.test_limit < 1:
            raise ConfigError(f"data.test_limit must be >= 1 (or null), got {self.test_limit}")
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

    name: str | None = None
    """Classification: a registered reward (``gold_log_prob``, the default: mean log-probability
    of the gold class; ``accuracy``; ``macro_f1``; ``gap``: RLPrompt's piecewise probability-gap
    reward) or a dotted path to a batch reward function (``mypkg.rewards:my_reward``).
    Generation: ``likelihood`` (the default: mean per-token log-probability of the reference,
    teacher forced, max over references) or a generation metric (``f1``, ``exact_match``,
    ``rouge1``, ``rouge2``, ``rougeL``, ``bleu``, ``chrf``) computed on greedy generations."""
    gap_correct: float = 200.0
    """``gap``: multiplier when the gold class wins."""
    gap_incorrect: float = 180.0
    """``gap``: multiplier when it does not."""
    balance_weight: float = 0.0
    """Weight of a class-balance bonus (entropy of the predicted-class histogram, in [0, 1]):
    penalises prompts that push every prediction into one class."""

    def __post_init__(self) -> None:
        known = self.name is None or self.name in REWARDS or self.name in GENERATION_REWARDS
        if self.name is not None and not known and self.name not in GENERATION_METRICS:
            if "." not in self.name and ":" not in self.name:
                names = sorted({*REWARDS.names(), *GENERATION_REWARDS, *GENERATION_METRICS.names()})
                raise ConfigError(
                    f"reward.name '{self.name}' is unknown; choose one of {names} "
                    "or a dotted path to a reward function (package.module:function)"
                )
            REWARDS.check(self.name)
        if self.balance_weight < 0:
            raise ConfigError("reward.balance_weight must be >= 0")


GENERATION_REWARDS = ("likelihood",)
"""Generation rewards computed by the task model itself (every generation metric is a reward too)."""


@dataclass
class GenerationConfig:
    """Generation tasks (``task: generation``): how the LM reads the prompt, how it generates,
    and what the outputs are scored with."""

    max_new_tokens: int = 32
    """Longest greedy generation, in tokens."""
    stop: list[str] = field(default_factory=lambda: ["\n"])
    """Generation ends at the first of these strings (which is cut off) or at the end-of-text token."""
    stop_after_text: bool = False
    """Stop strings end an output only once it holds non-whitespace text, so a reply that opens
    with a line break goes on to the answer after it (with ``stop: ["\\n"]`` such a reply is
    otherwise empty). False: anywhere, as ``model.generate``'s ``stop_strings``."""
    chat: Literal["none", "user", "system"] = "none"
    """``none``: the template is the raw text the LM continues; ``user``: the template is the
    user message of the tokenizer's chat template and the reply is generated; ``system``: the
    prompt is the system message and the template (without ``{prompt}``) the user message."""
    metrics: list[str] = field(default_factory=lambda: ["exact_match", "f1", "rougeL"])
    """Metrics of greedy generations reported on every split; the first is the task's main
    metric (bench tables, dev selection of the best prompt)."""
    reference_prefix: str | None = None
    """Text between the template's end and the reference when scoring its likelihood; null:
    a space without a chat template (``"Answer:" + " Paris"``), nothing with one."""
    score_stop: bool = True
    """Score the end of the answer too: the likelihood reward includes the first stop string
    (the end-of-turn token with a chat template) after the reference, so prompts that make the
    LM stop where the reference stops earn more, as greedy generation and its metrics need."""
    batch_size: int = 16
    """(prompt, example) rows per generation batch."""

    def __post_init__(self) -> None:
        check_ranges(self, "generation", at_least_one=("max_new_tokens", "batch_size"))
        if any(not s for s in self.stop):
            raise ConfigError("generation.stop holds an empty string (it would stop before the first token)")
        if not self.metrics:
            raise ConfigError("generation.metrics needs at least one metric")
        for name in self.metrics:
            GENERATION_METRICS.check(name)
        if len(set(self.metrics)) != len(self.metrics):
            raise ConfigError(f"generation.metrics names a metric twice: {self.metrics}")


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
    requests: int | None = None
    """Served models (``task_model.kind: openai``): API requests (answers from the response
    cache count too, so a run stops at the same point whether its cache was warm or cold)."""
    tokens: int | None = None
    """Served models: prompt + completion tokens, from the answers' ``usage``."""
    cost: float | None = None
    """Served models: money, from the token counts and ``task_model.price_*_per_1m``."""

    def __post_init__(self) -> None:
        values = {
            "prompt_evals": self.prompt_evals,
            "lm_calls": self.lm_calls,
            "steps": self.steps,
            "requests": self.requests,
            "tokens": self.tokens,
            "cost": self.cost,
        }
        if all(value is None for value in values.values()):
            self.prompt_evals = 1000
        for name, value in values.items():
            if name == "cost":
                if value is not None and not value > 0:
                    raise ConfigError(f"budget.cost must be > 0 (or null), got {value}")
            elif value is not None and value < 1:
                raise ConfigError(f"budget.{name} must be >= 1 (or null), got {value}")


SELECTION_SPLITS = ("train", "dev")


@dataclass
class SelectionConfig:
    """How a run picks the prompt it reports once training ends. Training rewards are means
    over minibatches (a prompt may have been scored once, on ``env.batch_size`` examples), so the
    best of them are partly luck; the candidates (the agent's greedy prompt and the ``agent.top_k``
    best by mean train reward) are re-scored on whole splits, outside the training budget."""

    splits: list[str] = field(default_factory=lambda: ["train", "dev"])
    """Splits the candidates are scored on, pooled as one set of examples (example-weighted
    means): ``train`` and/or ``dev``, never ``test``. The few-shot dev split alone (32 examples
    on SST-2 16-shot) cannot tell apart prompts a few points apart; train + dev halves that noise."""
    include_manual: bool = True
    """The config's ``prompt`` competes with the found ones: a run reports another prompt only
    when it beats the manual one on the selection splits (``manual_kept`` in best_prompt.json says
    when none did). Text prompts only: a soft-prompt run keeps its own."""

    paired: bool = False
    """Rank the prompts training scored (for the ``top_k`` candidates, random search's choice and
    the logged best reward) by their mean gain over the manual prompt on the same minibatches
    rather than by their mean reward: a paired comparison, in which a minibatch's difficulty
    cancels. It pays where examples differ in difficulty more than prompts differ on them; on
    SmolLM2 SST-2 (gold log-prob, minibatches of 8) they do not: one evaluation's noise went from
    sd 0.124 to 0.104 (seed 13) and 0.107 to 0.108 (seed 21), so it is off by default
    (``experiments/analyses/candidate_pool.py`` measures both on a run). The manual prompt is then scored
    on every minibatch too: LM calls on its first sight of an example only, no prompt evaluations."""
    guard_splits: list[str] = field(default_factory=list)
    """Selection splits on which a found prompt must also score at least what the manual prompt
    scores (``task.selection_key``) to replace it, besides beating it on the pooled ``splits``.
    Training draws its minibatches from train only, so a search that scores thousands of prompts
    there finds some that fit those reviews: they win the pooled train + dev score by their train
    margin while losing on dev. ``[dev]`` drops them (the next candidate, or the manual prompt,
    is reported; ``guard_dropped`` in best_prompt.json counts them). Needs ``include_manual``;
    a soft-prompt run has no manual prompt to compare with and ignores it. Off by default (the
    selection every earlier run made); the SmolLM2 SST-2 configs turn it on
    (``experiments/analyses/selection_guard.py`` measures it on their benches)."""

    def __post_init__(self) -> None:
        if not self.splits:
            raise ConfigError("selection.splits needs at least one split (train and/or dev)")
        for split in self.splits:
            if split == "test":
                raise ConfigError(
                    "selection.splits must not include test: the reported test metrics would then "
                    "be selected on, not held out (use train and/or dev)"
                )
            if split not in SELECTION_SPLITS:
                raise ConfigError(f"selection.splits: unknown split {split!r} (train and/or dev)")
        if len(set(self.splits)) != len(self.splits):
            raise ConfigError(f"selection.splits names a split twice: {self.splits}")
        for split in self.guard_splits:
            if split not in self.splits:
                raise ConfigError(
                    f"selection.guard_splits: {split!r} is not one of selection.splits {self.splits} "
                    "(a guard split is scored as part of the selection)"
                )
        if len(set(self.guard_splits)) != len(self.guard_splits):
            raise ConfigError(f"selection.guard_splits names a split twice: {self.guard_splits}")
        if self.guard_splits and not self.include_manual:
            raise ConfigError(
                "selection.guard_splits compares found prompts with the manual prompt: "
                "it needs selection.include_manual: true"
            )


@dataclass
class DemosConfig:
    """Demonstrations: how a train example is shown in the prompt (``{demos}`` in the template)
    and where they are drawn from. The demonstration env (``env.kind: demos``) searches which are
    shown and in what order; ``rlprompt eval --prompt`` takes a block of them as the prompt."""

    template: str | None = None
    """One demonstration: the input's fields and ``{label_word}`` (classification: the class's
    verbalizer, stripped) or ``{answer}`` (generation: the first reference), e.g.
    ``"Review: {sentence}\\nSentiment: {label_word}\\n\\n"`` or
    ``"{context}\\nQuestion: {question}\\nAnswer: {answer}\\n\\n"``. Demonstrations are joined as
    rendered, so end it with the separator. Needed when the template has ``{demos}``."""
    pool: str = "train"
    """Where demonstrations come from: ``train`` (the train split) or a data file (.tsv, .csv
    or .jsonl with the train split's columns). An example a prompt shows is never scored with
    that prompt, whatever the split."""
    select: str = "fixed"
    """Which demonstrations an input is shown: ``fixed`` (one block for every input: the
    searched or given prompt) or ``nearest`` (per input: its ``k`` most similar pool examples by
    sentence embedding, :mod:`rlprompt.retrieval`; a baseline that ``rlprompt eval`` scores,
    nothing is searched)."""
    k: int = 4
    """``select: nearest``: demonstrations per input."""
    order: str = "similar_last"
    """``select: nearest``: ``similar_last`` (the most similar next to the input) or ``similar_first``."""
    balanced: bool = False
    """``select: nearest``: the ``k / C`` most similar of each class instead of the ``k`` most similar."""
    encoder: str = "embedded:minilm"
    """``select: nearest``: the sentence encoder that embeds inputs (``embedded:minilm``, a local
    directory or a hub id)."""

    def __post_init__(self) -> None:
        if self.select not in ("fixed", "nearest"):
            raise ConfigError(f"demos.select must be 'fixed' or 'nearest', got {self.select!r}")
        if self.k < 1:
            raise ConfigError(f"demos.k must be >= 1, got {self.k}")
        if self.order not in ("similar_last", "similar_first"):
            raise ConfigError(f"demos.order must be 'similar_last' or 'similar_first', got {self.order!r}")
        if not self.encoder:
            raise ConfigError("demos.encoder must name a sentence encoder (e.g. embedded:minilm)")
        if self.template is not None and not self.template.strip():
            raise ConfigError(
                "demos.template is empty: it renders one demonstration (input fields and {label_word} or {answer})"
            )
        if not self.pool:
            raise ConfigError("demos.pool must be 'train' or a data file")


LEGACY_SELECTION = {"splits": ["dev"], "include_manual": False, "paired": False, "guard_splits": []}
"""What runs saved before ``selection`` existed did: the dev split alone, found prompts only."""


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
class PPOFinetuneConfig:
    """PPO-only settings (learning rate, temperature, KL coefficient and answer length are
    shared with the other methods in ``finetune``)."""

    clip_range: float = 0.2
    """Clip range of the probability ratio in the surrogate objective."""
    value_clip: float | None = 0.2
    """Clip range of value updates around the rollout's values (None: unclipped)."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    gamma: float = 1.0
    """Discount over answer tokens."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    epochs: int = 4
    """Optimisation passes over each rollout."""
    minibatches: int = 2
    """Minibatches per pass."""
    whiten_advantages: bool = True
    """Standardise advantages over the rollout."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip of each step."""

    def __post_init__(self) -> None:
        if self.clip_range <= 0:
            raise ConfigError("finetune.ppo.clip_range must be > 0")
        if self.value_clip is not None and self.value_clip <= 0:
            raise ConfigError("finetune.ppo.value_clip must be > 0 or null")
        if not 0 <= self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ConfigError("finetune.ppo.gamma and gae_lambda must lie in [0, 1]")
        if self.epochs < 1 or self.minibatches < 1:
            raise ConfigError("finetune.ppo.epochs and minibatches must be >= 1")
        if self.vf_coef < 0 or self.max_grad_norm <= 0:
            raise ConfigError("finetune.ppo.vf_coef must be >= 0 and max_grad_norm > 0")


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
    ppo: PPOFinetuneConfig = field(default_factory=lambda: PPOFinetuneConfig())
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


@dataclass
class Config:
    """A prompt-optimization experiment: task model, data, template, verbalizers, reward, and
    the env, agent, budget and output of ``rlprompt run``."""

    task: str = "classification"
    """The task family (a name registered in :data:`rlprompt.registry.TASKS`): ``classification``
    (class verbalizers scored by the LM) or ``generation`` (outputs generated and compared with
    references; see ``generation``)."""
    task_model: Annotated[Any, TASK_MODEL_SECTION] = field(
        default_factory=lambda: TASK_MODEL_SECTION.resolve({}, "task_model")
    )
    """Which model scores prompts: ``kind`` (a registered task-model kind: ``encoder``,
    ``encoder-tuned``, ``masked_lm``, ``causal_lm`` ...) and that kind's fields."""
    data: DataConfig = field(default_factory=DataConfig)
    template: str = "{sentence} {prompt}"
    """Input template with ``{sentence}``, ``{prompt}`` and (masked LMs) ``{mask}``; generation
    tasks name their input fields (``{context}``, ``{question}``, ``{source}`` ...). ``{demos}``
    places demonstrations (``demos``), searched by ``env.kind: demos``; ``prompt`` is then
    fixed text and ``{prompt}`` optional (:mod:`rlprompt.template`)."""
    prompt: str = "It was"
    """The manual prompt: the baseline everywhere and the edit env's start."""
    verbalizers: list[str] | None = None
    """Classification: one per class, in class-index order (default ``["{prompt} terrible.",
    "{prompt} great."]``). Encoders embed them (``{prompt}`` allowed); masked/causal LMs score
    their tokens (write a leading space for BPE tokenizers). Generation tasks have none."""
    calibration: Literal["none", "batch"] = "none"
    """Classification: ``batch`` scores each prompt's class log-probabilities minus their mean
    over the examples scored together (the training batch; each whole split in selection and
    evaluation, train and dev each over its own examples before they are pooled: no labels
    used), which removes the prompt's lean towards one class before rewards, predictions and
    metrics (batch calibration). ``none``: raw class scores."""
    demos: DemosConfig = field(default_factory=DemosConfig)
    """Demonstrations shown at ``{demos}`` in the template: their template and pool."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    """Generation tasks only: generation, chat template and metrics."""
    env: Annotated[Any, ENV_SECTION] = field(default_factory=lambda: {"kind": "auto"})
    """``kind`` (``token``, ``selection``, ``edit``, ``soft``, or ``auto``: the agent's main
    kind) and that env kind's fields."""
    agent: Annotated[Any, AGENT_SECTION] = field(default_factory=lambda: AGENT_SECTION.resolve({}, "agent"))
    """``name`` (a registered agent: ppo, sql, a2c, reinforce, dqn, q_table, cma_es, hill_climb,
    prompt_tuning, random_search) and that agent's config fields; its ``seed`` follows the
    global seed unless set."""
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    """How the reported prompt is chosen among the candidates once training ends."""
    output: OutputConfig = field(default_factory=OutputConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    seed: int = 0
    """Global seed (torch, the agent and the envs' first reset)."""

    def __post_init__(self) -> None:
        # seeds are range-checked first, so a bad one is refused before any model loads
        seeds = (
            ("seed", self.seed),
            ("data.seed", getattr(self.data, "seed", None)),
            ("agent.seed", getattr(self.agent, "seed", None)),
        )
        for key, value in seeds:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32):
                raise ConfigError(f"{key} must be an integer with 0 <= {key} < 2**32, got {value!r}")
        self.family.check_config(self)  # the family's own checks and defaults (rlprompt.families)
        self.env = self._resolve_env(self.env)
        self._check_demos()
        self._check_calibration()
        self._check_edit_start()
        self._check_served_budgets()

    def _check_demos(self) -> None:
        """``{demos}`` at most once, with a demonstration template that shows the task's input
        fields and its answer; the env searches the slot the template has."""
        slots = placeholders(self.template).count("demos")
        searches = getattr(type(self.env), "searches", "instruction")
        if slots > 1:
            raise ConfigError(f"template must contain '{{demos}}' at most once, got {self.template!r}")
        self._check_retrieval(slots)
        if searches == "label_words" and not self.family.has_classes:
            raise ConfigError(f"env.kind={self.env_kind()} chooses the classes' words: it is for classification tasks")
        if not slots:
            if searches == "demos":
                raise ConfigError(
                    f"env.kind={self.env_kind()} searches demonstrations: put '{{demos}}' in the template "
                    "where they go (and set demos.template)"
                )
            return
        if searches != "demos" and self.demos.select != "nearest":
            raise ConfigError(
                f"'{{demos}}' in the template makes the demonstrations the searched part (the prompt "
                f"{self.prompt!r} is then fixed text): use env.kind: demos, or remove '{{demos}}' to "
                f"search the instruction with env.kind={self.env_kind()}"
            )
        demo = self.demos.template
        if demo is None:
            raise ConfigError(
                "the template has '{demos}': set demos.template, how one demonstration is shown "
                "(e.g. 'Review: {sentence}\\nSentiment: {label_word}\\n\\n')"
            )
        answer = self.family.answer_field
        fields = input_fields(self.template)
        check_placeholders("demos.template", demo, (*fields, answer))
        names = placeholders(demo)
        if answer not in names:
            raise ConfigError(f"demos.template must show the answer with '{{{answer}}}', got {demo!r}")
        if not [n for n in names if n != answer]:
            raise ConfigError(
                f"demos.template shows no input field ({', '.join('{' + f + '}' for f in fields)}), got {demo!r}"
            )
        if self.template.index("{demos}") > min(self.template.index("{" + f + "}") for f in fields):
            raise ConfigError(
                f"'{{demos}}' must come before the input in the template (demonstrations are shown "
                f"first and cached once per prompt), got {self.template!r}"
            )
        model_template(self.template, self.prompt)  # the prompt is fixed text: no placeholders

    def _check_retrieval(self, slots: int) -> None:
        """``demos.select: nearest`` needs a ``{demos}`` slot, and ``balanced`` classes that split ``k``."""
        demos = self.demos
        if demos.select != "nearest":
            return
        if not slots:
            raise ConfigError(
                "demos.select: nearest retrieves demonstrations for each input: put '{demos}' in the "
                "template where they go (and set demos.template)"
            )
        if demos.balanced:
            if not self.family.has_classes:
                raise ConfigError(
                    f"demos.balanced takes k / C demonstrations of each class: a {self.task} task has none"
                )
            classes = len(self.verbalizers or [])
            if classes and demos.k % classes:
                raise ConfigError(
                    f"demos.balanced takes k / C demonstrations of each class: demos.k={demos.k} is not "
                    f"a multiple of the {classes} classes"
                )

    @property
    def family(self) -> Any:
        """The task family ``task`` names (:class:`rlprompt.families.base.TaskFamily`)."""
        return TASKS[self.task]

    @property
    def model_template(self) -> str:
        """The template the task model sees (:func:`rlprompt.template.model_template`): the
        template itself, or with ``{demos}`` the prompt written in and the demonstrations at the
        model's prompt slot."""
        return model_template(self.template, self.prompt)

    @property
    def label_words(self) -> list[str]:
        """Each class's word as a demonstration shows it (``{label_word}``): its verbalizer, stripped."""
        return [v.replace("{prompt}", "").strip() for v in self.verbalizers or []]

    @property
    def manual_prompt(self) -> str:
        """The baseline prompt at the model's slot: ``prompt``, or with ``{demos}`` no
        demonstrations (zero-shot, ``prompt`` written into the template)."""
        return "" if has_demos_slot(self.template) else self.prompt

    def _check_calibration(self) -> None:
        if self.calibration == "none":
            return
        if not self.family.has_classes:
            raise ConfigError(f"calibration shifts class scores: it is for classification tasks, not task: {self.task}")
        if getattr(self.task_model, "scoring", None) == "generation":
            raise ConfigError(
                "calibration: batch shifts class log-probabilities; task_model.scoring=generation "
                "scores by generated answers (none): set calibration: none or another scoring"
            )
        # a gradient agent's batch_size counts the examples of its step (DQN's is a replay minibatch)
        owners = [("env", self.env)] + ([("agent", self.agent)] if AGENTS[self.agent_name].needs_gradients else [])
        for section, owner in owners:
            batch_size = getattr(owner, "batch_size", None)
            if batch_size is not None and batch_size < 2:
                raise ConfigError(
                    f"calibration: batch estimates each prompt's class shift on the examples of a batch; "
                    f"{section}.batch_size={batch_size} leaves every class at the same score: use 2 or "
                    "more"
                )

    def _check_edit_start(self) -> None:
        """The edit env starts from the manual prompt, one unit per word: it must fit ``max_units``."""
        max_units = getattr(self.env, "max_units", None)
        words = len(self.prompt.split())
        if self.env_kind() == "edit" and max_units is not None and words > max_units:
            raise ConfigError(
                f"the edit env starts from the prompt ({words} words: {self.prompt!r}), more than "
                f"env.max_units={max_units}: set env.max_units to at least {words}"
            )

    def _check_served_budgets(self) -> None:
        served = [k for k in ("requests", "tokens", "cost") if getattr(self.budget, k) is not None]
        if served and not hasattr(self.task_model, "base_url"):
            raise ConfigError(
                f"budget.{served[0]} counts API usage: it needs a served model (task_model.kind: openai), "
                f"not task_model.kind={self.task_model.kind}"
            )
        if self.budget.cost is not None and not getattr(self.task_model, "priced", False):
            raise ConfigError(
                "budget.cost needs prices: set task_model.price_prompt_per_1m and/or task_model.price_completion_per_1m"
            )

    def _resolve_env(self, env: Any) -> Any:
        """``env.kind: auto`` becomes the agent's main kind; the agent must run on the kind."""
        spec = AGENTS[self.agent_name]
        if isinstance(env, dict):
            kind = env.get("kind", "auto")
            if kind == "auto":
                env = {**env, "kind": spec.env_kinds[0]}
            env = ENV_SECTION.resolve(env, "env")
        kind = ENV_SECTION.name_of(env)
        if kind not in spec.env_kinds:
            raise ConfigError(f"agent '{self.agent_name}' runs on {list(spec.env_kinds)} envs, not env.kind={kind}")
        return env

    @property
    def agent_name(self) -> str:
        return AGENT_SECTION.name_of(self.agent)

    def agent_config(self) -> Any:
        """The agent's config dataclass, its seed the global seed unless set."""
        if self.agent.seed is not None:
            return self.agent
        return dataclasses.replace(self.agent, seed=self.seed)

    def env_kind(self) -> str:
        """The env kind the run uses (``env.kind``, resolved from ``auto`` to the agent's main kind)."""
        return ENV_SECTION.name_of(self.env)


def check_ranges(
    config: Any,
    prefix: str,
    *,
    positive: typing.Sequence[str] = (),
    non_negative: typing.Sequence[str] = (),
    at_least_one: typing.Sequence[str] = (),
    unit_interval: typing.Sequence[str] = (),
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


# ---------------------------------------------------------------- loading and overrides


def _field_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (building nested dataclasses)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        variant = next((m for m in tp.__metadata__ if isinstance(m, Variant)), None)
        if variant is None:
            return _coerce(value, args[0], key)
        if (
            variant.deferred is not None
            and isinstance(value, dict)
            and value.get(variant.key, variant.default) == variant.deferred
        ):
            return dict(value)  # resolved by the containing config's __post_init__
        return variant.resolve(value, key)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {type(value).__name__}")
        return _build(typing.cast(type, tp), value, key)
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


# ---------------------------------------------------------------- bounded YAML / JSON reading

MAX_FILE_BYTES = 10 * 2**20
"""Largest config, bench or candidates file read (10 MiB): larger ones are refused unread."""
MAX_DEPTH = 64
"""Deepest nesting of lists and mappings in one YAML/JSON document, YAML aliases expanded."""
MAX_NODES = 100_000
"""Most values (scalars, lists and mappings, YAML aliases expanded) in one YAML/JSON document.
Counted while the document is composed, so an alias bomb (each level repeating the one before)
is refused after reading a few hundred bytes, before anything is expanded."""
MAX_ALIASES = 100
"""Most YAML aliases (``*name``) in one document."""

_YAML = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_YAML}{name}" for name in ("str", "int", "float", "bool", "null")}
_TAG_WHAT = {
    "binary": "binary data (!!binary)",
    "set": "a set (!!set)",
    "omap": "an ordered map (!!omap)",
    "pairs": "a list of pairs (!!pairs)",
}
PLAIN_DATA = "text, numbers, true/false, null, lists and mappings with text keys"
"""What a config value may be (the JSON data model)."""


class _Problem(Exception):
    """A document breaks a limit or holds a non-JSON value; ``line`` is 1-based (None: unknown)."""

    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.line = None if mark is None else mark.line + 1


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag


try:  # libyaml's scanner and parser (C) when installed; composition and checks stay in Python
    from yaml.cyaml import CParser as _YamlParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _YamlParser = None


class _BoundedComposer(yaml.composer.Composer):
    """PyYAML's composer, counting as it goes: nesting depth, aliases, and the values the
    document holds once aliases are expanded (an alias counts the whole value it names)."""

    def _reset_limits(self) -> None:
        self._depth = 0
        self._nodes = 0
        self._aliases = 0

    def _count(self, weight: int, mark: Any) -> None:
        self._nodes += weight
        if self._nodes > MAX_NODES:
            through = " once its YAML aliases are expanded (an alias bomb?)" if self._aliases else ""
            raise _Problem(f"the document holds more than {MAX_NODES:,} values{through}", mark)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Problem(f"more than {MAX_ALIASES} YAML aliases (*{event.anchor} ...)", event.start_mark)
            node = super().compose_node(parent, index)
            weight = getattr(node, "_rlp_weight", None)
            if weight is None:
                raise _Problem(
                    f"the alias *{event.anchor} is inside the value it names (a recursive alias)", event.start_mark
                )
            if self._depth + node._rlp_height > MAX_DEPTH:
                raise _Problem(
                    f"the alias *{event.anchor} nests values more than {MAX_DEPTH} levels deep", event.start_mark
                )
            self._count(weight, event.start_mark)
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Problem(f"values nested more than {MAX_DEPTH} levels deep", event.start_mark)
        before = self._nodes
        self._count(1, event.start_mark)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = []
        node._rlp_height = 1 + max((child._rlp_height for child in children), default=0)
        node._rlp_weight = self._nodes - before
        return node


if _YamlParser is not None:

    class _BoundedLoader(_BoundedComposer, _YamlParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        def __init__(self, stream: str) -> None:
            _YamlParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            yaml.composer.Composer.__init__(self)
            self._reset_limits()

else:  # pragma: no cover

    class _BoundedLoader(  # type: ignore[no-redef]
        yaml.reader.Reader,
        yaml.scanner.Scanner,
        yaml.parser.Parser,
        _BoundedComposer,
        yaml.constructor.SafeConstructor,
        yaml.resolver.Resolver,
    ):
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self._reset_limits()


def _compose_yaml(text: str) -> Any:
    """The document's node tree (None for an empty document), within the limits above; a YAML
    syntax error is a ``yaml.YAMLError``, a limit a :class:`_Problem`."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        if "nesting depth" in str(exc.problem):  # libyaml's own limit (1000 levels): the same problem
            raise _Problem(f"values nested more than {MAX_DEPTH} levels deep", exc.problem_mark) from None
        raise
    finally:
        loader.dispose()


def _plain_value(node: Any) -> Any:
    """A composed node as plain data (str, int, float, bool, None, list, dict with str keys);
    any other YAML type (dates, ``!!binary``, ``!!set``, ``!!python/...``, non-text keys) is a
    :class:`_Problem` naming it. Aliases are expanded into copies (the node count bounds them)."""
    constructor = yaml.constructor.SafeConstructor()

    def convert(node: Any) -> Any:
        tag = node.tag
        if isinstance(node, yaml.ScalarNode):
            if tag in (f"{_YAML}value", f"{_YAML}merge"):  # a plain '=' or '<<' outside a key is text
                return node.value
            if tag not in _SCALAR_TAGS:
                raise _Problem(_not_plain(node), node.start_mark)
            try:
                return constructor.yaml_constructors[tag](constructor, node)
            except Exception:  # '!!int abc', '!!bool maybe'
                raise _Problem(f"{node.value!r} is not a valid {_short_tag(tag)}", node.start_mark) from None
        if isinstance(node, yaml.SequenceNode):
            if tag != f"{_YAML}seq":
                raise _Problem(_not_plain(node), node.start_mark)
            return [convert(child) for child in node.value]
        if tag != f"{_YAML}map":
            raise _Problem(_not_plain(node), node.start_mark)
        out: dict[str, Any] = {}
        lines: dict[str, int] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == f"{_YAML}merge":  # '<<: *defaults' (YAML 1.1 merge keys)
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        raise _Problem("a merge key '<<' takes a mapping or a list of mappings", source.start_mark)
                    for key, value in convert(source).items():
                        merged.setdefault(key, value)
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != f"{_YAML}str":
                quote = " (quote it)" if isinstance(key_node, yaml.ScalarNode) else ""
                raise _Problem(f"a mapping key must be text, not {_describe(key_node)}{quote}", key_node.start_mark)
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in lines:
                raise _Problem(
                    f"key '{key}' appears twice in one mapping (line {lines[key]} and line {line})", key_node.start_mark
                )
            lines[key] = line
            out[key] = convert(value_node)
        return {**{k: v for k, v in merged.items() if k not in out}, **out} if merged else out

    return convert(node)


def _describe(node: Any) -> str:
    """What a node is, in words: ``an integer (1)``, ``a list``, ``a date/time (2024-01-01)``."""
    tag: str = node.tag
    name = tag[len(_YAML) :] if tag.startswith(_YAML) else None
    if tag in (f"{_YAML}seq", f"{_YAML}map"):
        return "a list" if name == "seq" else "a mapping"
    if isinstance(node, yaml.ScalarNode) and (tag in _SCALAR_TAGS or name == "timestamp"):
        kind = {
            "int": "an integer",
            "float": "a number",
            "bool": "true/false",
            "null": "null",
            "timestamp": "a date/time",
            "str": "text",
        }[typing.cast(str, name)]  # a scalar tag or timestamp: name is set
        return f"{kind} ({_clip(node.value) or '~'})"
    return _TAG_WHAT[name] if name in _TAG_WHAT else f"a value tagged {_short_tag(tag)}"


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _not_plain(node: Any) -> str:
    hint = "; quote it to make it text" if isinstance(node, yaml.ScalarNode) else ""
    return f"{_describe(node)} is not a config value (only {PLAIN_DATA}){hint}"


def _read_limited(path: Path, what: str, error: type[Exception], limit: int = MAX_FILE_BYTES) -> str:
    """A user file's UTF-8 text (a leading byte-order mark dropped), refused unread when over ``limit`` bytes."""
    if not path.is_file():
        if path.exists():  # a directory, a pipe, a device: never read (a pipe would block)
            raise error(f"{what} {path} is not a regular file")
        raise error(f"{what} not found: {path}")
    mib = f"{limit / 2**20:g} MiB"
    try:
        if path.stat().st_size > limit:
            raise error(f"{what} {path} is {path.stat().st_size / 2**20:.1f} MiB, more than the {mib} it may be")
        with path.open("rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise error(f"{what} {path} is more than the {mib} it may be")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(f"{what} {path} is not UTF-8 text (line {line})") from None


def _where(what: str, line: int | None) -> str:
    return f"{what}, line {line}" if line is not None else what


def parse_yaml_text(text: str, what: str, error: type[Exception] = ConfigError) -> Any:
    """Parse one YAML document into plain data within the limits above (:data:`MAX_DEPTH`,
    :data:`MAX_NODES`, :data:`MAX_ALIASES`); every problem is one ``error`` naming ``what``
    and the line. An empty document (nothing or only comments) gives None."""
    try:
        node = _compose_yaml(text)
        return None if node is None else _plain_value(node)
    except _Problem as exc:
        raise error(f"{_where(what, exc.line)}: {exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} is not valid YAML: {' '.join(str(exc).split())}") from None
    except (RecursionError, MemoryError) as exc:  # pragma: no cover - the limits come first
        raise error(f"{what} is too deeply nested or too large to read ({type(exc).__name__})") from None


def read_yaml(path: str | os.PathLike[str], what: str = "config file", error: type[Exception] = ConfigError) -> Any:
    """Parse a YAML file strictly: at most :data:`MAX_FILE_BYTES`, plain data only (see
    :func:`parse_yaml_text`), a key given twice in one mapping an error (plain YAML keeps the
    last value silently, so a repeated bench label would run under one name). Errors name the
    file and, where there is one, the line. An empty document gives None."""
    p = Path(path)
    return parse_yaml_text(_read_limited(p, what, error), f"{what} {p}", error)


def json_object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` of :func:`json.loads`: a key given twice in one object is a
    :class:`ValueError` (plain ``json`` keeps the last value silently)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key '{key}' appears twice in one object")
            seen.add(key)
    return out


def check_plain_data(value: Any, max_depth: int = MAX_DEPTH, max_nodes: int | None = MAX_NODES) -> None:
    """Raise :class:`ValueError` when ``value`` (parsed JSON) nests deeper than ``max_depth``
    or holds more than ``max_nodes`` values. Iterative: deep data cannot exhaust the stack."""
    stack = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if max_nodes is not None and nodes > max_nodes:
            raise ValueError(f"more than {max_nodes:,} values")
        if isinstance(item, (list, dict)):
            if depth > max_depth:
                raise ValueError(f"values nested more than {max_depth} levels deep")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def parse_json_text(
    text: str, what: str, error: type[Exception] = ConfigError, max_nodes: int | None = MAX_NODES
) -> Any:
    """Parse JSON within :data:`MAX_DEPTH` (and ``max_nodes``), a key given twice in one object
    an error; every problem is one ``error`` naming ``what`` (and the line of a syntax error)."""
    try:
        value = json.loads(text, object_pairs_hook=json_object_without_duplicates)
    except json.JSONDecodeError as exc:
        raise error(f"{what}, line {exc.lineno}: invalid JSON ({exc.msg})") from None
    except ValueError as exc:  # a duplicate key
        raise error(f"{what}: {exc}") from None
    except RecursionError:
        raise error(f"{what}: values nested more than {MAX_DEPTH} levels deep") from None
    try:
        check_plain_data(value, MAX_DEPTH, max_nodes)
    except ValueError as exc:
        raise error(f"{what}: {exc}") from None
    return value


def read_json_file(path: str | os.PathLike[str], what: str, error: type[Exception] = ConfigError) -> Any:
    """Parse a user's JSON file within :data:`MAX_FILE_BYTES`, :data:`MAX_DEPTH` and :data:`MAX_NODES`."""
    p = Path(path)
    return parse_json_text(_read_limited(p, what, error), f"{what} {p}", error)


def read_text_file_limited(path: str | os.PathLike[str], what: str, error: type[Exception] = ConfigError) -> str:
    """A user's text file (UTF-8, at most :data:`MAX_FILE_BYTES`), with one clear error otherwise."""
    return _read_limited(Path(path), what, error)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as YAML (``3`` int, ``true`` bool, ``[a, b]``)
    under the limits and plain-data rule of config files (a date or ``!!binary`` value is refused
    as in a file); text that is not valid YAML is kept as text."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got '{text}'")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got '{text}'")
    if any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text}: '{key}' is not a dotted key")
    try:
        size = len(raw.encode("utf-8"))
    except UnicodeEncodeError:  # undecodable bytes on the command line
        raise ConfigError(f"--set {key}=...: the value is not valid text (bytes that are not UTF-8)") from None
    if size > MAX_FILE_BYTES:
        raise ConfigError(f"--set {key}=...: the value is more than {MAX_FILE_BYTES / 2**20:g} MiB")
    value: Any = ""
    if raw.strip():
        try:
            node = _compose_yaml(raw)
        except yaml.YAMLError:
            node = raw  # not YAML: the text as given
        except _Problem as exc:
            raise ConfigError(f"--set {_clip(text)}: {exc}") from None
        # "Review: {sentence} {prompt}" is text with a colon, not a YAML mapping (flow syntax "{...}" /
        # "[...]" still gives mappings and lists)
        opens = raw.lstrip()[:1]
        if node is None:
            value = None
        elif (
            node is raw or (node.tag == f"{_YAML}map" and opens != "{") or (node.tag == f"{_YAML}seq" and opens != "[")
        ):
            value = raw
        else:
            try:
                value = _plain_value(node)
            except _Problem as exc:
                raise ConfigError(f"--set {_clip(text)}: {exc}") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy); the dataclass build then validates them."""
    try:
        data = json.loads(json.dumps(data))
    except (TypeError, ValueError, RecursionError) as exc:  # a dict built in Python
        raise ConfigError(f"a config holds only {PLAIN_DATA}: {first_line(exc)}") from None
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


def upgrade_saved_config(data: dict[str, Any]) -> dict[str, Any]:
    """A run directory's ``config.json`` in today's form. Runs written before each kind had its
    own section (rlprompt 0.2.0) saved the ``task_model`` and ``env`` sections as the union of
    every kind's fields; the fields that belong only to other kinds are dropped (they were
    never read by the kind the run used). Runs saved before the ``selection`` section get the
    selection they ran with (:data:`LEGACY_SELECTION`). Runs saved when the agent section stored
    the seed it resolved to (``agent.seed`` equal to the run's ``seed``) read as ``agent.seed: null``,
    which resolves to the same seed. Anything else unknown stays, to be refused by name."""
    out = dict(data)
    out.setdefault("selection", dict(LEGACY_SELECTION))  # saved before the selection section: dev only
    agent = out.get("agent")
    if isinstance(agent, dict) and agent.get("seed") is not None and agent.get("seed") == out.get("seed", 0):
        out["agent"] = {**agent, "seed": None}
    for section, variant in (("task_model", TASK_MODEL_SECTION), ("env", ENV_SECTION)):
        value = out.get(section)
        if not isinstance(value, dict):
            continue
        name = value.get(variant.key, variant.default)
        if name == variant.deferred:  # env.kind: auto, saved before it was resolved: the agent's main kind
            agent = out.get("agent")
            agent_name = agent.get("name", DEFAULT_AGENT) if isinstance(agent, dict) else DEFAULT_AGENT
            name = AGENTS[agent_name].env_kinds[0] if agent_name in AGENTS else name
        if name not in variant.registry:
            continue
        config_class = variant.config_class(name, section)
        own = {f.name for f in dataclasses.fields(config_class)}
        others = {
            f.name for name in variant.registry.names() for f in dataclasses.fields(variant.registry[name].config_class)
        }
        out[section] = {k: v for k, v in value.items() if k in own or k == variant.key or k not in others}
        if hasattr(config_class, "upgrade_saved"):  # a kind whose defaults became computed ones
            out[section] = config_class.upgrade_saved(out[section], out)
    return out


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
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise ConfigError(
            f"a config path must be a str or a path (or None for the defaults), got {type(path).__name__} {path!r}"
        )
    if overrides is not None and (
        isinstance(overrides, (str, bytes))
        or not isinstance(overrides, (list, tuple))
        or not all(isinstance(o, str) for o in overrides)
    ):
        raise ConfigError(f"overrides must be a list of 'key=value' strings, got {overrides!r}")
    if path is not None:
        loaded = read_yaml(path)
        if loaded is None:  # an empty or comment-only file (or a bare null) is a mistake, not "all defaults"
            raise ConfigError(
                f"config file {path} holds no settings (it is empty or only comments); "
                "a config that keeps every default is '{}'"
            )
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, not a {type(loaded).__name__}")
        data = loaded
    return config_from_dict(data, overrides, cls)


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as plain data (what ``config.json`` holds); variant sections carry their kind or name."""
    return _to_data(config)


def _to_data(obj: Any, variant: Variant | None = None) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        hints = _field_hints(type(obj))
        out = {f.name: _to_data(getattr(obj, f.name), _variant_of(hints.get(f.name))) for f in dataclasses.fields(obj)}
        if variant is not None and variant.key not in out:
            out = {variant.key: variant.name_of(obj), **out}
        return out
    if isinstance(obj, dict):
        return {k: _to_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_data(v) for v in obj]
    return obj


def _variant_of(tp: Any) -> Variant | None:
    if typing.get_origin(tp) is Annotated:
        return next((m for m in tp.__metadata__ if isinstance(m, Variant)), None)
    return None


def save_config(config: Any, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as JSON, atomically."""
    from rlprompt.io import atomic_write_text

    atomic_write_text(path, json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n")
