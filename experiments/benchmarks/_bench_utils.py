"""Helpers shared by the benchmark scripts: record the batches a task model builds, replay them raw."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from rlprompt.task_models import HFTaskModel, mean_pool


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def record_batches(task_model: HFTaskModel, run: Callable[[], Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (input_ids, attention_mask) batches the task model forwards while ``run()`` runs."""
    recorded: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = task_model._forward_rows

    def spy(batch, inputs_embeds, extra):
        recorded.append((batch.input_ids.clone(), batch.attention_mask.clone()))
        return original(batch, inputs_embeds, extra)

    task_model._forward_rows = spy  # type: ignore[method-assign]
    try:
        run()
    finally:
        del task_model._forward_rows
    return recorded


def time_raw_encoder(task_model: HFTaskModel, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Seconds for ``model(input_ids, attention_mask)`` + mean pooling over ``batches``."""
    model = task_model.model
    sync(task_model.device)
    start = time.perf_counter()
    with torch.inference_mode():
        for input_ids, attention_mask in batches:
            out = model(input_ids=input_ids, attention_mask=attention_mask)
            mean_pool(out.last_hidden_state, attention_mask)
    sync(task_model.device)
    return time.perf_counter() - start
