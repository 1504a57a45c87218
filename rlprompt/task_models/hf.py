"""What the Hugging Face task models share (:class:`HFTaskModel`).

Examples are tokenized once per template, prompts are spliced in with tensor operations, all
(prompt, example) rows of a call are sorted by length and run in large batches under
``torch.inference_mode``, and scores of repeated pairs come from an LRU cache.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import threading
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch

from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.task_models.base import Prompt, TaskModel, TaskModelStats, prompt_key
from rlprompt.task_models.config import HFTaskModelConfig
from rlprompt.task_models.loading import load_model, load_tokenizer, pick_device, pick_dtype
from rlprompt.task_models.sequences import SplicedBatch, TemplateLayout, input_key, pad_lists, splice


def _index_pairs(inputs_per_prompt: Sequence[Sequence[Any]]) -> tuple[list[tuple[int, int]], list[Any]]:
    """(prompt, input) index pairs over the distinct inputs of every prompt's list, and those inputs."""
    index: dict[str, int] = {}
    inputs: list[Any] = []
    pairs = []
    for p, items in enumerate(inputs_per_prompt):
        for item in items:
            key = input_key(item)
            if key not in index:
                index[key] = len(inputs)
                inputs.append(item)
            pairs.append((p, index[key]))
    return pairs, inputs


@dataclass
class _Rows:
    """Rows to run: per-row item index and prompt index into per-call tables."""

    items: list[tuple[list[int], list[int]]]
    row_item: torch.Tensor
    row_prompt: torch.Tensor


class HFTaskModel(TaskModel):
    """Shared machinery of the Hugging Face task models (see module docstring)."""

    model_kind: str = "encoder"
    """The head this class reads: ``encoder`` (none), ``masked_lm`` or ``causal_lm``."""

    def __init__(
        self,
        config: HFTaskModelConfig,
        template: str,
        verbalizers: Sequence[str],
        *,
        model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        self.config = config
        self.device = pick_device(config.device)
        self.dtype = pick_dtype(config.dtype, self.device)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config.name_or_path, config.kind)
        if model is None:
            model = load_model(
                config.name_or_path,
                self.model_kind,
                self.device,
                self.dtype,
                kind=config.kind,
                auto_class=self.hf_auto_class,
            )
        else:
            model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.model = model
        self.template = template
        self.verbalizers = list(verbalizers)
        self.num_classes = len(self.verbalizers)
        self.pad_id = self._pad_id()
        self.input_layout = TemplateLayout(template, self.tokenizer, config.max_sentence_tokens)
        if config.soft_prompt_position == "template" and not self.input_layout.has_prompt_slot:
            raise ConfigError("task_model.soft_prompt_position=template needs '{prompt}' in the template")
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or None
        self.replicas: list[tuple[torch.device, Any]] = [(self.device, self.model)]
        """(device, model) per device of ``task_model.devices``; the first is the main model."""
        for name in (config.devices or [])[1:]:
            device = pick_device(name)
            self.replicas.append((device, copy.deepcopy(self.model).to(device=device)))
        self.stats = TaskModelStats()
        self._cache: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()

    # ---------------------------------------------------------------- replicas

    @property
    def model(self) -> Any:
        """The model this thread computes with: a replica inside a data-parallel batch, else the main one."""
        model = getattr(self._thread_local, "model", None)
        return self._main_model if model is None else model

    @model.setter
    def model(self, value: Any) -> None:
        self._main_model = value

    @property
    def device(self) -> torch.device:
        device = getattr(self._thread_local, "device", None)
        return self._main_device if device is None else device

    @device.setter
    def device(self, value: torch.device) -> None:
        self._main_device = value

    @property
    def _thread_local(self) -> threading.local:
        local = self.__dict__.get("_local")
        if local is None:
            local = self.__dict__["_local"] = threading.local()
        return local

    def _on_replicas(self, jobs: list[Callable[[], torch.Tensor]]) -> list[torch.Tensor]:
        """Run batch ``jobs`` spread over the replicas (job i on replica i mod R, in its own
        thread), each output moved to the main device, in job order."""
        if len(self.replicas) == 1:
            return [job() for job in jobs]
        from concurrent.futures import ThreadPoolExecutor

        def run_share(replica: int) -> list[tuple[int, torch.Tensor]]:
            device, model = self.replicas[replica]
            self._thread_local.model, self._thread_local.device = model, device
            try:
                on_gpu = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
                with torch.inference_mode(), on_gpu:
                    return [(i, jobs[i]().to(self._main_device)) for i in range(replica, len(jobs), len(self.replicas))]
            finally:
                self._thread_local.model = self._thread_local.device = None

        with ThreadPoolExecutor(len(self.replicas)) as pool:
            shares = list(pool.map(run_share, range(len(self.replicas))))
        out: list[torch.Tensor | None] = [None] * len(jobs)
        for share in shares:
            for i, value in share:
                out[i] = value
        return out

    # ---------------------------------------------------------------- helpers

    def _pad_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0  # pragma: no cover

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    @property
    def embedding_std(self) -> float:
        return float(self.model.get_input_embeddings().weight.float().std())

    def prompt_embeddings(self, prompt: str) -> torch.Tensor:
        ids = (
            self.input_layout.prompt_ids(prompt)
            if self.input_layout.has_prompt_slot
            else self.input_layout._ids(prompt)
        )
        if not ids:
            raise ConfigError(f"prompt {prompt!r} has no tokens to embed")
        with torch.inference_mode():
            weight = self.model.get_input_embeddings().weight
            return weight[torch.tensor(ids, device=weight.device)].detach().float().cpu().clone()

    def clear_cache(self) -> None:
        self._cache.clear()

    def cache_state(self) -> dict[str, Any]:
        """Stats plus the score cache in LRU order, stored compactly: each prompt key and text
        once, pairs as index rows ``[M, 2]``, scores ``[M, C]``."""
        state = super().cache_state()
        keys = list(self._cache)
        prompts = list(dict.fromkeys(k[0] for k in keys))
        texts = list(dict.fromkeys(k[1] for k in keys))
        prompt_index = {p: i for i, p in enumerate(prompts)}
        text_index = {t: i for i, t in enumerate(texts)}
        pairs = [[prompt_index[p], text_index[t]] for p, t in keys]
        state["cache"] = {
            "prompts": prompts,
            "texts": texts,
            "pairs": torch.tensor(pairs, dtype=torch.long).reshape(-1, 2),
            "values": torch.stack([self._cache[k] for k in keys]).cpu() if keys else torch.zeros(0, self.num_classes),
        }
        return state

    def load_cache_state(self, state: dict[str, Any]) -> None:
        super().load_cache_state(state)
        cache = state["cache"]
        prompts, texts = cache["prompts"], cache["texts"]
        values = cache["values"].cpu()  # _score_pairs keeps cached logits on the CPU
        self._cache = OrderedDict()
        for (p, t), value in zip(cache["pairs"].tolist(), values, strict=True):
            self._cache[(prompts[p], texts[t])] = value

    def words(self) -> list[str]:
        from rlprompt.task_models.vocab import tokenizer_words

        return tokenizer_words(self.tokenizer)

    def prompt_token_ids(self, prompt: str) -> list[int] | None:
        return [int(i) for i in self.input_layout.prompt_ids(prompt)]

    _soft_key = staticmethod(prompt_key)

    def _normalise_prompts(self, prompts: Sequence[Prompt] | torch.Tensor) -> tuple[list[Any], list[str], bool]:
        """-> (prompts, cache keys, is_soft). Soft prompts become float tensors ``[n, H]``."""
        if isinstance(prompts, torch.Tensor):
            if prompts.dim() == 2:
                prompts = prompts.unsqueeze(0)
            prompts = list(prompts)
        prompts = list(prompts)
        if not prompts:
            raise RLPromptError("score() needs at least one prompt")
        if all(isinstance(p, str) for p in prompts):
            return prompts, list(prompts), False
        if all(isinstance(p, torch.Tensor) for p in prompts):
            soft = cast(list[torch.Tensor], prompts)  # every one a tensor (checked just above)
            n_tokens = {tuple(p.shape) for p in soft}
            if len(n_tokens) != 1:
                raise RLPromptError(f"soft prompts in one call must share a shape, got {sorted(n_tokens)}")
            shape = soft[0].shape
            if len(shape) != 2 or shape[1] != self.hidden_size:
                raise RLPromptError(f"a soft prompt must be [n_tokens, {self.hidden_size}], got {list(shape)}")
            if not all(torch.isfinite(p).all() for p in soft):
                raise RLPromptError("soft prompt contains non-finite values")
            return soft, [self._soft_key(p) for p in soft], True
        raise RLPromptError("prompts must be all strings (discrete) or all tensors (soft), not a mix")

    def _encode_items(
        self, layout: TemplateLayout, texts: Sequence[str], soft: bool
    ) -> list[tuple[list[int], list[int]]]:
        items = layout.encode_texts(texts)
        if soft and self.config.soft_prompt_position == "prefix":
            # PEFT layout: virtual tokens before everything; the discrete slot stays empty.
            return [([], pre + post) for pre, post in items]
        return items

    def _prompt_table(self, layout: TemplateLayout, prompts: list[Any], soft: bool) -> list[list[int]] | None:
        return None if soft else [layout.prompt_ids(p) for p in prompts]

    # ---------------------------------------------------------------- the row engine

    def _run_rows(
        self,
        rows: _Rows,
        prompt_ids: list[list[int]] | None,
        soft_prompts: torch.Tensor | None,
        grad: bool,
        row_extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Forward every row (item + prompt spliced), sorted by length, in chunks.

        Returns the concatenated per-row outputs of :meth:`_forward_rows` in row order.
        """
        device = self.device
        pre, pre_len = pad_lists([i[0] for i in rows.items], self.pad_id, device)
        post, post_len = pad_lists([i[1] for i in rows.items], self.pad_id, device)
        if soft_prompts is not None:
            n_tokens = soft_prompts.shape[1]
            prompts_t = torch.full((soft_prompts.shape[0], n_tokens), self.pad_id, dtype=torch.long, device=device)
            prompts_len = torch.full((soft_prompts.shape[0],), n_tokens, dtype=torch.long, device=device)
        else:
            assert prompt_ids is not None
            prompts_t, prompts_len = pad_lists(prompt_ids, self.pad_id, device)
        row_item = rows.row_item.to(device)
        row_prompt = rows.row_prompt.to(device)
        total = pre_len[row_item] + prompts_len[row_prompt] + post_len[row_item]
        if self.max_positions is not None and int(total.max()) > self.max_positions:
            raise RLPromptError(
                f"an input is {int(total.max())} tokens, over the model's {self.max_positions} positions; "
                "lower task_model.max_sentence_tokens or shorten the prompt"
            )
        order = torch.argsort(total, stable=True)
        context = contextlib.nullcontext() if grad else torch.inference_mode()

        def forward(idx: torch.Tensor) -> torch.Tensor:
            """One batch, on the device (and model) of the calling thread."""
            dev = self.device
            items, prompts = row_item[idx], row_prompt[idx]
            batch = splice(
                pre[items],
                pre_len[items],
                prompts_t[prompts],
                prompts_len[prompts],
                post[items],
                post_len[items],
                self.pad_id,
            )
            if dev != device:
                batch = SplicedBatch(
                    *(t.to(dev) for t in (batch.input_ids, batch.attention_mask, batch.slot_mask, batch.lengths))
                )
            embeds = None
            if soft_prompts is not None:
                embeds = self.model.get_input_embeddings()(batch.input_ids)
                soft_rows = soft_prompts[prompts].to(device=dev, dtype=embeds.dtype)
                embeds = embeds.masked_scatter(batch.slot_mask.unsqueeze(-1), soft_rows)
            extra = row_extra[idx].to(dev) if row_extra is not None else None
            return self._forward_rows(batch, embeds, extra)

        chunks = [
            order[start : start + self.config.batch_size] for start in range(0, len(order), self.config.batch_size)
        ]
        with context:
            if grad:
                outputs = [forward(idx) for idx in chunks]
            else:
                outputs = self._on_replicas([functools.partial(forward, idx) for idx in chunks])
        self.stats.forward_batches += len(chunks)
        out = torch.cat(outputs)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order), device=order.device)
        return out[inverse]

    @abstractmethod
    def _forward_rows(self, batch: Any, inputs_embeds: torch.Tensor | None, extra: torch.Tensor | None) -> torch.Tensor:
        """Per-row outputs for one spliced batch."""

    @abstractmethod
    def _compute(
        self, prompts: list[Any], soft: bool, pairs: list[tuple[int, int]], texts: Sequence[str], grad: bool
    ) -> torch.Tensor:
        """Logits ``[M, C]`` for ``pairs`` of (prompt index, text index)."""

    # ---------------------------------------------------------------- public API

    def score(self, prompts: Sequence[Prompt] | torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        prompt_list, keys, soft = self._normalise_prompts(prompts)
        texts = list(texts)
        if not texts:
            raise RLPromptError("score() needs at least one text")
        pairs = [(p, n) for p in range(len(prompt_list)) for n in range(len(texts))]
        return self._score_pairs(prompt_list, keys, soft, pairs, texts).view(len(prompt_list), len(texts), -1)

    def score_pairs(
        self, prompts: Sequence[Prompt] | torch.Tensor, texts_per_prompt: Sequence[Sequence[str]]
    ) -> list[torch.Tensor]:
        prompt_list, keys, soft = self._normalise_prompts(prompts)
        if len(texts_per_prompt) != len(prompt_list):
            raise RLPromptError(f"{len(prompt_list)} prompts but {len(texts_per_prompt)} text lists")
        if any(len(texts) == 0 for texts in texts_per_prompt):
            raise RLPromptError("score_pairs() needs at least one text per prompt")
        pairs, texts = _index_pairs(texts_per_prompt)
        flat = self._score_pairs(prompt_list, keys, soft, pairs, texts)
        return list(flat.split([len(texts) for texts in texts_per_prompt]))

    def _score_pairs(
        self,
        prompts: list[Any],
        keys: list[str],
        soft: bool,
        pairs: list[tuple[int, int]],
        texts: list[Any],
        compute: Any = None,
        width: int | None = None,
        namespace: str = "",
    ) -> torch.Tensor:
        """Scores ``[M, width]`` (class logits by default) of (prompt index, input index) pairs:
        cached ones reused, duplicates computed once, the rest computed by ``compute`` (default
        :meth:`_compute`) and counted as LM calls after the budget allows them. ``namespace``
        separates cache entries of different kinds of score."""
        compute = compute or self._compute
        out = torch.empty(len(pairs), self.num_classes if width is None else width)
        use_cache = self.config.cache_size > 0
        unique: dict[tuple[str, str], int] = {}  # identical pairs inside one call run once
        firsts: list[tuple[int, int]] = []
        slot_of_row: list[int] = []
        missing_rows: list[int] = []
        text_keys = [namespace + input_key(t) for t in texts]
        for row, (p, n) in enumerate(pairs):
            key = (keys[p], text_keys[n])
            hit = self._cache.get(key) if use_cache else None
            if hit is not None:
                out[row] = hit
                continue
            if key not in unique:
                unique[key] = len(firsts)
                firsts.append((p, n))
            missing_rows.append(row)
            slot_of_row.append(unique[key])
        self.stats.requested += len(pairs)
        self.stats.cache_hits += len(pairs) - len(missing_rows)
        if firsts:
            if self.budget is not None:
                self.budget.check("lm_calls", len(firsts))
            logits = compute(prompts, soft, firsts, texts, grad=False).float().cpu().reshape(len(firsts), -1)
            if not torch.isfinite(logits).all():
                raise RLPromptError("the task model produced non-finite scores (NaN/inf); check the model and dtype")
            self.charge_lm_calls(len(firsts))
            out[torch.tensor(missing_rows, dtype=torch.long)] = logits[torch.tensor(slot_of_row, dtype=torch.long)]
            if use_cache:
                for key, slot in unique.items():
                    self._cache[key] = logits[slot]
                while len(self._cache) > self.config.cache_size:
                    self._cache.popitem(last=False)
        return out

    def score_soft_with_grad(self, soft_prompt: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        if soft_prompt.dim() != 2 or soft_prompt.shape[1] != self.hidden_size:
            raise RLPromptError(f"a soft prompt must be [n_tokens, {self.hidden_size}], got {list(soft_prompt.shape)}")
        texts = list(texts)
        pairs = [(0, n) for n in range(len(texts))]
        if self.budget is not None:
            self.budget.check("lm_calls", len(texts))
        logits = self._compute([soft_prompt], True, pairs, texts, grad=True)
        self.stats.requested += len(texts)
        self.charge_lm_calls(len(texts))
        return logits.float()

    @staticmethod
    def _stack_soft(prompts: list[Any]) -> torch.Tensor:
        return torch.stack([p.float() for p in prompts])
