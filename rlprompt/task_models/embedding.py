"""Sentence embeddings for retrieval: unit-length, mean-pooled last hidden states of an encoder.

What the per-input demonstration baseline (:mod:`rlprompt.retrieval`) ranks train examples by:
``E(x) = normalise(mean_t h_t(x))`` (sentence-transformers' pooling of all-MiniLM-L6-v2, the
embedded encoder), so ``E(x) . E(y)`` is the cosine similarity of two inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rlprompt.errors import ConfigError
from rlprompt.task_models.encoder import mean_pool
from rlprompt.task_models.loading import load_model, load_tokenizer


class SentenceEncoder:
    """Embeds texts in batches with a (frozen) encoder checkpoint: ``encode(texts) -> [N, D]``.

    ``name_or_path`` is ``embedded:minilm`` (the shipped all-MiniLM-L6-v2), a local directory or
    a hub id; ``model``/``tokenizer`` are already loaded objects (then nothing is loaded)."""

    def __init__(
        self,
        name_or_path: str = "embedded:minilm",
        *,
        batch_size: int = 64,
        max_length: int = 256,
        model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        if batch_size < 1 or max_length < 2:
            raise ConfigError(
                f"a sentence encoder needs batch_size >= 1 and max_length >= 2, got {batch_size} and {max_length}"
            )
        self.name_or_path = name_or_path
        self.batch_size = batch_size
        self.max_length = max_length
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(name_or_path, "encoder")
        self.model = (
            model if model is not None else load_model(name_or_path, "encoder", torch.device("cpu"), torch.float32)
        )
        if getattr(self.tokenizer, "pad_token", None) is None:  # batches are padded
            if getattr(self.tokenizer, "eos_token", None) is None:
                raise ConfigError(
                    f"sentence encoder {name_or_path!r}: its tokenizer has no padding or end token, "
                    "so inputs cannot be embedded in batches"
                )
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.texts_encoded = 0
        """Texts embedded so far (what retrieval costs besides the task model's calls)."""

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length embeddings ``[N, D]`` (float32, cpu) of ``texts``, in order."""
        texts = [str(t) for t in texts]
        if not texts:
            return torch.empty(0, self.dim)
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            batch = {k: v.to(device) for k, v in batch.items()}
            hidden = self.model(**batch).last_hidden_state
            out.append(mean_pool(hidden, batch["attention_mask"]).cpu())
        self.texts_encoded += len(texts)
        return torch.cat(out)


__all__ = ["SentenceEncoder"]
