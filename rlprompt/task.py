"""A task bundles data, a loaded task model and the reward: what every env and agent scores with.

:class:`Task` is built once from a :class:`~rlprompt.config.Config` and then answers
``reward(prompts, indices)`` for training batches (counted in ``prompt_evals``) and
``evaluate(prompt, split)`` for held-out metrics. :func:`evaluate_prompt` is the one-call
API behind ``rlprompt eval``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from rlprompt.budget import Budget
from rlprompt.config import Config, config_from_dict, load_config
from rlprompt.data import ClassificationDataset, TaskData, load_file, load_task_data
from rlprompt.errors import ConfigError, DataError, RLPromptError
from rlprompt.outcomes import example_key, split_record
from rlprompt.registry import TASKS
from rlprompt.rewards import accuracy, batch_calibrate, class_log_probs, classification_metrics, compute_reward
from rlprompt.rewards.classification import hard_predictions, per_example_correct, per_example_gold_log_prob
from rlprompt.task_models import Prompt, TaskModel, build_task_model
from rlprompt.task_models.base import Relabelable
from rlprompt.template import DemoPool, LabeledPrompt, has_demos_slot, label_word_of, shows_input, verbalizer_with

SPLITS = ("train", "dev", "test")


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def checked_split(split: Any, name: str = "split") -> str:
    """``split`` when it names a split (train, dev or test); else one :class:`ConfigError`."""
    if not isinstance(split, str) or split not in SPLITS:
        raise ConfigError(f"{name} must be one of {list(SPLITS)}, got {_describe(split)}")
    return split


def _check_soft_prompt(prompt: torch.Tensor, name: str) -> None:
    if prompt.dim() != 2:
        raise ConfigError(
            f"{name} must be a text prompt (str) or a soft prompt tensor [tokens, hidden], "
            f"got a tensor of shape {list(prompt.shape)}"
        )
    if not prompt.is_floating_point() or not bool(torch.isfinite(prompt).all()):
        raise ConfigError(f"{name}: a soft prompt must hold finite floating-point numbers")


MAX_LABEL_WORD_VERBALIZERS = 4096
"""Verbalizers one label-word scoring model reads at most (beyond, it is rebuilt for those asked)."""


def prompt_text(prompt: Any) -> Any:
    """The text at the prompt slot: a labeled prompt's text, else ``prompt`` itself."""
    return prompt.text if isinstance(prompt, LabeledPrompt) else prompt


def checked_prompt(prompt: Any, name: str = "prompt") -> Prompt:
    """One prompt: a str (numpy strings too), a :class:`~rlprompt.template.LabeledPrompt` or a
    2-D soft-prompt tensor; else one :class:`ConfigError`."""
    if isinstance(prompt, LabeledPrompt):
        return prompt
    if isinstance(prompt, str):
        return str(prompt)
    if isinstance(prompt, torch.Tensor):
        _check_soft_prompt(prompt, name)
        return prompt
    if isinstance(prompt, (list, tuple)):
        raise ConfigError(
            f"{name} must be one prompt (a str or a soft prompt tensor), got a {type(prompt).__name__} "
            "of prompts: score several with reward()"
        )
    raise ConfigError(f"{name} must be a str (or a soft prompt tensor), got {_describe(prompt)}")


def checked_prompts(prompts: Any, name: str = "prompts") -> list[Prompt] | torch.Tensor:
    """A batch of prompts: a list (or tuple, or 1-D array) of prompts, or a soft-prompt tensor
    (``[tokens, hidden]``: one; ``[P, tokens, hidden]``: P). A str is refused (it is not a list
    of prompts: each character would be scored as one); so is an empty batch."""
    if isinstance(prompts, str):
        raise ConfigError(
            f"{name} must be a list of prompts, got a str ({prompts[:40]!r}): pass [{prompts[:40]!r}] "
            "to score one prompt"
        )
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() == 3:
            for i, prompt in enumerate(prompts):
                _check_soft_prompt(prompt, f"{name}[{i}]")
        else:
            _check_soft_prompt(prompts, name)
        return prompts
    if isinstance(prompts, np.ndarray) and prompts.ndim == 1:
        prompts = list(prompts)
    if not isinstance(prompts, (list, tuple)):
        raise ConfigError(f"{name} must be a list of prompts (str or soft prompt tensors), got {_describe(prompts)}")
    if not prompts:
        raise ConfigError(f"{name} is empty: give at least one prompt")
    return [checked_prompt(p, f"{name}[{i}]") for i, p in enumerate(prompts)]


def prompt_count(prompts: list[Prompt] | torch.Tensor) -> int:
    return 1 if isinstance(prompts, torch.Tensor) and prompts.dim() == 2 else len(prompts)


def checked_index_list(indices: Any, size: int, split: str, name: str = "indices") -> list[int]:
    """Example indices of a split of ``size`` examples: a non-empty list, tuple, range or 1-D
    array of integers (numpy integers too, never bools or floats) in ``0..size-1``."""
    if isinstance(indices, range):
        indices = list(indices)
    if isinstance(indices, (list, tuple)):
        for i, value in enumerate(indices):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{name} must be integers (example positions), got {_describe(value)} at {name}[{i}]")
        values = [int(v) for v in indices]
    elif isinstance(indices, (np.ndarray, torch.Tensor)):
        array = np.asarray(indices.detach().cpu() if isinstance(indices, torch.Tensor) else indices)
        if array.ndim != 1:
            raise ConfigError(f"{name} must be a 1-D list of example indices, got an array of shape {array.shape}")
        if array.dtype.kind not in "iu":
            raise ConfigError(f"{name} must be integers (example positions), got an array of {array.dtype}")
        values = [int(v) for v in array]
    else:
        raise ConfigError(f"{name} must be a list of example indices (integers), got {_describe(indices)}")
    if not values:
        raise ConfigError(f"{name} is empty: give at least one example index (or None for the whole split)")
    bad = [i for i in values if not 0 <= i < size]
    if bad:
        raise DataError(f"{name}: example index {bad[0]} is out of range for the {split} split ({size} examples)")
    return values


def as_config(config: Config | dict[str, Any] | str | os.PathLike[str]) -> Config:
    """A Config from a Config, a dict of sections or a YAML path (one clear error otherwise)."""
    if isinstance(config, dict):
        return config_from_dict(config)
    if isinstance(config, (str, Path)):
        return load_config(config)
    if not isinstance(config, Config):
        raise ConfigError(f"Task.from_config needs a Config, a dict or a YAML path, not {type(config).__name__}")
    return config


def check_loaded_objects(model: Any, tokenizer: Any) -> None:
    """``model=``/``tokenizer=`` of :meth:`Task.from_config` are loaded objects, not names."""
    for name, value in (("model", model), ("tokenizer", tokenizer)):
        if isinstance(value, (str, bytes, os.PathLike, int, float, list, dict)):
            raise ConfigError(
                f"{name}= takes a loaded {name} object, got {_describe(value)}; to name a model, set "
                "task_model.name_or_path in the config"
            )
    if model is not None and not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model= takes a loaded torch model (torch.nn.Module), got {type(model).__name__}")


@dataclass
class Task:
    """Data + task model + reward of one config; models load once, calls batch."""

    config: Config
    data: TaskData
    task_model: TaskModel
    prompt_evals: int = 0
    """Prompt evaluations requested on training batches (cache hits included)."""
    budget: Budget | None = field(default=None, repr=False)
    """What training may still spend (installed by :meth:`spending`); None: unlimited."""
    _labels: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _demo_pool: DemoPool | None = field(default=None, repr=False)
    _retriever: Any = field(default=None, repr=False)
    _words_model: TaskModel | None = field(default=None, repr=False)
    _words_columns: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(
        cls, config: Config | dict[str, Any] | str | os.PathLike[str], *, model: Any = None, tokenizer: Any = None
    ) -> Task:
        """Load data and the task model of ``config`` (a Config, a dict of sections or a YAML path)
        as the task class of its family (``TASKS[config.task].task_class``: a generation config
        gives a :class:`~rlprompt.generation_task.GenerationTask`). ``model`` and ``tokenizer`` are
        loaded objects (a model's name goes in ``task_model.name_or_path``). A family's own task
        class refuses another family's config."""
        config = as_config(config)
        check_loaded_objects(model, tokenizer)
        family_class = TASKS[config.task].task_class
        # the family cls belongs to: the registered task class closest to it (GenerationTask's is
        # generation, though it subclasses Task; a user's subclass of Task's is classification)
        owners = [n for n in TASKS.names() if issubclass(cls, TASKS[n].task_class)]
        own = max(owners, key=lambda n: len(TASKS[n].task_class.__mro__)) if owners else None
        if own == config.task:  # the family's own class, or a user's subclass of it
            build = cls
        elif issubclass(family_class, cls):  # Task.from_config of a generation config, say
            build = family_class
        else:
            raise ConfigError(f"{cls.__name__} needs task: {own or '?'}, got task: {config.task}")
        return build.load(config, model=model, tokenizer=tokenizer)

    @classmethod
    def load(cls, config: Config, *, model: Any = None, tokenizer: Any = None) -> Task:
        """Build the task of a checked ``config`` of this class's family (what :meth:`from_config` calls)."""
        verbalizers = cast(list[str], config.verbalizers)  # never None once the config is built (its family fills it)
        data = load_task_data(config.data, num_classes=len(verbalizers))
        task_model = build_task_model(
            config.task_model,
            config.model_template,
            verbalizers,
            train_texts=data.train.texts,
            train_labels=data.train.labels,
            manual_prompt=config.manual_prompt,
            model=model,
            tokenizer=tokenizer,
        )
        return cls(config, data, task_model)

    batch_metric = "accuracy"
    """What the second value of :meth:`score_requests` is (envs report it per step)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Task:
        """A task is its loaded model and data: a deep copy is the task itself (what
        ``gymnasium.make``, which deep-copies its keyword arguments, needs to share the model)."""
        return self

    # ------------------------------------------------------------ demonstrations

    @property
    def shows_demos(self) -> bool:
        """Whether prompts are blocks of demonstrations (``{demos}`` in the template)."""
        return has_demos_slot(self.config.template)

    def demo_pool(self) -> DemoPool:
        """The examples demonstrations are drawn from (``demos.pool``), rendered by ``demos.template``."""
        if self._demo_pool is None:
            if not self.shows_demos or self.config.demos.template is None:
                raise ConfigError(
                    "this task shows no demonstrations: put '{demos}' in the template and set demos.template"
                )
            examples, answers, labels = self._pool_records()
            self._demo_pool = DemoPool(self.config.demos.template, examples, answers, labels)
        return self._demo_pool

    def _pool_records(self) -> tuple[list[Any], list[str], list[int | None]]:
        """(inputs, answers, classes) of the demonstration pool: the train split or a data file."""
        pool = self.config.demos.pool
        if pool == "train":
            dataset = self.data.train
        else:
            if not Path(pool).is_file():
                raise ConfigError(f"demos.pool: no such file {pool} (give 'train' or a data file)")
            data = self.config.data
            dataset = load_file(pool, data.text_column, data.label_column, data.label_names, data.empty_text)
            bad = [label for label in dataset.labels if not 0 <= label < self.num_classes]
            if bad:
                raise DataError(
                    f"demos.pool {pool}: label {bad[0]} is not one of the task's {self.num_classes} classes"
                )
        words = self.config.label_words
        return list(dataset.texts), [words[label] for label in dataset.labels], list(dataset.labels)

    def demonstrations(self, prompt: str) -> dict[str, Any] | None:
        """What a block of demonstrations is made of (None when prompts are not demonstrations):
        the pool ``ids`` and ``texts`` in order (``ids`` None for text that is not a block of the
        pool's), the fixed ``instruction``, the demonstration ``template``, the ``pool`` and the
        ``label_words``."""
        if not self.shows_demos:
            return None
        pool = self.demo_pool()
        ids = pool.parse(prompt)
        words = self.config.label_words or None
        return {
            "ids": ids,
            "texts": None if ids is None else [pool.texts[i] for i in ids],
            "instruction": self.config.prompt,
            "template": self.config.demos.template,
            "pool": self.config.demos.pool,
            "label_words": words,
        }

    def _inputs(self, split: str) -> Sequence[Any]:
        """The inputs of ``split`` (what a demonstration shows of an example)."""
        return self.data.split(split).texts

    def inputs(self, split: str) -> list[Any]:
        """The inputs of ``split``: texts, or a generation task's field mappings."""
        return list(self._inputs(checked_split(split)))

    def unshown(self, prompt: Prompt, split: str, indices: Sequence[int]) -> list[int]:
        """``indices`` without the examples ``prompt`` shows as demonstrations: an example is
        never scored with a prompt that shows it (:func:`rlprompt.template.shows_input`)."""
        prompt = prompt_text(prompt)
        if not self.shows_demos or not isinstance(prompt, str) or not prompt:
            return list(indices)
        inputs = self._inputs(split)
        return [i for i in indices if not shows_input(prompt, inputs[i])]

    def _unshown_sets(
        self, prompts: Sequence[Prompt] | torch.Tensor, split: str, indices: list[list[int]]
    ) -> list[list[int]]:
        if not self.shows_demos or isinstance(prompts, torch.Tensor):
            return indices
        kept = [self.unshown(p, split, idx) for p, idx in zip(prompts, indices, strict=True)]
        for prompt, idx in zip(prompts, kept, strict=True):
            if not idx:
                raise RLPromptError(
                    f"every example asked for is shown by the prompt as a demonstration: none is left "
                    f"to score it on ({prompt_text(prompt)[:60]!r}...)"
                )
        return kept

    # ------------------------------------------------------------ label words

    @property
    def manual_label_words(self) -> tuple[str, ...]:
        """The configured verbalizers' words as label words read them (each one's last word)."""
        return tuple(label_word_of(v) for v in cast(list[str], self.config.verbalizers))  # filled by the family

    def verbalizers_for(self, label_words: Sequence[str]) -> list[str]:
        """The verbalizers reading ``label_words`` (one per class), each in its class's form
        (the configured verbalizer with the word replaced: :func:`rlprompt.template.verbalizer_with`)."""
        if len(label_words) != self.num_classes:
            raise ConfigError(
                f"label words {list(label_words)}: one per class, and the task has {self.num_classes} classes"
            )
        verbalizers = cast(list[str], self.config.verbalizers)  # never None once the config is built
        return [verbalizer_with(v, w) for v, w in zip(verbalizers, label_words, strict=True)]

    def label_word_model(self, verbalizers: Sequence[str]) -> TaskModel:
        """The task model that reads every one of ``verbalizers`` (built once for a union of
        them and reused: each labeled prompt reads its own columns, so one forward per example
        scores every label-word choice). It shares the loaded model, counters and budget."""
        if not isinstance(self.task_model, Relabelable):
            raise ConfigError(
                f"label words are read from a language model's head, and the task model "
                f"{type(self.task_model).__name__} scores classes otherwise: label-word search needs "
                "task_model.kind causal_lm or masked_lm"
            )
        wanted = list(dict.fromkeys(verbalizers))
        if self._words_model is None or any(v not in self._words_columns for v in wanted):
            union = list(dict.fromkeys([*self._words_columns, *wanted]))
            if len(union) > MAX_LABEL_WORD_VERBALIZERS:
                union = wanted
            self._words_model = self.task_model.with_verbalizers(union)
            self._words_columns = {v: i for i, v in enumerate(union)}
        model = self._words_model
        model.stats, model.budget = self.task_model.stats, self.task_model.budget
        return model

    def verbalizer_scores(self, prompt: str, texts: Sequence[str], verbalizers: Sequence[str]) -> torch.Tensor:
        """Raw scores ``[N, V]`` of each of ``verbalizers`` after ``prompt`` on ``texts`` (one
        forward per text whatever ``V``, through :meth:`label_word_model`)."""
        model = self.label_word_model(verbalizers)
        raw = model.score_pairs([prompt], [list(texts)])[0]
        return raw[:, [self._words_columns[v] for v in verbalizers]]

    def cache_state(self) -> dict[str, Any]:
        """The task model's score cache and counters, and the label-word model's (its verbalizers
        and cache) when labeled prompts were scored: restored, a resumed run re-pays nothing."""
        state: dict[str, Any] = {"task_model": self.task_model.cache_state()}
        if self._words_model is not None:
            state["label_word_model"] = {
                "verbalizers": list(self._words_columns),
                "cache": self._words_model.cache_state(),
            }
        return state

    def load_cache_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`cache_state` (counters shared with the label-word model as before)."""
        self.task_model.load_cache_state(state["task_model"])
        words = state.get("label_word_model")
        if words is not None:
            if list(self._words_columns) != list(words["verbalizers"]):  # the cache's columns are the saved model's
                self._words_model, self._words_columns = None, {}
            model = self.label_word_model(words["verbalizers"])
            model.load_cache_state(words["cache"])
            model.stats = self.task_model.stats

    def _raw_pairs(self, prompts: list[Any] | torch.Tensor, texts: list[list[str]]) -> list[torch.Tensor]:
        """Raw class scores ``[n_i, C]`` of prompt ``i`` on ``texts[i]``; labeled prompts read
        their own words through :meth:`label_word_model`."""
        labeled = (
            []
            if isinstance(prompts, torch.Tensor)
            else [i for i, p in enumerate(prompts) if isinstance(p, LabeledPrompt)]
        )
        if not labeled:
            return self.task_model.score_pairs(prompts, texts)
        out: list[torch.Tensor | None] = [None] * len(prompts)
        plain = [i for i in range(len(prompts)) if i not in set(labeled)]
        if plain:
            rows = self.task_model.score_pairs([prompts[i] for i in plain], [texts[i] for i in plain])
            for i, row in zip(plain, rows, strict=True):
                out[i] = row
        needed = [self.verbalizers_for(prompts[i].label_words) for i in labeled]
        model = self.label_word_model([v for vs in needed for v in vs])
        rows = model.score_pairs([prompts[i].text for i in labeled], [texts[i] for i in labeled])
        for i, row, verbalizers in zip(labeled, rows, needed, strict=True):
            out[i] = row[:, [self._words_columns[v] for v in verbalizers]]
        return out

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def metric_names(self) -> list[str]:
        """Metrics :meth:`evaluate` reports (besides the reward), as the task family names them."""
        return list(self.config.family.metric_names(self.config))

    @property
    def primary_metric(self) -> str:
        """The metric results tables lead with: the family's first."""
        return self.metric_names[0]

    def selection_key(self, metrics: dict[str, Any]) -> tuple[float, ...]:
        """How dev selection ranks prompts: the configured reward, then accuracy."""
        return (float(metrics["reward"]), float(metrics["accuracy"]))

    @contextlib.contextmanager
    def spending(self, budget: Budget | None) -> Iterator[None]:
        """Charge prompt evaluations (here) and LM calls (in the task model) to ``budget`` inside the block."""
        saved = self.budget, self.task_model.budget
        self.budget = self.task_model.budget = budget
        try:
            yield
        finally:
            self.budget, self.task_model.budget = saved

    def charge_prompt_evals(self, count: int) -> None:
        """Count ``count`` prompt evaluations, after checking the budget allows them."""
        if self.budget is not None:
            self.budget.charge("prompt_evals", count)
        self.prompt_evals += count

    def _checked_indices(self, split: str, indices: Sequence[int] | np.ndarray, name: str = "indices") -> list[int]:
        split = checked_split(split)
        return checked_index_list(indices, len(self.data.split(split)), split, name)

    def _checked_index_sets(self, split: str, indices: Any, count: int | None = None) -> list[list[int]]:
        """``indices[s]``: one list of example indices per prompt (``count`` of them when given)."""
        if isinstance(indices, (str, bytes)) or not isinstance(indices, (list, tuple, np.ndarray)):
            raise ConfigError(
                f"indices must be a list of example-index lists (one per prompt), got {_describe(indices)}"
            )
        if count is not None and len(indices) != count:
            raise ConfigError(
                f"indices must hold one example-index list per prompt: {count} prompts, {len(indices)} index lists"
            )
        return [self._checked_indices(split, idx, f"indices[{s}]") for s, idx in enumerate(indices)]

    def labels(self, split: str) -> torch.Tensor:
        if split not in self._labels:
            self._labels[split] = torch.tensor(self.data.split(split).labels, dtype=torch.long)
        return self._labels[split]

    def calibrate(self, logits: torch.Tensor) -> torch.Tensor:
        """The class scores ``[..., N, C]`` that rewards and predictions read: the model's, or
        with ``calibration: batch`` log-probabilities shifted by their mean over the ``N`` examples."""
        if self.config.calibration == "none":
            return logits
        if logits.shape[-2] < 2:
            raise RLPromptError(
                f"calibration: batch estimates each prompt's class shift on the examples scored "
                f"together, and {logits.shape[-2]} example leaves every class at the same score: "
                "score at least 2 examples together (a larger split or batch), or set calibration: none"
            )
        if not getattr(self.task_model, "scores_are_probabilities", True):
            raise RLPromptError(
                "calibration: batch shifts class log-probabilities, and the task model scores by "
                "generated answers (no log-probabilities): set calibration: none, or serve the "
                "model where log-probs are returned"
            )
        return batch_calibrate(logits)

    def logits(
        self,
        prompts: Sequence[Prompt] | torch.Tensor,
        split: str = "train",
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> torch.Tensor:
        """Class scores ``[P, N, C]`` on ``split`` (or the ``indices`` of it), calibrated as configured."""
        prompts = checked_prompts(prompts)
        dataset: ClassificationDataset = self.data.split(checked_split(split))
        texts = dataset.texts if indices is None else [dataset.texts[i] for i in self._checked_indices(split, indices)]
        if not isinstance(prompts, torch.Tensor) and any(isinstance(p, LabeledPrompt) for p in prompts):
            return self.calibrate(torch.stack(self._raw_pairs(prompts, [list(texts)] * len(prompts))))
        return self.calibrate(self.task_model.score(prompts, texts))

    def reward(
        self,
        prompts: Sequence[Prompt] | torch.Tensor,
        indices: Sequence[int] | np.ndarray | None = None,
        split: str = "train",
    ) -> torch.Tensor:
        """The configured reward ``[P]`` of each prompt on a batch of ``split`` examples.

        ``prompts`` is a list of prompts (``["It was"]`` scores one; a bare str is refused) or a
        soft-prompt tensor; ``indices`` a list or 1-D array of example positions of ``split``
        (integers in range; None: the whole split); ``split`` is train, dev or test."""
        prompts = checked_prompts(prompts)
        split = checked_split(split)
        if indices is not None:
            indices = self._checked_indices(split, indices)
        count = prompt_count(prompts)
        if self.shows_demos:  # each prompt on the examples it does not show
            every = list(range(len(self.data.split(split)))) if indices is None else indices
            return self.score_requests(prompts, [every] * count, split)[0]
        if self.budget is not None:
            self.budget.check("prompt_evals", count)
        logits = self.logits(prompts, split, indices)
        self._check_reward_fits_scores()
        labels = self.labels(split) if indices is None else self.labels(split)[torch.tensor(indices, dtype=torch.long)]
        self.charge_prompt_evals(logits.shape[0])
        return self._reward_of(logits, labels)

    def reference_rewards(
        self, indices: Sequence[Sequence[int] | np.ndarray], split: str = "train"
    ) -> torch.Tensor | None:
        """The manual prompt's reward ``[S]`` on each example set ``indices[s]``, the reference of
        paired ranking (``selection.paired``; None when off). A baseline, not a prompt evaluation:
        no evaluation is charged, and its LM calls are those of examples it has not seen yet."""
        if not self.config.selection.paired:
            return None
        dataset = self.data.split(checked_split(split))
        sets = self._checked_index_sets(split, indices)
        logits = self.task_model.score_pairs(
            [self.config.manual_prompt] * len(sets), [[dataset.texts[i] for i in idx] for idx in sets]
        )
        labels = self.labels(split)
        return torch.stack(
            [
                self._reward_of(self.calibrate(row), labels[torch.as_tensor(idx, dtype=torch.long)])
                for idx, row in zip(sets, logits, strict=True)
            ]
        )

    def _check_reward_fits_scores(self) -> None:
        """A model whose scores are hard answers (a served model without log-probs) gives no
        class probabilities: probability rewards would rank an unanswered example (a tie) above
        a wrong answer, so only ``accuracy`` trains on it."""
        if not getattr(self.task_model, "scores_are_probabilities", True) and self.config.reward.name != "accuracy":
            raise RLPromptError(
                f"the task model scores by generated answers (no log-probabilities), which give no "
                f"class probabilities for reward '{self.config.reward.name}': set reward.name: "
                "accuracy, or serve the model where log-probs are returned"
            )

    def _reward_of(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        r = self.config.reward
        return compute_reward(
            r.name,
            logits,
            labels,
            gap_correct=r.gap_correct,
            gap_incorrect=r.gap_incorrect,
            balance_weight=r.balance_weight,
        )

    def score_requests(
        self,
        prompts: Sequence[Prompt] | torch.Tensor,
        indices: Sequence[Sequence[int] | np.ndarray],
        split: str = "train",
        calibrate: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward and accuracy ``[P]`` of prompt ``i`` on its own examples ``indices[i]``.

        All prompts are scored in one batched task-model call (a vector env's N sub-envs).
        ``calibrate=False`` reads the raw class scores (a single input scored under its own
        prompt cannot be batch-calibrated: the per-input env's reward).
        """
        prompts = checked_prompts(prompts)
        dataset = self.data.split(checked_split(split))
        indices = self._unshown_sets(prompts, split, self._checked_index_sets(split, indices, prompt_count(prompts)))
        if self.budget is not None:
            self.budget.check("prompt_evals", len(indices))
        texts = [[dataset.texts[i] for i in idx] for idx in indices]
        logits = self._raw_pairs(prompts, texts)
        self._check_reward_fits_scores()
        labels = self.labels(split)
        rewards, accuracies = [], []
        for idx, row in zip(indices, logits, strict=True):
            row = self.calibrate(row) if calibrate else row
            gold = labels[torch.as_tensor(np.asarray(idx), dtype=torch.long)]
            rewards.append(self._reward_of(row, gold))
            accuracies.append(accuracy(row, gold))
        self.charge_prompt_evals(len(texts))
        return torch.stack(rewards), torch.stack(accuracies)

    def evaluate(self, prompt: Prompt, split: str = "test", per_example: bool = False) -> dict[str, Any]:
        """Metrics of one prompt on a whole split (accuracy, macro-F1, gold log-prob, counts; with
        calibration, ``class_shift``: the mean class log-probabilities subtracted, which a user of
        the prompt subtracts from single inputs' scores too). ``prompt`` is one prompt (a str or a
        soft-prompt tensor), ``split`` train, dev or test. ``per_example`` adds ``per_example``:
        the split's :func:`rlprompt.outcomes.split_record` (correctness, gold log-prob, predicted
        class and class log-probabilities of every example)."""
        prompt = checked_prompt(prompt)
        before = self.task_model.stats.lm_calls
        dataset: ClassificationDataset = self.data.split(checked_split(split))
        kept = self._unshown_sets([prompt], split, [list(range(len(dataset)))])[0]
        if len(kept) < len(dataset):  # the examples the prompt shows as demonstrations are not scored
            dataset = dataset.subset(kept)
        if isinstance(prompt, LabeledPrompt):
            raw = self._raw_pairs([prompt], [list(dataset.texts)])[0]
        else:
            raw = self.task_model.score([prompt], dataset.texts)[0]
        metrics = self._split_metrics(raw, split, dataset, kept, per_example)
        metrics["lm_calls"] = self.task_model.stats.lm_calls - before
        return metrics

    def evaluate_per_input(
        self, prompts: Sequence[str], split: str = "test", per_example: bool = False
    ) -> dict[str, Any]:
        """As :meth:`evaluate`, with each example scored under its own prompt (``prompts[i]``
        for example ``i`` of ``split``; e.g. :meth:`retrieved_prompts`). Calibration shifts by the
        mean over the split as for one prompt. A prompt that shows its own example is refused."""
        split = checked_split(split)
        dataset: ClassificationDataset = self.data.split(split)
        if not isinstance(prompts, (list, tuple)) or len(prompts) != len(dataset):
            got = f"{len(prompts)}" if isinstance(prompts, (list, tuple)) else _describe(prompts)
            raise ConfigError(
                f"per-input prompts: a list of one prompt per {split} example ({len(dataset)}), got {got}"
            )
        prompts = [checked_prompt(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        shown = [
            i
            for i, (p, x) in enumerate(zip(prompts, self._inputs(split), strict=True))
            if isinstance(prompt_text(p), str)
            and prompt_text(p)
            and self.shows_demos
            and shows_input(prompt_text(p), x)
        ]
        if shown:
            raise RLPromptError(
                f"per-input prompts: the prompt of {split} example {shown[0]} shows that example "
                f"({len(shown)} such); an example is never scored with a prompt that shows it"
            )
        before = self.task_model.stats.lm_calls
        raw = torch.cat(self._raw_pairs(prompts, [[text] for text in dataset.texts]))
        metrics = self._split_metrics(raw, split, dataset, list(range(len(dataset))), per_example)
        metrics["lm_calls"] = self.task_model.stats.lm_calls - before
        return metrics

    def retriever(self) -> Any:
        """The per-input demonstration retriever of ``demos.select: nearest`` (built once):
        :class:`rlprompt.retrieval.DemoRetriever` over :meth:`demo_pool`."""
        if self._retriever is None:
            from rlprompt.retrieval import DemoRetriever
            from rlprompt.task_models.embedding import SentenceEncoder

            demos = self.config.demos
            self._retriever = DemoRetriever.build(
                self.demo_pool(),
                SentenceEncoder(demos.encoder),
                k=demos.k,
                order=demos.order,
                balanced=demos.balanced,
                template=self.config.model_template,
            )
        return self._retriever

    def retrieved_prompts(self, split: str = "test") -> list[str]:
        """Each ``split`` example's demonstration block by retrieval (:meth:`retriever`)."""
        return self.retriever().blocks(self._inputs(checked_split(split)))

    def _split_metrics(
        self, raw: torch.Tensor, split: str, dataset: ClassificationDataset, kept: list[int], per_example: bool
    ) -> dict[str, Any]:
        """Metrics of raw class scores ``[N, C]`` of ``dataset`` (the ``kept`` examples of ``split``)."""
        labels = self.labels(split)[torch.as_tensor(kept, dtype=torch.long)]
        logits = self.calibrate(raw)
        metrics = classification_metrics(logits, labels)
        if self.config.calibration != "none":
            metrics["class_shift"] = [float(v) for v in class_log_probs(raw).mean(0)]
        metrics["reward"] = float(self._reward_of(logits, labels))
        if len(kept) < len(self.data.split(split)):
            metrics["shown_excluded"] = len(self.data.split(split)) - len(kept)
        if per_example:
            log_probs = class_log_probs(logits)
            metrics["per_example"] = split_record(
                [example_key(text, label) for text, label in zip(dataset.texts, dataset.labels, strict=True)],
                {
                    "accuracy": per_example_correct(logits, labels).tolist(),
                    "gold_log_prob": per_example_gold_log_prob(logits, labels).tolist(),
                },
                hard_predictions(logits).tolist(),
                log_probs.tolist(),
            )
        return metrics


def retrieval_description(config: Config) -> str:
    """How a ``demos.select: nearest`` config prompts (what results show as its prompt)."""
    d = config.demos
    balanced = ", class-balanced" if d.balanced else ""
    return f"<per input: the {d.k} nearest pool examples by {d.encoder}, {d.order}{balanced}>"


def evaluate_prompt(
    config: Config,
    prompt: str | None = None,
    split: str = "test",
    task: Task | None = None,
    per_example: bool = False,
) -> dict[str, Any]:
    """Score one discrete prompt (the config's manual prompt by default) on a split
    (``per_example``: with its per-example outcomes, ``per_example``).

    Returns ``accuracy``, ``macro_f1``, ``gold_log_prob``, ``reward``, ``n``, ``lm_calls``,
    ``forward_batches``, ``predicted_counts``, ``prompt``, ``split`` and ``wall_time_s``.
    """
    start = time.perf_counter()
    checked_split(split)  # before the task loads its model
    if prompt is not None:
        checked_prompt(prompt)
    if task is not None and not isinstance(task, Task):
        raise ConfigError(f"task= must be an rlprompt Task (or None), got {_describe(task)}")
    per_input = config.demos.select == "nearest"
    if per_input and prompt is not None:
        raise ConfigError(
            "demos.select: nearest gives each input its own demonstrations by retrieval; a prompt "
            "given here would be one fixed block for every input (set demos.select: fixed for that)"
        )
    task = task or Task.from_config(config)
    batches_before = task.task_model.stats.forward_batches
    if per_input:
        prompt = retrieval_description(config)
        metrics = task.evaluate_per_input(task.retrieved_prompts(split), split, per_example=per_example)
    else:
        prompt = config.manual_prompt if prompt is None else prompt
        metrics = task.evaluate(prompt, split, per_example=per_example)
    metrics.update(
        prompt=prompt,
        split=split,
        forward_batches=task.task_model.stats.forward_batches - batches_before,
        task_model=config.task_model.label,
        wall_time_s=round(time.perf_counter() - start, 3),
    )
    return metrics
