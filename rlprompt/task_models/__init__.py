"""Task models: turn (prompt, input) pairs into class scores, batched, cached and counted.

Importing this package registers the task-model kinds in :data:`rlprompt.registry.TASK_MODELS`
(and imports no torch: implementations load when a model is built). :func:`build_task_model`
builds the kind a config names; a new kind is one module with a
:class:`~rlprompt.task_models.base.TaskModel` subclass and its config dataclass, plus one
registration below (``tests/test_task_model_contract.py`` then checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rlprompt.registry import TASK_MODELS
from rlprompt.task_models.config import (
    EMBEDDED_MODEL,
    HFTaskModelConfig,
    OpenAITaskModelConfig,
    TaskModelConfig,
    TaskModelSpec,
)

if TYPE_CHECKING:
    from rlprompt.task_models.base import TaskModel

for _spec in (
    TaskModelSpec(
        "encoder", HFTaskModelConfig, "rlprompt.task_models.encoder:EncoderTaskModel", prompt_in_verbalizers=True
    ),
    TaskModelSpec(
        "encoder-tuned",
        HFTaskModelConfig,
        "rlprompt.task_models.encoder:TunedEncoderTaskModel",
        prompt_in_verbalizers=True,
    ),
    TaskModelSpec("masked_lm", HFTaskModelConfig, "rlprompt.task_models.lm:MaskedLMTaskModel", mask_slot=True),
    TaskModelSpec(
        "causal_lm",
        HFTaskModelConfig,
        "rlprompt.task_models.causal:CausalLMTaskModel",
        generation_entry_point="rlprompt.task_models.generation:CausalGenerationModel",
    ),
    TaskModelSpec(
        "openai",
        OpenAITaskModelConfig,
        "rlprompt.task_models.openai_api:OpenAITaskModel",
        generation_entry_point="rlprompt.task_models.openai_api:OpenAIGenerationModel",
    ),
):
    TASK_MODELS.register(_spec.kind, _spec)


def build_task_model(
    config: TaskModelConfig,
    template: str,
    verbalizers: Sequence[str],
    *,
    train_texts: Sequence[str] | None = None,
    train_labels: Sequence[int] | None = None,
    manual_prompt: str = "",
    model: Any = None,
    tokenizer: Any = None,
) -> TaskModel:
    """Build the task model ``config.kind`` names (``model``/``tokenizer`` may be given pre-built);
    kinds that fit something (``encoder-tuned``'s head) use the train split and manual prompt."""
    cls = TASK_MODELS[config.kind].model_class
    return cls.from_config(
        config,
        template,
        verbalizers,
        train_texts=train_texts,
        train_labels=train_labels,
        manual_prompt=manual_prompt,
        model=model,
        tokenizer=tokenizer,
    )


_LAZY = {
    "TaskModel": "rlprompt.task_models.base",
    "TaskModelStats": "rlprompt.task_models.base",
    "Prompt": "rlprompt.task_models.base",
    "prompt_key": "rlprompt.task_models.base",
    "HFTaskModel": "rlprompt.task_models.hf",
    "EncoderTaskModel": "rlprompt.task_models.encoder",
    "TunedEncoderTaskModel": "rlprompt.task_models.encoder",
    "mean_pool": "rlprompt.task_models.encoder",
    "MaskedLMTaskModel": "rlprompt.task_models.lm",
    "CausalLMTaskModel": "rlprompt.task_models.causal",
    "CausalGenerationModel": "rlprompt.task_models.generation",
    "embedded_model_path": "rlprompt.task_models.loading",
    "OpenAITaskModel": "rlprompt.task_models.openai_api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rlprompt.task_models' has no attribute {name!r}")


__all__ = [
    "EMBEDDED_MODEL",
    "HFTaskModelConfig",
    "OpenAITaskModelConfig",
    "TaskModelConfig",
    "TaskModelSpec",
    "build_task_model",
    *_LAZY,
]
