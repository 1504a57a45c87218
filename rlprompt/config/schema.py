"""The sections of a run config: one dataclass each, every field documented in place, checks in
``__post_init__``; :class:`Config` holds them and checks what spans sections (the task family's
own checks are its :meth:`~rlprompt.families.base.TaskFamily.check_config`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from rlprompt.config.fields import AGENT_SECTION, ENV_SECTION, TASK_MODEL_SECTION, check_ranges
from rlprompt.errors import ConfigError
from rlprompt.registry import AGENTS, GENERATION_METRICS, REWARDS, TASKS
from rlprompt.template import check_placeholders, has_demos_slot, input_fields, model_template, placeholders


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
        if self.task not in TASKS:
            raise ConfigError(f"config key 'task': {TASKS.unknown(self.task)}")
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
