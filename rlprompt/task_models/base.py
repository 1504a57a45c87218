"""The task-model interface: prompts x examples -> class logits, batched, cached and counted.

A :class:`TaskModel` turns a batch of prompts (discrete text, or soft prompts given as input
embeddings ``[n_tokens, hidden]``) and a list of input texts into class logits
``[P, N, C]``. Rewards (``rlprompt.rewards``) normalise those logits over classes. Counters
(:class:`TaskModelStats`):

* ``requested`` - (prompt, example) scorings asked for, cache hits included;
* ``lm_calls`` - scorings actually computed (cache hits excluded);
* ``cache_hits``, ``forward_batches`` (model forward passes), ``verbalizer_calls``;
* ``generated_tokens`` - tokens generated (generation tasks' greedy outputs);
* served models (``rlprompt.task_models.openai_api``): ``requests`` (answers used, those read
  from the disk cache included), ``requests_cached`` (of those, read from the cache: not paid),
  ``prompt_tokens``, ``completion_tokens`` and ``cost`` (from the answers' usage), ``retries``,
  ``invalid_answers`` (generated answers that matched no verbalizer).

Capabilities are class attributes (``hf_auto_class``, ``peft_task_type``,
``supports_soft_prompts``, ``supports_gradients``); ``tests/test_task_model_contract.py``
checks every registered kind against them.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol, Union, runtime_checkable

import torch

from rlprompt.budget import Budget
from rlprompt.errors import ConfigError
from rlprompt.template import LabeledPrompt

Prompt = Union[str, torch.Tensor]
"""What a task model scores: text at the template's prompt slot, or a soft prompt ``[n, hidden]``.
Agents and tasks also handle :class:`~rlprompt.template.LabeledPrompt` (text with its own label
words), which the task resolves into text scored with those words."""


def prompt_key(prompt: Prompt | LabeledPrompt) -> str:
    """A hashable key of a prompt: its text, its text and label words, or a digest of a soft
    prompt's values."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, LabeledPrompt):
        return "words:" + json.dumps([prompt.text, list(prompt.label_words)])
    data = prompt.detach().float().contiguous().cpu().numpy().tobytes()
    return "soft:" + hashlib.sha1(data).hexdigest()


@runtime_checkable
class SoftPromptable(Protocol):
    """A task model that takes soft prompts (input embeddings ``[n_tokens, hidden]``) as well as
    text: every Hugging Face kind; not a served model, which takes text only. The soft env and
    gradient prompt tuning need it; ``TaskModel.supports_soft_prompts`` declares it (the
    task-model contract checks that the two agree)."""

    @property
    def hidden_size(self) -> int:
        """Width of a soft-prompt vector (the model's input-embedding size)."""
        ...

    @property
    def embedding_std(self) -> float:
        """Standard deviation of the input-embedding entries: the natural scale of soft prompts."""
        ...

    def prompt_embeddings(self, prompt: str) -> torch.Tensor:
        """Input embeddings ``[n_tokens, hidden]`` of a discrete prompt: a soft prompt's start."""
        ...

    def score_soft_with_grad(self, soft_prompt: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Class logits ``[N, C]`` for one soft prompt, differentiable w.r.t. ``soft_prompt``
        (where ``supports_gradients``)."""
        ...


@runtime_checkable
class GeneratingModel(Protocol):
    """The task model of a generation task (``TaskModelSpec.generation_entry_point``): it scores
    references by likelihood and writes greedy outputs, for prompts on their own inputs (a local
    causal LM, or a served model). ``tests/test_task_model_contract.py`` checks every registered
    generation class against it."""

    def check_references(self, examples: Sequence[Any], references: Sequence[Sequence[str]], source: str) -> None:
        """Refuse (one clear error naming ``source`` and the row) inputs whose references cannot be scored."""
        ...

    def log_likelihood(
        self,
        prompts: Sequence[Prompt] | torch.Tensor,
        examples_per_prompt: Sequence[Sequence[Any]],
        references_per_prompt: Sequence[Sequence[Sequence[str]]],
    ) -> list[torch.Tensor]:
        """Per prompt ``i``, the mean token log-probability ``[n_i]`` of the best reference of each of its inputs."""
        ...

    def generate(
        self, prompts: Sequence[Prompt] | torch.Tensor, examples_per_prompt: Sequence[Sequence[Any]]
    ) -> list[list[str]]:
        """Per prompt ``i``, the greedy output for each of its inputs."""
        ...


@runtime_checkable
class Relabelable(Protocol):
    """A task model that reads the classes' words from a language-model head, so other label
    words can be scored (label-word search): the LM task models."""

    def verbalizer_length(self, verbalizer: str) -> int:
        """Tokens ``verbalizer`` spans (0 when the tokenizer cannot represent it)."""
        ...

    def with_verbalizers(self, verbalizers: Sequence[str]) -> TaskModel:
        """The same loaded model scoring ``verbalizers`` as the classes."""
        ...


@dataclass
class TaskModelStats:
    """Running totals of the work a task model did (see module docstring for units)."""

    requested: int = 0
    lm_calls: int = 0
    cache_hits: int = 0
    forward_batches: int = 0
    verbalizer_calls: int = 0
    generated_tokens: int = 0
    requests: int = 0
    requests_cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    retries: int = 0
    invalid_answers: int = 0

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)


class TaskModel(ABC):
    """Scores prompts on texts. Implementations load once and batch every call."""

    num_classes: int
    stats: TaskModelStats
    budget: Budget | None = None
    """Charged the LM calls of each call before they run (set by ``Task.spending``)."""
    hf_auto_class: ClassVar[str | None] = None
    """The ``transformers`` auto class the model loads with (None: not a Hugging Face model)."""
    peft_task_type: ClassVar[str | None] = None
    """PEFT task type of an exported soft-prompt adapter (None: soft prompts cannot be exported)."""
    supports_soft_prompts: ClassVar[bool] = True
    """Scores soft prompts (``[n_tokens, hidden]`` embeddings) as well as text: the class has the
    :class:`SoftPromptable` capability."""
    supports_gradients: ClassVar[bool] = True
    """``score_soft_with_grad`` works (white-box prompt tuning)."""
    served: ClassVar[bool] = False
    """Reached over an API: requests, tokens and money are counted and can be budgeted."""

    @classmethod
    def from_config(cls, config: Any, template: str, verbalizers: Sequence[str], **kwargs: Any) -> TaskModel:
        """Build from a ``task_model`` config section (``kwargs``: data and pre-built parts some kinds use)."""
        # the ABC declares no __init__: the subclasses that keep this method take these arguments
        build: Callable[..., TaskModel] = cls
        return build(config, template, verbalizers, model=kwargs.get("model"), tokenizer=kwargs.get("tokenizer"))

    def charge_lm_calls(self, count: int) -> None:
        """Check ``count`` LM calls against the budget (raises BudgetExhausted), then count them."""
        if self.budget is not None:
            self.budget.charge("lm_calls", count)
        self.stats.lm_calls += count

    @abstractmethod
    def score(self, prompts: Sequence[Prompt] | torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Class logits ``[P, N, C]`` (float32, cpu) for every prompt on every text."""

    @abstractmethod
    def score_pairs(
        self, prompts: Sequence[Prompt] | torch.Tensor, texts_per_prompt: Sequence[Sequence[str]]
    ) -> list[torch.Tensor]:
        """Class logits ``[n_i, C]`` of prompt ``i`` on its own texts, all in one batched call
        (what a vector env needs: each sub-env draws its own examples)."""

    def cache_state(self) -> dict[str, Any]:
        """Cached scores and counters: restoring them makes a resumed run score (and count LM
        calls) exactly as the uninterrupted run would have."""
        return {"stats": self.stats.as_dict()}

    def load_cache_state(self, state: dict[str, Any]) -> None:
        self.stats = TaskModelStats(**state["stats"])

    def reset_stats(self) -> None:
        self.stats = TaskModelStats()

    def words(self) -> list[str]:
        """Whole words the model reads as single units, most common first: the default action
        vocabulary of token-level envs."""
        raise ConfigError(f"{type(self).__name__} has no word list: give the env a vocabulary")

    def prompt_token_ids(self, prompt: str) -> list[int] | None:
        """Token ids of a discrete prompt as the model reads it (None when it has no tokenizer)."""
        return None
