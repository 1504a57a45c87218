"""Task models: turn (prompt, input) pairs into class logits.

Use :func:`build_task_model` to get the implementation a :class:`~rlprompt.config.TaskModelConfig`
names; models load once and every call batches all its (prompt, example) pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlprompt.config import TaskModelConfig
from rlprompt.errors import DataError
from rlprompt.task_models.base import HFTaskModel, Prompt, TaskModel, TaskModelStats
from rlprompt.task_models.encoder import EncoderTaskModel, mean_pool
from rlprompt.task_models.lm import CausalLMTaskModel, MaskedLMTaskModel
from rlprompt.task_models.loading import embedded_model_path

TASK_MODEL_CLASSES: dict[str, type[HFTaskModel]] = {
    "encoder": EncoderTaskModel,
    "encoder-tuned": EncoderTaskModel,
    "masked_lm": MaskedLMTaskModel,
    "causal_lm": CausalLMTaskModel,
}


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
) -> HFTaskModel:
    """Load the task model ``config.kind`` names (``model``/``tokenizer`` may be given pre-built).

    ``encoder-tuned`` fits its linear head here on ``train_texts``/``train_labels`` under the
    manual prompt.
    """
    cls = TASK_MODEL_CLASSES[config.kind]
    task_model = cls(config, template, verbalizers, model=model, tokenizer=tokenizer)
    if config.kind == "encoder-tuned":
        if train_texts is None or train_labels is None:
            raise DataError("task_model.kind=encoder-tuned needs the train split to fit its head")
        assert isinstance(task_model, EncoderTaskModel)
        task_model.fit_head(train_texts, train_labels, manual_prompt)
    return task_model


__all__ = [
    "CausalLMTaskModel",
    "EncoderTaskModel",
    "HFTaskModel",
    "MaskedLMTaskModel",
    "Prompt",
    "TaskModel",
    "TaskModelStats",
    "build_task_model",
    "embedded_model_path",
    "mean_pool",
]
