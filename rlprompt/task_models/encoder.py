"""Sentence-encoder task model: class logits from embedding similarity (the embedded default).

``p_c = softmax_c(scale * cos(E(template(x, prompt)), E(verbalizer_c(prompt))))`` with ``E`` the
mean-pooled, L2-normalised last hidden state. Verbalizers may contain ``{prompt}``
(``"{prompt} great."``); their embeddings are computed per prompt in the same forward batches
as the inputs, cached, and counted in ``stats.verbalizer_calls``.

The ``encoder-tuned`` kind replaces the similarity by a linear head fitted once on the train
split's embeddings under the manual prompt and then frozen.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import torch

from rlprompt.errors import ConfigError, DataError
from rlprompt.task_models.config import HFTaskModelConfig
from rlprompt.task_models.hf import HFTaskModel, _Rows
from rlprompt.task_models.sequences import SplicedBatch, TemplateLayout

_STATIC = "\0static"


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of token states over the attention mask, L2-normalised (sentence-transformers)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(1)
    pooled = summed / mask.sum(1).clamp_min(1e-9)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


class EncoderTaskModel(HFTaskModel):
    """Similarity (or linear-head) classification on top of a sentence encoder."""

    model_kind = "encoder"
    hf_auto_class = "AutoModel"
    peft_task_type: ClassVar[str | None] = "FEATURE_EXTRACTION"

    def __init__(
        self,
        config: HFTaskModelConfig,
        template: str,
        verbalizers: Sequence[str],
        *,
        model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        super().__init__(config, template, verbalizers, model=model, tokenizer=tokenizer)
        unk = self.tokenizer.unk_token_id
        for verbalizer in self.verbalizers:
            ids = self.tokenizer(verbalizer.replace("{prompt}", "").strip(), add_special_tokens=False)["input_ids"]
            if not ids:
                raise ConfigError(f"verbalizer {verbalizer!r} has no tokens in this tokenizer")
            if unk is not None and unk in ids:
                raise ConfigError(
                    f"verbalizer {verbalizer!r} is not in the tokenizer's vocabulary (maps to the unknown token)"
                )
        self.verbalizer_layouts = [
            TemplateLayout(v, self.tokenizer, config.max_sentence_tokens) for v in self.verbalizers
        ]
        slots = [layout.has_prompt_slot for layout in self.verbalizer_layouts]
        if config.soft_prompt_position == "template" and any(slots) and not all(slots):
            raise ConfigError("with soft_prompt_position=template, either every verbalizer has '{prompt}' or none")
        self._verbalizers_use_prompt_discrete = any(slots)
        self._verbalizers_use_prompt_soft = config.soft_prompt_position == "prefix" or any(slots)
        self._verbalizer_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.head: torch.nn.Linear | None = None

    # ------------------------------------------------------------ the forward pass

    def _forward_rows(self, batch: SplicedBatch, inputs_embeds: torch.Tensor | None, extra: Any) -> torch.Tensor:
        if inputs_embeds is None:
            out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        else:
            out = self.model(inputs_embeds=inputs_embeds, attention_mask=batch.attention_mask)
        return mean_pool(out.last_hidden_state, batch.attention_mask)

    def _verbalizer_key(self, prompt_key: str, soft: bool) -> str:
        uses_prompt = self._verbalizers_use_prompt_soft if soft else self._verbalizers_use_prompt_discrete
        return prompt_key if uses_prompt else _STATIC

    def _embed(
        self,
        prompts: list[Any],
        soft: bool,
        pairs: list[tuple[int, int]],
        texts: Sequence[str],
        grad: bool,
        with_verbalizers: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Input embeddings ``[M, H]`` for ``pairs`` and verbalizer embeddings ``[P, C, H]``.

        Inputs and any verbalizer rows not in the cache run in the same forward batches.
        """
        used = sorted({n for _, n in pairs})
        position = {n: i for i, n in enumerate(used)}
        items = self._encode_items(self.input_layout, [texts[n] for n in used], soft)
        num_prompts = len(prompts)
        row_item = [position[n] for _, n in pairs]
        row_prompt = [p for p, _ in pairs]
        prompt_ids: list[list[int]] | None = None if soft else [self.input_layout.prompt_ids(p) for p in prompts]

        keys = [self._soft_key(p) if soft else p for p in prompts] if with_verbalizers else []
        verb_keys = [self._verbalizer_key(k, soft) for k in keys]
        to_embed: list[int] = []  # prompt indices whose verbalizers must be computed
        if with_verbalizers:
            seen: set[str] = set()
            for p, vkey in enumerate(verb_keys):
                if (grad or vkey not in self._verbalizer_cache) and vkey not in seen:
                    seen.add(vkey)
                    to_embed.append(p)
        # Verbalizer rows: one item per (verbalizer, prompt-dependence) and one row per prompt.
        verb_row_start = len(row_item)
        for layout in self.verbalizer_layouts:
            if not to_embed:
                break
            item_index = len(items)
            pre, post = layout.encode_texts([""])[0]
            if soft and self.config.soft_prompt_position == "prefix":
                pre, post = [], pre + post
            items.append((pre, post))
            for p in to_embed:
                row_item.append(item_index)
                if soft:
                    row_prompt.append(p)
                else:
                    assert prompt_ids is not None
                    row_prompt.append(len(prompt_ids))
                    prompt_ids.append(layout.prompt_ids(prompts[p]))
        rows = _Rows(items, torch.tensor(row_item, dtype=torch.long), torch.tensor(row_prompt, dtype=torch.long))
        soft_table = self._stack_soft(prompts) if soft else None
        embeddings = self._run_rows(rows, prompt_ids, soft_table, grad)
        inputs = embeddings[:verb_row_start]
        if not with_verbalizers:
            return inputs, None
        fresh: dict[str, torch.Tensor] = {}
        if to_embed:
            computed = embeddings[verb_row_start:].view(self.num_classes, len(to_embed), -1).transpose(0, 1)
            self.stats.verbalizer_calls += computed.shape[0] * computed.shape[1]
            fresh = {verb_keys[p]: computed[i] for i, p in enumerate(to_embed)}
        # read before caching: inserting the fresh rows may evict entries this call still needs
        verbs = torch.stack([fresh[k] if k in fresh else self._verbalizer_cache[k] for k in verb_keys])
        if not grad:
            for key in dict.fromkeys(verb_keys):
                if key in fresh:
                    self._verbalizer_cache[key] = fresh[key]
                self._verbalizer_cache.move_to_end(key)  # least recently used goes first
            while len(self._verbalizer_cache) > max(1024, num_prompts):
                self._verbalizer_cache.popitem(last=False)
        return inputs, verbs

    def _compute(
        self, prompts: list[Any], soft: bool, pairs: list[tuple[int, int]], texts: Sequence[str], grad: bool
    ) -> torch.Tensor:
        if soft and self._verbalizers_use_prompt_soft is False:
            # Verbalizers do not see soft prompts in template mode without a slot: embed them bare.
            with_verbalizers = False
        else:
            with_verbalizers = self.head is None
        inputs, verbs = self._embed(prompts, soft, pairs, texts, grad, with_verbalizers)
        if self.head is not None:
            return self.head(inputs.to(self.head.weight.dtype))
        if verbs is None:
            _, verbs = self._embed([""], False, [(0, 0)], texts[:1], grad, True)
            verbs = cast(torch.Tensor, verbs).expand(len(prompts), -1, -1)  # with_verbalizers: never None
        row_prompt = torch.tensor([p for p, _ in pairs], device=inputs.device)
        cos = torch.einsum("mh,mch->mc", inputs, verbs[row_prompt])
        return self.config.scale * cos

    def cache_state(self) -> dict[str, Any]:
        state = super().cache_state()
        keys = list(self._verbalizer_cache)
        values = torch.stack([self._verbalizer_cache[k] for k in keys]).cpu() if keys else None
        state["verbalizers"] = {"keys": keys, "values": values}
        return state

    def load_cache_state(self, state: dict[str, Any]) -> None:
        super().load_cache_state(state)
        keys, values = state["verbalizers"]["keys"], state["verbalizers"]["values"]
        self._verbalizer_cache = OrderedDict()
        if values is not None:
            values = values.to(self.device)
            for i, key in enumerate(keys):
                self._verbalizer_cache[key] = values[i]

    # ------------------------------------------------------------ tuned variant

    def fit_head(self, texts: Sequence[str], labels: Sequence[int], prompt: str, max_iter: int = 200) -> None:
        """Fit a logistic-regression head on embeddings of ``texts`` under ``prompt``, then freeze it.

        After this call the class logits are ``W E(template(x, prompt')) + b`` for any prompt.
        """
        if len(texts) == 0:
            raise DataError("cannot fit the encoder-tuned head on an empty train split")
        present = set(labels)
        if len(present) < 2:
            raise DataError("the encoder-tuned head needs at least two classes in the train split")
        pairs = [(0, n) for n in range(len(texts))]
        features, _ = self._embed([prompt], False, pairs, list(texts), False, with_verbalizers=False)
        features = features.float().clone()
        targets = torch.tensor(list(labels), device=features.device)
        head = torch.nn.Linear(features.shape[1], self.num_classes).to(features.device)
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
        optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(head(features), targets)
            loss = loss + self.config.head_l2 * head.weight.pow(2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(closure)
        head.requires_grad_(False)
        self.head = head
        self.clear_cache()


class TunedEncoderTaskModel(EncoderTaskModel):
    """The ``encoder-tuned`` kind: a logistic-regression head fitted once on the train split's
    embeddings under the manual prompt, then frozen (its scores are the head's logits)."""

    peft_task_type = None  # the fitted head is not part of a PEFT adapter

    @classmethod
    def from_config(
        cls, config: Any, template: str, verbalizers: Sequence[str], **kwargs: Any
    ) -> TunedEncoderTaskModel:
        train_texts, train_labels = kwargs.get("train_texts"), kwargs.get("train_labels")
        if train_texts is None or train_labels is None:
            raise DataError("task_model.kind=encoder-tuned needs the train split to fit its head")
        model = cls(config, template, verbalizers, model=kwargs.get("model"), tokenizer=kwargs.get("tokenizer"))
        model.fit_head(train_texts, train_labels, kwargs.get("manual_prompt", ""))
        return model
