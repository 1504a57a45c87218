"""Causal-LM task model: class logits = next-token log-probs of the verbalizers after the template.

Verbalizers of several tokens are scored by the sum of their token log-probs (teacher
forced), one row per class. Rows that share a prefix are not recomputed: when the template
puts the prompt after the input (``{sentence} {prompt}``, RLPrompt's layout) each example's
key/value cache is computed once and reused for every prompt, across calls; when the prompt
comes first (``{prompt} ...``, and soft prompts in PEFT's prefix layout) the prompt's cache
is shared by the examples. Only the continuation (prompt and what follows, or the input) runs
per row, on top of its prefix (:mod:`rlprompt.task_models.kv`). Prefixes are cached when at
least two rows of a call read them, least recently used evicted past ``prefix_cache_mb``.

The cached path gives the full forward's scores (checked on a probe at load time, and
falling back to the full forward where a model's cache does not support it); gradients
(``score_soft_with_grad``) always take the full forward.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import torch

from rlprompt.errors import RLPromptError
from rlprompt.task_models.base import prompt_key
from rlprompt.task_models.config import HFTaskModelConfig
from rlprompt.task_models.hf import _Rows
from rlprompt.task_models.kv import Prefix, PrefixCache, compute_prefix, continue_from
from rlprompt.task_models.lm import _LMTaskModel, _run_pairs
from rlprompt.task_models.sequences import SplicedBatch, pad_lists, splice


class CausalLMTaskModel(_LMTaskModel):
    """Next-token verbalizer log-probs after the template (see module docstring)."""

    model_kind = "causal_lm"
    hf_auto_class = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"

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
        self.prefix_cache = PrefixCache(int(config.prefix_cache_mb * 2**20))
        self.prefix_caching = self._use_head_shortcut and config.prefix_cache_mb > 0 and self._probe_prefix_cache()

    # ------------------------------------------------------------ the full forward

    def _forward_rows(self, batch: SplicedBatch, inputs_embeds: torch.Tensor | None, extra: Any) -> torch.Tensor:
        if extra is None:  # single-token verbalizers: read the last position
            positions = (batch.lengths - 1).unsqueeze(1)
            return self._vocab_log_probs(batch, inputs_embeds, positions)[:, 0][:, self._verbalizer_tensor]
        # Multi-token: the row ends with the class's verbalizer tokens (teacher forcing).
        row_targets = self._targets()[extra]  # [B, width]
        n_tokens = (row_targets >= 0).sum(1)
        offsets = torch.arange(row_targets.shape[1], device=row_targets.device)[None, :]
        positions = (batch.lengths - n_tokens - 1)[:, None] + offsets
        positions = torch.minimum(positions, (batch.lengths - 1)[:, None])
        return self._summed_target_log_probs(self._vocab_log_probs(batch, inputs_embeds, positions), row_targets)

    def _targets(self) -> torch.Tensor:
        """``[C, width]`` verbalizer ids per class, padded with -1."""
        width = max(len(ids) for ids in self.verbalizer_ids)
        targets = torch.full((len(self.verbalizer_ids), width), -1, dtype=torch.long, device=self.device)
        for c, ids in enumerate(self.verbalizer_ids):
            targets[c, : len(ids)] = torch.tensor(ids, device=self.device)
        return targets

    @staticmethod
    def _summed_target_log_probs(log_probs: torch.Tensor, row_targets: torch.Tensor) -> torch.Tensor:
        picked = log_probs.gather(-1, row_targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        return (picked * (row_targets >= 0)).sum(1, keepdim=True)

    def _compute_full(
        self, prompts: list[Any], soft: bool, pairs: list[tuple[int, int]], texts: Sequence[str], grad: bool
    ) -> torch.Tensor:
        if not self.multi_token:
            return _run_pairs(self, prompts, soft, pairs, texts, grad)
        used = sorted({n for _, n in pairs})
        position = {n: i for i, n in enumerate(used)}
        base_items = self._encode_items(self.input_layout, [texts[n] for n in used], soft)
        items = [(pre, post + ids) for ids in self.verbalizer_ids for pre, post in base_items]
        classes = self.num_classes
        row_item = [c * len(base_items) + position[n] for _, n in pairs for c in range(classes)]
        row_prompt = [p for p, _ in pairs for _ in range(classes)]
        row_class = torch.tensor([c for _ in pairs for c in range(classes)], device=self.device)
        rows = _Rows(items, torch.tensor(row_item), torch.tensor(row_prompt))
        prompt_ids = None if soft else [self.input_layout.prompt_ids(p) for p in prompts]
        out = self._run_rows(rows, prompt_ids, self._stack_soft(prompts) if soft else None, grad, row_class)
        return out.view(len(pairs), classes)

    # ------------------------------------------------------------ the prefix-cached path

    def _compute(
        self, prompts: list[Any], soft: bool, pairs: list[tuple[int, int]], texts: Sequence[str], grad: bool
    ) -> torch.Tensor:
        if grad or not self.prefix_caching:
            return self._compute_full(prompts, soft, pairs, texts, grad)
        return self._compute_cached(prompts, soft, pairs, texts)

    def _split_rows(
        self, prompts: list[Any], soft: bool, pairs: list[tuple[int, int]], texts: Sequence[str]
    ) -> list[tuple[Hashable, list[int], Any, list[int], Any]]:
        """Per pair: (prefix key, prefix ids, prefix soft prompt or None, continuation ids before
        the prompt slot's end, continuation soft prompt or None), with the split that lets rows share."""
        layout = self.input_layout
        used = sorted({n for _, n in pairs})
        position = {n: i for i, n in enumerate(used)}
        items = self._encode_items(layout, [texts[n] for n in used], soft)
        prompt_first = all(pre == items[0][0] for pre, _ in items)
        out = []
        for p, n in pairs:
            pre, post = items[position[n]]
            if prompt_first:  # the prompt (and what precedes it) is shared by the examples
                ids = list(pre) + ([] if soft else list(layout.prompt_ids(prompts[p])))
                out.append((("prompt", tuple(pre), prompt_key(prompts[p])), ids, prompts[p] if soft else None, list(post), None))
            else:  # the example is shared by the prompts; the prompt starts the continuation
                out.append((("text", tuple(pre)), list(pre), None, list(post), p))
        return out

    def _compute_cached(
        self, prompts: list[Any], soft: bool, pairs: list[tuple[int, int]], texts: Sequence[str]
    ) -> torch.Tensor:
        splits = self._split_rows(prompts, soft, pairs, texts)
        classes: list[int | None] = list(range(self.num_classes)) if self.multi_token else [None]
        rows = [(i, c) for i in range(len(pairs)) for c in classes]
        uses = Counter(splits[i][0] for i, _ in rows)

        def shared(i: int) -> bool:  # a prefix read once gains nothing from a cache; an empty one has none
            return uses[splits[i][0]] >= 2 and (bool(splits[i][1]) or splits[i][2] is not None)

        cached_rows = [r for r in rows if shared(r[0])]
        single = [r for r in rows if not shared(r[0])]
        out = torch.empty(len(pairs), self.num_classes, device=self.device)
        if single:
            pair_ids = sorted({i for i, _ in single})
            full = self._compute_full(prompts, soft, [pairs[i] for i in pair_ids], texts, grad=False)
            out[torch.tensor(pair_ids, device=self.device)] = full.to(out.device)
        if cached_rows:
            keys = {splits[i][0] for i, _ in cached_rows}
            with torch.inference_mode():
                for key in sorted(keys, key=repr):
                    if key not in self.prefix_cache:
                        self.prefix_cache.misses += 1
                        i = next(i for i, _ in cached_rows if splits[i][0] == key)
                        _, ids, prefix_soft, _, _ = splits[i]
                        soft_rows = prefix_soft.float() if prefix_soft is not None else None
                        entry = compute_prefix(self.model.base_model, self.model, ids, soft_rows, soft_at=len(key[1]))
                        self.prefix_cache.put(key, entry, keep=keys)
                        self.stats.forward_batches += 1
                    else:
                        self.prefix_cache.hits += 1
                prefixes = {key: self.prefix_cache.get(key) for key in keys}
                values = self._run_continuations(prompts, soft, splits, cached_rows, prefixes)
            for (i, c), value in zip(cached_rows, values, strict=True):
                if c is None:
                    out[i] = value
                else:
                    out[i, c] = value[0]
        return out

    def _run_continuations(
        self,
        prompts: list[Any],
        soft: bool,
        splits: list[tuple[Hashable, list[int], Any, list[int], Any]],
        rows: list[tuple[int, int | None]],
        prefixes: dict[Hashable, Prefix | None],
    ) -> list[torch.Tensor]:
        """Continuation forwards of ``rows`` (sorted by length, in chunks) on their prefixes:
        per row the verbalizer log-probs ``[C]`` or, for one class of multi-token verbalizers, ``[1]``."""
        device = self.device
        layout = self.input_layout
        empty: list[int] = []
        conts = []
        for i, c in rows:
            _, _, _, post, prompt_index = splits[i]
            verb = self.verbalizer_ids[c] if c is not None else empty
            if prompt_index is None:
                conts.append((empty, empty, post + verb))
            else:
                slot = empty if soft else list(layout.prompt_ids(prompts[prompt_index]))
                conts.append((empty, slot, post + verb))
        soft_width = prompts[0].shape[0] if soft else 0
        lengths = []
        for (i, _), (_, slot, rest) in zip(rows, conts, strict=True):
            prompt_len = soft_width if (soft and splits[i][4] is not None) else len(slot)
            prefix = prefixes[splits[i][0]]
            assert prefix is not None
            lengths.append(prefix.length + prompt_len + len(rest))
        if self.max_positions is not None and max(lengths) > self.max_positions:
            raise RLPromptError(f"an input is {max(lengths)} tokens, over the model's {self.max_positions} positions; "
                                "lower task_model.max_sentence_tokens or shorten the prompt")  # fmt: skip
        order = sorted(range(len(rows)), key=lambda r: lengths[r])
        results: list[torch.Tensor | None] = [None] * len(rows)
        targets = self._targets()
        for start in range(0, len(order), self.config.batch_size):
            chunk = order[start : start + self.config.batch_size]
            slot_soft = soft and splits[rows[chunk[0]][0]][4] is not None
            slots = [conts[r][1] for r in chunk]
            if slot_soft:
                slots_t = torch.full((len(chunk), soft_width), self.pad_id, dtype=torch.long, device=device)
                slot_len = torch.full((len(chunk),), soft_width, dtype=torch.long, device=device)
            else:
                slots_t, slot_len = pad_lists(slots, self.pad_id, device)
            rest_t, rest_len = pad_lists([conts[r][2] for r in chunk], self.pad_id, device)
            none_t, none_len = pad_lists([[] for _ in chunk], self.pad_id, device)
            batch = splice(none_t, none_len, slots_t, slot_len, rest_t, rest_len, self.pad_id)
            soft_rows = None
            if slot_soft:
                soft_rows = torch.stack([prompts[splits[rows[r][0]][4]].float() for r in chunk]).to(device)
            hidden = continue_from(self.model.base_model, self.model, [prefixes[splits[rows[r][0]][0]] for r in chunk],
                                   batch.input_ids, batch.lengths, soft_rows, batch.slot_mask if slot_soft else None)  # fmt: skip
            self.stats.forward_batches += 1
            index = torch.arange(len(chunk), device=device)[:, None]
            classes = [rows[r][1] for r in chunk]
            if classes[0] is None:  # one token per verbalizer: the state after the whole continuation
                last = self._apply_head(hidden[index[:, 0], batch.lengths]).float()
                values = torch.log_softmax(last, -1)[:, self._verbalizer_tensor]
            else:  # the class's verbalizer tokens end the continuation: the states before each of them
                row_targets = targets[torch.tensor(classes, device=device)]
                n_tokens = (row_targets >= 0).sum(1)
                positions = (batch.lengths - n_tokens)[:, None] + torch.arange(row_targets.shape[1], device=device)[None, :]
                positions = torch.minimum(positions, batch.lengths[:, None])
                log_probs = torch.log_softmax(self._apply_head(hidden[index, positions]).float(), -1)
                values = self._summed_target_log_probs(log_probs, row_targets)
            for r, value in zip(chunk, values, strict=True):
                results[r] = value
        return results  # type: ignore[return-value]

    def _probe_prefix_cache(self) -> bool:
        """Whether scores through cached prefixes equal the full forward's on a probe (else the
        model's cache layout is one :func:`continue_from` does not handle: use the full forward)."""
        texts = ["a short probe sentence", "another probe"]
        probe = ["it was", "so"]
        try:
            with torch.inference_mode():
                pairs = [(p, n) for p in range(2) for n in range(2)]
                cached = self._compute_cached(probe, False, pairs, texts)
                full = self._compute_full(probe, False, pairs, texts, grad=False)
        except (RuntimeError, TypeError, ValueError, AttributeError, IndexError):
            return False
        finally:
            self.prefix_cache.clear()
            self.stats.forward_batches = 0
        return bool(torch.allclose(cached.float().cpu(), full.float().cpu(), atol=1e-3, rtol=1e-3))

    def clear_cache(self) -> None:
        super().clear_cache()
        self.prefix_cache.clear()
