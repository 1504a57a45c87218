"""Language-model task models: class logits = log-probs of verbalizer tokens.

* Masked LM (BERT, RoBERTa ...): the template holds ``{mask}``; the class score is the
  log-probability of the verbalizer token at the mask (RLPrompt's setup).
* Causal LM (GPT-2, Llama ...): :mod:`rlprompt.task_models.causal`, on the shared base here.

The LM head runs only at the positions read (mask or last token), not over the whole
sequence: the model's head modules are applied to gathered hidden states. A one-off probe at
load time checks this shortcut against the full forward and falls back to it otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.task_models.config import HFTaskModelConfig
from rlprompt.task_models.hf import HFTaskModel, _Rows
from rlprompt.task_models.sequences import SplicedBatch


class _LMTaskModel(HFTaskModel):
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
        self.verbalizer_ids: list[list[int]] = []
        for verbalizer in self.verbalizers:
            ids = list(self.tokenizer(verbalizer, add_special_tokens=False)["input_ids"])
            if not ids:
                raise ConfigError(f"verbalizer {verbalizer!r} has no tokens in this tokenizer")
            unk = self.tokenizer.unk_token_id
            if unk is not None and unk in ids:
                raise ConfigError(f"verbalizer {verbalizer!r} is not in the tokenizer's vocabulary (maps to unknown)")
            self.verbalizer_ids.append(ids)
        self.multi_token = any(len(ids) > 1 for ids in self.verbalizer_ids)
        if self.multi_token:
            long = [v for v, ids in zip(self.verbalizers, self.verbalizer_ids, strict=True) if len(ids) > 1]
            if config.multi_token == "error" or self.model_kind == "masked_lm":
                where = (
                    "masked LMs score one token per mask"
                    if self.model_kind == "masked_lm"
                    else "task_model.multi_token=error"
                )
                raise ConfigError(
                    f"verbalizer(s) {long} span several tokens, which is not supported ({where}); use single-token words"
                )
        firsts = [ids[0] for ids in self.verbalizer_ids]
        if not self.multi_token and len(set(firsts)) != len(firsts):
            raise ConfigError(f"verbalizers {self.verbalizers} map to the same token")
        self._verbalizer_tensor = torch.tensor(firsts, device=self.device)
        self._use_head_shortcut = self._probe_head_shortcut()

    # ------------------------------------------------------------ other label words

    def verbalizer_length(self, verbalizer: str) -> int:
        """Tokens ``verbalizer`` spans in this tokenizer (0: none, or an unknown token)."""
        ids = list(self.tokenizer(verbalizer, add_special_tokens=False)["input_ids"])
        unk = self.tokenizer.unk_token_id
        return 0 if unk is not None and unk in ids else len(ids)

    def with_verbalizers(self, verbalizers: Sequence[str]) -> _LMTaskModel:
        """This model (weights, tokenizer, template, config) reading ``verbalizers`` as the
        classes' words: what label-word search scores with. Counters are the caller's to share."""
        return type(self)(self.config, self.template, verbalizers, model=self._main_model, tokenizer=self.tokenizer)

    @property
    def _head_modules(self) -> list[torch.nn.Module]:
        """The LM head of the model in use (a replica's own, in data-parallel batches)."""
        model = self.model
        return [
            module
            for module in model.children()
            if module is not model.base_model and not isinstance(module, torch.nn.modules.loss._Loss)
        ]

    def _probe_head_shortcut(self) -> bool:
        ids = self.tokenizer("a short probe sentence", add_special_tokens=True)["input_ids"][:8]
        input_ids = torch.tensor([ids], device=self.device)
        with torch.inference_mode():
            full = self.model(input_ids=input_ids).logits.float()
            try:
                short = self._apply_head(self.model.base_model(input_ids=input_ids).last_hidden_state).float()
            except (TypeError, RuntimeError, AttributeError):
                return False
        return short.shape == full.shape and torch.allclose(short, full, atol=1e-3, rtol=1e-3)

    def _apply_head(self, hidden: torch.Tensor) -> torch.Tensor:
        for module in self._head_modules:
            hidden = module(hidden)
        return hidden

    def _vocab_log_probs(
        self, batch: SplicedBatch, embeds: torch.Tensor | None, positions: torch.Tensor
    ) -> torch.Tensor:
        """``[B, K, V]`` log-probs over the vocabulary at ``positions`` ``[B, K]``."""
        kwargs: dict[str, Any] = {"attention_mask": batch.attention_mask}
        if embeds is None:
            kwargs["input_ids"] = batch.input_ids
        else:
            kwargs["inputs_embeds"] = embeds
        rows = torch.arange(positions.shape[0], device=positions.device)[:, None]
        if self._use_head_shortcut:
            hidden = self.model.base_model(**kwargs).last_hidden_state
            logits = self._apply_head(hidden[rows, positions])
        else:
            logits = self.model(**kwargs).logits[rows, positions]
        return torch.log_softmax(logits.float(), dim=-1)


class MaskedLMTaskModel(_LMTaskModel):
    """Verbalizer log-probs at the ``{mask}`` position."""

    model_kind = "masked_lm"
    hf_auto_class = "AutoModelForMaskedLM"
    peft_task_type = "FEATURE_EXTRACTION"

    def _forward_rows(self, batch: SplicedBatch, inputs_embeds: torch.Tensor | None, extra: Any) -> torch.Tensor:
        is_mask = (batch.input_ids == self.tokenizer.mask_token_id) & ~batch.slot_mask & batch.attention_mask.bool()
        counts = is_mask.sum(1)
        if not bool((counts == 1).all()):
            raise RLPromptError(
                f"each input needs exactly one mask token, found {sorted(set(counts.tolist()))} "
                "(does a sentence or prompt contain the mask token text?)"
            )
        positions = is_mask.float().argmax(1, keepdim=True)
        log_probs = self._vocab_log_probs(batch, inputs_embeds, positions)[:, 0]
        return log_probs[:, self._verbalizer_tensor.to(log_probs.device)]

    def _compute(
        self, prompts: list[Any], soft: bool, pairs: list[tuple[int, int]], texts: Sequence[str], grad: bool
    ) -> torch.Tensor:
        return _run_pairs(self, prompts, soft, pairs, texts, grad)


def _run_pairs(
    model: HFTaskModel, prompts: list[Any], soft: bool, pairs: list[tuple[int, int]], texts: Sequence[str], grad: bool
) -> torch.Tensor:
    used = sorted({n for _, n in pairs})
    position = {n: i for i, n in enumerate(used)}
    items = model._encode_items(model.input_layout, [texts[n] for n in used], soft)
    rows = _Rows(items, torch.tensor([position[n] for _, n in pairs]), torch.tensor([p for p, _ in pairs]))
    prompt_ids = None if soft else [model.input_layout.prompt_ids(p) for p in prompts]
    return model._run_rows(rows, prompt_ids, model._stack_soft(prompts) if soft else None, grad)
