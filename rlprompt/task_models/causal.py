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
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import torch

from rlprompt.errors import RLPromptError
from rlprompt.task_models.base import prompt_key
from rlprompt.task_models.config import HFTaskModelConfig
from rlprompt.task_models.hf import _Rows
from rlprompt.task_models.kv import Prefix, PrefixCache, compute_prefix, continue_from
from rlprompt.task_models.lm import _LMTaskModel, _run_pairs
from rlprompt.task_models.sequences import SplicedBatch, TemplateLayout, pad_lists, splice


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
        self.prefix_caching = (
            self._use_head_shortcut
            and config.prefix_cache_mb > 0
            and len(self.replicas) == 1
            and self._probe_prefix_cache()
        )

    # ------------------------------------------------------------ the full forward

    def _forward_rows(self, batch: SplicedBatch, inputs_embeds: torch.Tensor | None, extra: Any) -> torch.Tensor:
        if extra is None:  # single-token verbalizers: read the last position
            positions = (batch.lengths - 1).unsqueeze(1)
            return self._vocab_log_probs(batch, inputs_embeds, positions)[:, 0][
                :, self._verbalizer_tensor.to(positions.device)
            ]
        # The row ends with its target tokens ``extra`` [B, width] (-1 padded): teacher forcing.
        row_targets = extra
        n_tokens = (row_targets >= 0).sum(1)
        offsets = torch.arange(row_targets.shape[1], device=row_targets.device)[None, :]
        positions = (batch.lengths - n_tokens - 1)[:, None] + offsets
        positions = torch.minimum(positions, (batch.lengths - 1)[:, None])
        return self._summed_target_log_probs(self._vocab_log_probs(batch, inputs_embeds, positions), row_targets)

    def _padded_targets(self, targets: Sequence[Sequence[int]]) -> torch.Tensor:
        """``[R, width]`` target ids per row, padded with -1."""
        width = max(len(ids) for ids in targets)
        out = torch.full((len(targets), width), -1, dtype=torch.long, device=self.device)
        for r, ids in enumerate(targets):
            out[r, : len(ids)] = torch.tensor(list(ids), dtype=torch.long, device=self.device)
        return out

    @staticmethod
    def _summed_target_log_probs(log_probs: torch.Tensor, row_targets: torch.Tensor) -> torch.Tensor:
        picked = log_probs.gather(-1, row_targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        return (picked * (row_targets >= 0)).sum(1, keepdim=True)

    def _class_rows(self, pairs: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], list[list[int]] | None]:
        """The rows that score ``pairs``: one per pair (single-token verbalizers, read together),
        or one per (pair, class) ending with that class's verbalizer tokens."""
        if not self.multi_token:
            return pairs, None
        rows = [pair for pair in pairs for _ in self.verbalizer_ids]
        return rows, [list(ids) for _ in pairs for ids in self.verbalizer_ids]

    def _compute(
        self, prompts: list[Any], soft: bool, pairs: list[tuple[int, int]], texts: Sequence[str], grad: bool
    ) -> torch.Tensor:
        rows, targets = self._class_rows(pairs)
        if grad or not self.prefix_caching:
            out = self._full_rows(prompts, soft, rows, texts, targets, grad)
        else:
            out = self._cached_rows(prompts, soft, rows, texts, targets)
        return out.view(len(pairs), self.num_classes)

    # ------------------------------------------------------------ the full forward

    def _full_rows(
        self,
        prompts: list[Any],
        soft: bool,
        pairs: list[tuple[int, int]],
        texts: Sequence[Any],
        targets: list[list[int]] | None,
        grad: bool,
    ) -> torch.Tensor:
        """Full forwards of (prompt, input) ``pairs``: the verbalizer log-probs ``[R, C]`` after
        each (``targets`` None), or each row's summed teacher-forced log-prob of ``targets[r]``
        placed after the template ``[R, 1]``."""
        if targets is None:
            return _run_pairs(self, prompts, soft, pairs, texts, grad)
        used = sorted({n for _, n in pairs})
        position = {n: i for i, n in enumerate(used)}
        base_items = self._encode_items(self.input_layout, [texts[n] for n in used], soft)
        items: list[tuple[list[int], list[int]]] = []
        item_of: dict[tuple[int, tuple[int, ...]], int] = {}
        row_item = []
        for (_, n), ids in zip(pairs, targets, strict=True):
            key = (n, tuple(ids))
            if key not in item_of:
                item_of[key] = len(items)
                pre, post = base_items[position[n]]
                items.append((pre, post + list(ids)))
            row_item.append(item_of[key])
        rows = _Rows(items, torch.tensor(row_item), torch.tensor([p for p, _ in pairs]))
        prompt_ids = None if soft else [self.input_layout.prompt_ids(p) for p in prompts]
        return self._run_rows(
            rows, prompt_ids, self._stack_soft(prompts) if soft else None, grad, self._padded_targets(targets)
        )

    # ------------------------------------------------------------ the prefix-cached path

    def _split_rows(
        self, prompts: list[Any], soft: bool, pairs: list[tuple[int, int]], texts: Sequence[Any]
    ) -> list[tuple[Hashable, list[int], Any, list[int], Any]]:
        """Per pair: (prefix key, prefix ids, prefix soft prompt or None, continuation ids before
        the prompt slot's end, continuation soft prompt or None), with the split that lets rows share.
        A key names exactly what the prefix holds (its ids, and a soft prompt's values and place),
        so a cache shared by task models of different templates never confuses two prefixes."""
        layout = self.input_layout
        used = sorted({n for _, n in pairs})
        position = {n: i for i, n in enumerate(used)}
        items = self._encode_items(layout, [texts[n] for n in used], soft)
        prompt_first = all(pre == items[0][0] for pre, _ in items)
        out: list[tuple[Hashable, list[int], Any, list[int], Any]] = []
        for p, n in pairs:
            pre, post = items[position[n]]
            if prompt_first:  # the prompt (and what precedes it) is shared by the examples
                if soft:
                    key: Hashable = ("soft-prompt", tuple(pre), prompt_key(prompts[p]), len(pre))
                    out.append((key, list(pre), prompts[p], list(post), None))
                else:
                    ids = list(pre) + list(layout.prompt_ids(prompts[p]))
                    out.append((("ids", tuple(ids)), ids, None, list(post), None))
            else:  # the example is shared by the prompts; the prompt starts the continuation
                out.append((("ids", tuple(pre)), list(pre), None, list(post), p))
        return out

    def _continuation_length(self, prompts: list[Any], soft: bool, split: tuple[Any, ...]) -> int:
        """Tokens a row runs on top of its prefix (its targets excluded)."""
        _, _, _, post, prompt_index = split
        if prompt_index is None:
            return len(post)
        slot = prompts[0].shape[0] if soft else len(self.input_layout.prompt_ids(prompts[prompt_index]))
        return slot + len(post)

    def _cacheable(self, prompts: list[Any], soft: bool, split: tuple[Any, ...], tail: int) -> bool:
        """A row can continue from a cached prefix when the prefix and the continuation are both non-empty."""
        return (bool(split[1]) or split[2] is not None) and self._continuation_length(prompts, soft, split) + tail > 0

    def _cached_rows(
        self,
        prompts: list[Any],
        soft: bool,
        pairs: list[tuple[int, int]],
        texts: Sequence[Any],
        targets: list[list[int]] | None,
    ) -> torch.Tensor:
        """As :meth:`_full_rows` (same scores), computing each shared prefix once: rows whose
        prefix at least one other row reads continue from its cached keys and values."""
        splits = self._split_rows(prompts, soft, pairs, texts)
        uses = Counter(split[0] for split in splits)

        def shared(i: int) -> bool:  # a prefix read once gains nothing from a cache; an empty one has none
            tail = 0 if targets is None else len(targets[i])
            return uses[splits[i][0]] >= 2 and self._cacheable(prompts, soft, splits[i], tail)

        cached_rows = [i for i in range(len(pairs)) if shared(i)]
        single = [i for i in range(len(pairs)) if not shared(i)]
        out = torch.empty(len(pairs), 1 if targets is not None else self.num_classes, device=self.device)
        if single:
            full = self._full_rows(
                prompts,
                soft,
                [pairs[i] for i in single],
                texts,
                None if targets is None else [targets[i] for i in single],
                grad=False,
            )
            out[torch.tensor(single, device=self.device)] = full.to(out.device)
        if cached_rows:
            with torch.inference_mode():
                values = self._run_continuations(prompts, soft, splits, cached_rows, targets)
            for i, value in zip(cached_rows, values, strict=True):
                out[i] = value
        return out

    def _prefixes(
        self, splits: list[tuple[Hashable, list[int], Any, list[int], Any]], rows: list[int]
    ) -> dict[Hashable, Prefix]:
        """The cached prefix of every row in ``rows``, computing (one forward each) those not
        cached; the cache then keeps within its bound except for what these rows read."""
        keys = {splits[i][0] for i in rows}
        for key in sorted(keys, key=repr):
            if key not in self.prefix_cache:
                self.prefix_cache.misses += 1
                i = next(i for i in rows if splits[i][0] == key)
                _, ids, prefix_soft, _, _ = splits[i]
                soft_rows = prefix_soft.float() if prefix_soft is not None else None
                entry = compute_prefix(self.model.base_model, self.model, ids, soft_rows, soft_at=len(ids))
                self.prefix_cache.put(key, entry, keep=keys)
                self.stats.forward_batches += 1
            else:
                self.prefix_cache.hits += 1
        found = {key: self.prefix_cache.get(key) for key in keys}
        return found  # type: ignore[return-value]

    def _continuation_batches(
        self,
        prompts: list[Any],
        soft: bool,
        splits: list[tuple[Hashable, list[int], Any, list[int], Any]],
        rows: list[int],
        tails: list[list[int]],
        batch_size: int | None = None,
        reserve: int = 0,
    ) -> Iterator[tuple[list[int], SplicedBatch, list[Prefix], torch.Tensor | None]]:
        """Batches of ``rows`` (sorted by length, ``batch_size`` each, the config's by default):
        per batch the row positions, the continuation (prompt slot, what follows it, ``tails[r]``),
        each row's prefix (computed or taken from the cache batch by batch, so the cache keeps to
        its bound) and the soft rows of the slot (or None). ``reserve``: positions kept free
        after each row (tokens to be generated); rows over the model's positions are one error."""
        device = self.device
        layout = self.input_layout
        conts = []
        for r, i in enumerate(rows):
            _, _, _, post, prompt_index = splits[i]
            slot = [] if (prompt_index is None or soft) else list(layout.prompt_ids(prompts[prompt_index]))
            conts.append((slot, post + list(tails[r])))
        soft_width = prompts[0].shape[0] if soft else 0
        lengths = []
        for i, (slot, rest) in zip(rows, conts, strict=True):
            prompt_len = soft_width if (soft and splits[i][4] is not None) else len(slot)
            prefix_len = len(splits[i][1]) + (soft_width if splits[i][2] is not None else 0)
            lengths.append(prefix_len + prompt_len + len(rest))
        if self.max_positions is not None and max(lengths) + reserve > self.max_positions:
            grow = f" and may grow by {reserve}" if reserve else ""
            raise RLPromptError(
                f"an input is {max(lengths)} tokens{grow}, over the model's {self.max_positions} "
                "positions; lower task_model.max_sentence_tokens or shorten the prompt"
            )
        order = sorted(range(len(rows)), key=lambda r: (lengths[r], repr(splits[rows[r]][0])))
        batch_size = batch_size or self.config.batch_size
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            slot_soft = soft and splits[rows[chunk[0]]][4] is not None
            if slot_soft:
                slots_t = torch.full((len(chunk), soft_width), self.pad_id, dtype=torch.long, device=device)
                slot_len = torch.full((len(chunk),), soft_width, dtype=torch.long, device=device)
            else:
                slots_t, slot_len = pad_lists([conts[r][0] for r in chunk], self.pad_id, device)
            rest_t, rest_len = pad_lists([conts[r][1] for r in chunk], self.pad_id, device)
            none_t, none_len = pad_lists([[] for _ in chunk], self.pad_id, device)
            batch = splice(none_t, none_len, slots_t, slot_len, rest_t, rest_len, self.pad_id)
            soft_rows = None
            if slot_soft:
                soft_rows = torch.stack([prompts[splits[rows[r]][4]].float() for r in chunk]).to(device)
            prefixes = self._prefixes(splits, [rows[r] for r in chunk])
            yield chunk, batch, [prefixes[splits[rows[r]][0]] for r in chunk], soft_rows
        self.prefix_cache.shrink()

    def _run_continuations(
        self,
        prompts: list[Any],
        soft: bool,
        splits: list[tuple[Hashable, list[int], Any, list[int], Any]],
        rows: list[int],
        targets: list[list[int]] | None,
    ) -> list[torch.Tensor]:
        """Continuation forwards of ``rows`` on their prefixes: per row the verbalizer log-probs
        ``[C]`` (``targets`` None) or the summed log-prob of its targets ``[1]``."""
        device = self.device
        tails = [[] for _ in rows] if targets is None else [targets[i] for i in rows]
        results: list[torch.Tensor | None] = [None] * len(rows)
        for chunk, batch, chunk_prefixes, soft_rows in self._continuation_batches(prompts, soft, splits, rows, tails):
            hidden = continue_from(
                self.model.base_model,
                self.model,
                chunk_prefixes,
                batch.input_ids,
                batch.lengths,
                soft_rows,
                batch.slot_mask if soft_rows is not None else None,
            )
            self.stats.forward_batches += 1
            index = torch.arange(len(chunk), device=device)[:, None]
            if targets is None:  # one token per verbalizer: the state after the whole continuation
                last = self._apply_head(hidden[index[:, 0], batch.lengths]).float()
                values = torch.log_softmax(last, -1)[:, self._verbalizer_tensor]
            else:  # the row's targets end the continuation: the states before each of them
                row_targets = self._padded_targets([tails[r] for r in chunk])
                n_tokens = (row_targets >= 0).sum(1)
                positions = (batch.lengths - n_tokens)[:, None] + torch.arange(row_targets.shape[1], device=device)[
                    None, :
                ]
                positions = torch.minimum(positions, batch.lengths[:, None])
                log_probs = torch.log_softmax(self._apply_head(hidden[index, positions]).float(), -1)
                values = self._summed_target_log_probs(log_probs, row_targets)
            for r, value in zip(chunk, values, strict=True):
                results[r] = value
        return results

    def _probe_prefix_cache(self) -> bool:
        """Whether scores through cached prefixes equal the full forward's on a probe (else the
        model's cache layout is one :func:`continue_from` does not handle: use the full forward).
        The probe has its own template (both layouts) and checks verbalizer and target rows."""
        texts = ["a short probe sentence", "another probe"]
        probe = ["it was", "so"]
        pairs = [(p, n) for p in range(2) for n in range(2)]
        target = list(self.tokenizer(" yes it is", add_special_tokens=False)["input_ids"])
        checks: list[tuple[list[tuple[int, int]], list[list[int]] | None]] = [(pairs, [target] * len(pairs))]
        if self.num_classes:
            checks.append(self._class_rows(pairs))
        saved = self.input_layout
        agree = True
        try:
            with torch.inference_mode():
                for template in ("{sentence} {prompt}", "{prompt} {sentence}"):
                    self.input_layout = TemplateLayout(template, self.tokenizer, saved.max_sentence_tokens)
                    for rows, targets in checks:
                        cached = self._cached_rows(probe, False, rows, texts, targets)
                        full = self._full_rows(probe, False, rows, texts, targets, grad=False)
                        agree = agree and bool(
                            torch.allclose(cached.float().cpu(), full.float().cpu(), atol=1e-3, rtol=1e-3)
                        )
        except (RuntimeError, TypeError, ValueError, AttributeError, IndexError):
            return False
        finally:
            self.input_layout = saved
            self.prefix_cache.clear()
            self.stats.forward_batches = 0
        return agree

    def clear_cache(self) -> None:
        super().clear_cache()
        self.prefix_cache.clear()
