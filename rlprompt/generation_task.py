"""Generation tasks (``task: generation``): prompts scored by how well the LM produces references.

A :class:`GenerationTask` is what a :class:`~rlprompt.task.Task` is for classification, with
the same interface to envs and agents (``score_requests``, ``reward``, ``evaluate``,
``spending``), so every env kind and agent runs on it unchanged. Its training reward is

* ``likelihood`` (default): the mean per-token log-probability of the reference given input
  and prompt, teacher forced, the best over an example's references, averaged over the
  minibatch - the objective sum log P(y | x, p), one forward per pair and no generation; or
* a generation metric (``f1``, ``exact_match``, ``rougeL``, ``bleu``, ``chrf`` ...) of greedy
  generations on the minibatch, at the cost of generating.

:meth:`GenerationTask.evaluate` reports every configured metric on greedy generations of a
whole split, with the likelihood; the first metric of ``generation.metrics`` is the main one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from rlprompt.config import Config
from rlprompt.data import _read_rows
from rlprompt.data.generation import GenerationTaskData, generation_dataset_from_records, load_generation_data
from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.outcomes import example_key, split_record
from rlprompt.registry import GENERATION_METRICS, TASK_MODELS
from rlprompt.task import Task, checked_prompt, checked_prompts, checked_split
from rlprompt.task_models.base import Prompt
from rlprompt.template import LabeledPrompt, input_fields, shows_input

SAMPLE_OUTPUTS = 3
"""Greedy outputs kept in a split's metrics (the first examples'), to show what a prompt does."""


def template_fields(config: Config) -> list[str]:
    """The input fields the config's template names (``{prompt}`` and ``{demos}`` excluded), in order."""
    return input_fields(config.template)


@dataclass
class GenerationTask(Task):
    """Data with references + a generating task model + a likelihood or metric reward."""

    if TYPE_CHECKING:  # the fields as load() fills them (Task types them for classification)
        data: GenerationTaskData  # type: ignore[assignment]  # generation splits in Task's data field
        task_model: Any  # a generating model: CausalGenerationModel or OpenAIGenerationModel

    @classmethod
    def load(cls, config: Config, *, model: Any = None, tokenizer: Any = None) -> GenerationTask:
        data = load_generation_data(config.data, template_fields(config))
        spec = TASK_MODELS[config.task_model.kind]
        if spec.generation_entry_point is None:  # pragma: no cover - refused by the config already
            raise ConfigError(f"task_model.kind={config.task_model.kind} cannot generate text")
        task_model = spec.generation_class.from_config(
            config.task_model, config.model_template, [], generation=config.generation, model=model, tokenizer=tokenizer
        )
        for split in ("train", "dev", "test"):
            dataset = data.split(split)
            task_model.check_references(dataset.examples, dataset.references, dataset.source)
        task = cls(config, data, task_model)
        task.batch_metric = cast(str, config.reward.name)  # the family fills it (likelihood by default)
        return task

    @property
    def num_classes(self) -> int:
        return 0

    def selection_key(self, metrics: dict[str, Any]) -> tuple[float, ...]:
        """How dev selection ranks prompts: the main metric, then the reward."""
        return (float(metrics[self.primary_metric]), float(metrics["reward"]))

    def labels(self, split: str) -> torch.Tensor:
        raise RLPromptError("a generation task has references, not labels")

    def _inputs(self, split: str) -> Sequence[Any]:
        return self.data.split(split).examples

    def _pool_records(self) -> tuple[list[Any], list[str], list[int | None]]:
        """(inputs, first references, no classes) of the demonstration pool: train or a data file."""
        pool = self.config.demos.pool
        if pool == "train":
            dataset = self.data.train
        else:
            path = Path(pool)
            if not path.is_file():
                raise ConfigError(f"demos.pool: no such file {pool} (give 'train' or a data file)")
            first = 1 if path.suffix.lower() == ".jsonl" else 2
            dataset = generation_dataset_from_records(
                _read_rows(path),
                str(path),
                self.data.fields,
                self.data.reference_field,
                self.config.data.empty_text,
                first,
            )
        return list(dataset.examples), [refs[0] for refs in dataset.references], [None] * len(dataset)

    def logits(self, prompts: Any, split: str = "train", indices: Any = None) -> torch.Tensor:
        raise RLPromptError("a generation task has no class logits: use reward() or evaluate()")

    # ------------------------------------------------------------ training rewards

    def _batches(
        self, split: str, indices: Sequence[Sequence[int] | np.ndarray]
    ) -> tuple[list[list[Any]], list[list[list[str]]]]:
        dataset = self.data.split(checked_split(split))
        checked = self._checked_index_sets(split, indices)
        examples = [[dataset.examples[i] for i in idx] for idx in checked]
        references = [[dataset.references[i] for i in idx] for idx in checked]
        return examples, references

    def _rewards(self, prompts: Any, examples: list[list[Any]], references: list[list[list[str]]]) -> torch.Tensor:
        name = self.config.reward.name
        if name == "likelihood":
            values = self.task_model.log_likelihood(prompts, examples, references)
            return torch.stack([v.mean() for v in values])
        outputs = self.task_model.generate(prompts, examples)
        metric = GENERATION_METRICS[cast(str, name)]  # the family fills it
        return torch.tensor([float(metric(out, refs)) for out, refs in zip(outputs, references, strict=True)])

    def reward(
        self,
        prompts: Sequence[Prompt] | torch.Tensor,
        indices: Sequence[int] | np.ndarray | None = None,
        split: str = "train",
    ) -> torch.Tensor:
        """The configured reward ``[P]`` of each prompt on ``indices`` of ``split`` (all by default);
        the arguments are checked as :meth:`Task.reward` checks them (``prompts`` a list, never a str)."""
        prompt_list = _prompt_list(prompts)
        split = checked_split(split)
        if indices is None:
            indices = np.arange(len(self.data.split(split)))
        indices = self._checked_indices(split, indices)
        if self.shows_demos:  # each prompt on the examples it does not show
            return self.score_requests(prompt_list, [indices] * len(prompt_list), split)[0]
        if self.budget is not None:
            self.budget.check("prompt_evals", len(prompt_list))
        examples, references = self._batches(split, [indices] * len(prompt_list))
        rewards = self._rewards(prompt_list, examples, references)
        self.charge_prompt_evals(len(prompt_list))
        return rewards

    def score_requests(
        self,
        prompts: Sequence[Prompt] | torch.Tensor,
        indices: Sequence[Sequence[int] | np.ndarray],
        split: str = "train",
        calibrate: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward of prompt ``i`` on its own examples ``indices[i]`` (twice: the batch metric a
        classification task reports as accuracy is the reward itself here). Generation has no
        class scores to calibrate (``calibrate`` changes nothing)."""
        prompt_list = _prompt_list(prompts)
        split = checked_split(split)
        indices = self._unshown_sets(prompt_list, split, self._checked_index_sets(split, indices, len(prompt_list)))
        if self.budget is not None:
            self.budget.check("prompt_evals", len(indices))
        examples, references = self._batches(split, indices)
        rewards = self._rewards(prompt_list, examples, references)
        self.charge_prompt_evals(len(indices))
        return rewards, rewards.clone()

    def reference_rewards(
        self, indices: Sequence[Sequence[int] | np.ndarray], split: str = "train"
    ) -> torch.Tensor | None:
        """The manual prompt's reward ``[S]`` on each example set (``selection.paired``; None when
        off): the reference of paired ranking, charged no prompt evaluation (see :class:`~rlprompt.task.Task`)."""
        if not self.config.selection.paired:
            return None
        examples, references = self._batches(split, indices)
        return self._rewards([self.config.manual_prompt] * len(examples), examples, references)

    # ------------------------------------------------------------ evaluation

    def evaluate(self, prompt: Prompt, split: str = "test", per_example: bool = False) -> dict[str, Any]:
        """Every configured metric of greedy generations on ``split``, the mean reference
        likelihood, the reward, the size and a few outputs (``prompt``: one prompt; ``split``:
        train, dev or test). ``per_example`` adds ``per_example``: the split's
        :func:`rlprompt.outcomes.split_record` (each metric on each example alone, its reference
        likelihood and its generated text)."""
        prompt = _unlabeled(checked_prompt(prompt))
        dataset = self.data.split(checked_split(split))
        kept = self._unshown_sets([prompt], split, [list(range(len(dataset)))])[0]
        shown = len(dataset) - len(kept)
        if shown:  # the examples the prompt shows as demonstrations are not scored
            dataset = dataset.subset(kept)
        examples, references = list(dataset.examples), list(dataset.references)
        metrics = self._metrics_of([prompt], [examples], [references], per_example)
        if shown:
            metrics["shown_excluded"] = shown
        return metrics

    def evaluate_per_input(
        self, prompts: Sequence[str], split: str = "test", per_example: bool = False
    ) -> dict[str, Any]:
        """As :meth:`evaluate`, with each example generated under its own prompt (``prompts[i]``
        for example ``i`` of ``split``; e.g. :meth:`retrieved_prompts`). A prompt that shows its
        own example is refused."""
        split = checked_split(split)
        dataset = self.data.split(split)
        if not isinstance(prompts, (list, tuple)) or len(prompts) != len(dataset):
            got = f"{len(prompts)}" if isinstance(prompts, (list, tuple)) else type(prompts).__name__
            raise ConfigError(
                f"per-input prompts: a list of one prompt per {split} example ({len(dataset)}), got {got}"
            )
        prompts = [_unlabeled(checked_prompt(p, f"prompts[{i}]")) for i, p in enumerate(prompts)]
        examples, references = list(dataset.examples), list(dataset.references)
        shown = [
            i
            for i, (p, x) in enumerate(zip(prompts, examples, strict=True))
            if isinstance(p, str) and p and self.shows_demos and shows_input(p, x)
        ]
        if shown:
            raise RLPromptError(
                f"per-input prompts: the prompt of {split} example {shown[0]} shows that example "
                f"({len(shown)} such); an example is never scored with a prompt that shows it"
            )
        return self._metrics_of(prompts, [[x] for x in examples], [[r] for r in references], per_example)

    def _metrics_of(
        self, prompts: list[Prompt], examples: list[list[Any]], references: list[list[Any]], per_example: bool
    ) -> dict[str, Any]:
        """Metrics of prompt ``i`` generating for its examples ``examples[i]`` (all groups pooled, in order)."""
        before = self.task_model.stats.lm_calls
        tokens_before = self.task_model.stats.generated_tokens
        per_likelihood = torch.cat(
            [v.reshape(-1) for v in self.task_model.log_likelihood(prompts, examples, references)]
        )
        outputs = [out for group in self.task_model.generate(prompts, examples) for out in group]
        examples = [x for group in examples for x in group]
        references = [r for group in references for r in group]
        likelihood = float(per_likelihood.mean())
        metrics: dict[str, Any] = {
            name: float(GENERATION_METRICS[name](outputs, references)) for name in self.metric_names
        }
        metrics["likelihood"] = likelihood
        reward = cast(str, self.config.reward.name)  # the family fills it (likelihood by default)
        metrics["reward"] = (
            likelihood if reward == "likelihood" else float(GENERATION_METRICS[reward](outputs, references))
        )
        metrics["n"] = len(examples)
        metrics["outputs"] = outputs[:SAMPLE_OUTPUTS]
        metrics["lm_calls"] = self.task_model.stats.lm_calls - before
        metrics["generated_tokens"] = self.task_model.stats.generated_tokens - tokens_before
        if per_example:
            scores = {
                name: [
                    float(GENERATION_METRICS[name]([out], [refs]))
                    for out, refs in zip(outputs, references, strict=True)
                ]
                for name in self.metric_names
            }
            scores["likelihood"] = [float(v) for v in per_likelihood.tolist()]
            keys = [example_key(example, refs) for example, refs in zip(examples, references, strict=True)]
            metrics["per_example"] = split_record(keys, scores, list(outputs))
        return metrics


def _unlabeled(prompt: Any) -> Any:
    """``prompt``, refusing a labeled prompt (label words are class words: classification only)."""
    if isinstance(prompt, LabeledPrompt):
        raise ConfigError(
            f"the prompt {prompt.describe()} has label words, which are for classification tasks; "
            "a generation task's prompt is text"
        )
    return prompt


def _prompt_list(prompts: Sequence[Prompt] | torch.Tensor) -> list[Prompt]:
    prompts = checked_prompts(prompts)  # a str is refused, not split into characters
    if isinstance(prompts, list):
        prompts = [_unlabeled(p) for p in prompts]
    if isinstance(prompts, torch.Tensor):
        return list(prompts.unsqueeze(0) if prompts.dim() == 2 else prompts)
    return list(prompts)


__all__ = ["GenerationTask", "GenerationTaskData", "template_fields"]
