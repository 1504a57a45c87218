"""Causal LMs for generation tasks: reference likelihoods (teacher forced) and greedy generation.

:class:`CausalGenerationModel` is the causal-LM task model of ``task: generation``. It shares
the causal model's machinery (tokenize-once templates, prefix key/value caches, the score
cache, budgets and counters) and answers two questions:

* :meth:`~CausalGenerationModel.log_likelihood` - the mean per-token log-probability of each
  example's reference after (input, prompt), the best over its references: one forward per
  (prompt, example, reference) row and no generation. With the prompt after a long input
  (``"{context}\\n{question}\\n{prompt}"``) each input's keys and values are computed once and
  reused by every prompt, across calls; with the prompt first, the prompt's are shared.
* :meth:`~CausalGenerationModel.generate` - greedy outputs, batched: the input is prefilled
  (continuing from the cached prefix where there is one) and decoded token by token on the
  key/value cache until the end-of-text token, a stop string, or ``max_new_tokens``.

With ``generation.chat`` the template becomes a message of the tokenizer's chat template (the
prompt in the user message, or as the system message) and the reply is what is scored or
generated.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, cast

import torch

from rlprompt.errors import ConfigError, DataError, RLPromptError
from rlprompt.task_models.base import Prompt, prompt_key
from rlprompt.task_models.causal import CausalLMTaskModel
from rlprompt.task_models.config import HFTaskModelConfig
from rlprompt.task_models.kv import continue_from, output_cache, with_cache
from rlprompt.task_models.sequences import Example, TemplateLayout, input_key, stop_cut

REFERENCES_KEY = "\x00references"
"""Where a scored input carries its references (a JSON list), so that score-cache keys include them."""


def render_chat_template(tokenizer: Any, template: str, chat: str) -> str:
    """The template as the text of a chat: ``user`` puts it in the user message, ``system``
    puts ``{prompt}`` in the system message and the template in the user message; the
    assistant's turn is opened (the reply follows)."""
    if getattr(tokenizer, "chat_template", None) is None:
        name = getattr(tokenizer, "name_or_path", "the tokenizer")
        raise ConfigError(
            f"generation.chat={chat} needs a tokenizer with a chat template; {name} has none (set generation.chat=none)"
        )
    messages = [{"role": "user", "content": template}]
    if chat == "system":
        messages.insert(0, {"role": "system", "content": "{prompt}"})
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


class CausalGenerationModel(CausalLMTaskModel):
    """A causal LM scoring references and generating answers (see module docstring)."""

    supports_gradients = False
    peft_task_type = "CAUSAL_LM"

    def __init__(
        self,
        config: HFTaskModelConfig,
        template: str,
        generation: Any,
        *,
        model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        self.generation = generation
        super().__init__(config, template, [], model=model, tokenizer=tokenizer)
        chat = generation.chat
        text = template if chat == "none" else render_chat_template(self.tokenizer, template, chat)
        layout = TemplateLayout(text, self.tokenizer, config.max_sentence_tokens, add_special_tokens=chat == "none")
        layout.frame = (layout.frame[0], [])  # the reference and the generation follow the template directly
        self.template, self.input_layout = text, layout
        prefix = generation.reference_prefix
        self.reference_prefix = (" " if chat == "none" else "") if prefix is None else prefix
        self.eos_ids = self._eos_ids()
        self.stop_suffix: list[int] = []
        if generation.score_stop:
            if chat == "none":
                self.stop_suffix = self._ids_after_reference(generation.stop[0]) if generation.stop else []
            elif self.tokenizer.eos_token_id is not None:
                self.stop_suffix = [int(self.tokenizer.eos_token_id)]
        self._reference_cache: dict[str, list[int]] = {}
        self._generations: OrderedDict[tuple[str, str], tuple[str, int]] = OrderedDict()

    @classmethod
    def from_config(
        cls, config: Any, template: str, verbalizers: Sequence[str], **kwargs: Any
    ) -> CausalGenerationModel:
        return cls(config, template, kwargs["generation"], model=kwargs.get("model"), tokenizer=kwargs.get("tokenizer"))

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
        return {int(i) for i in ids if i is not None}

    def _ids_after_reference(self, text: str) -> list[int]:
        """Ids of ``text`` as it reads after a word (tokenized in context, then split off)."""
        word = list(self.tokenizer("x", add_special_tokens=False)["input_ids"])
        both = list(self.tokenizer("x" + text, add_special_tokens=False)["input_ids"])
        return both[len(word) :] if both[: len(word)] == word else both

    # ------------------------------------------------------------ likelihood

    def reference_ids(self, reference: str) -> list[int]:
        """Token ids scored for ``reference``: the reference prefix, the text and (with
        ``generation.score_stop``) the stop that ends it."""
        if reference not in self._reference_cache:
            ids = list(self.tokenizer(self.reference_prefix + reference, add_special_tokens=False)["input_ids"])
            if not ids:
                raise DataError(f"reference {reference!r} has no tokens")
            self._reference_cache[reference] = ids + self.stop_suffix
        return self._reference_cache[reference]

    def check_references(self, examples: Sequence[Example], references: Sequence[Sequence[str]], source: str) -> None:
        """One clear error for an input that cannot fit the model's context with its reference,
        or with ``max_new_tokens`` generated after it (the prompt not counted)."""
        if self.max_positions is None:
            return
        items = self.input_layout.encode_texts(list(examples))
        for row, ((pre, post), refs) in enumerate(zip(items, references, strict=True), start=1):
            if len(pre) + len(post) + self.generation.max_new_tokens > self.max_positions:
                raise DataError(
                    f"{source} example {row}: the input takes {len(pre) + len(post)} tokens and "
                    f"generation.max_new_tokens={self.generation.max_new_tokens} more, over the model's "
                    f"{self.max_positions} positions; lower task_model.max_sentence_tokens or "
                    "generation.max_new_tokens"
                )
            for ref in refs:
                total = len(pre) + len(post) + len(self.reference_ids(ref))
                if total > self.max_positions:
                    raise DataError(
                        f"{source} example {row}: input and reference take {total} tokens, over the "
                        f"model's {self.max_positions} positions (a reference of {len(ref)} characters); "
                        "shorten it or lower task_model.max_sentence_tokens"
                    )

    def log_likelihood(
        self,
        prompts: Sequence[Prompt] | torch.Tensor,
        examples_per_prompt: Sequence[Sequence[Example]],
        references_per_prompt: Sequence[Sequence[Sequence[str]]],
    ) -> list[torch.Tensor]:
        """Per prompt ``i``, ``[n_i]`` mean token log-probs of each example's best reference."""
        prompt_list, keys, soft = self._normalise_prompts(prompts)
        if not len(examples_per_prompt) == len(references_per_prompt) == len(prompt_list):
            raise RLPromptError("log_likelihood() needs one example list and one reference list per prompt")
        inputs = [
            [_with_references(example, refs) for example, refs in zip(examples, references, strict=True)]
            for examples, references in zip(examples_per_prompt, references_per_prompt, strict=True)
        ]
        from rlprompt.task_models.hf import _index_pairs

        pairs, items = _index_pairs(inputs)
        flat = self._score_pairs(
            prompt_list, keys, soft, pairs, items, compute=self._compute_likelihood, width=1, namespace="likelihood:"
        )
        return list(flat[:, 0].split([len(e) for e in examples_per_prompt]))

    def _compute_likelihood(
        self, prompts: list[Any], soft: bool, pairs: list[tuple[int, int]], items: Sequence[Any], grad: bool
    ) -> torch.Tensor:
        rows: list[tuple[int, int]] = []
        targets: list[list[int]] = []
        owner: list[int] = []
        for index, (p, n) in enumerate(pairs):
            for ref in json.loads(items[n][REFERENCES_KEY]):
                rows.append((p, n))
                targets.append(self.reference_ids(ref))
                owner.append(index)
        if self.prefix_caching and not grad:
            sums = self._cached_rows(prompts, soft, rows, items, targets)
        else:
            sums = self._full_rows(prompts, soft, rows, items, targets, grad)
        lengths = torch.tensor([len(t) for t in targets], dtype=sums.dtype, device=sums.device)
        means = sums[:, 0] / lengths
        best = torch.full((len(pairs),), -torch.inf, dtype=means.dtype, device=means.device)
        best = best.scatter_reduce(0, torch.tensor(owner, device=means.device), means, reduce="amax")
        return best[:, None]

    # ------------------------------------------------------------ generation

    def generate(
        self, prompts: Sequence[Prompt] | torch.Tensor, examples_per_prompt: Sequence[Sequence[Example]]
    ) -> list[list[str]]:
        """Greedy outputs of every prompt on its examples (stop strings cut off, whitespace
        stripped); repeated (prompt, example) pairs are generated once and remembered."""
        prompt_list, keys, soft = self._normalise_prompts(prompts)
        if len(examples_per_prompt) != len(prompt_list):
            raise RLPromptError(f"{len(prompt_list)} prompts but {len(examples_per_prompt)} example lists")
        from rlprompt.task_models.hf import _index_pairs

        pairs, items = _index_pairs(examples_per_prompt)
        item_keys = ["generate:" + input_key(item) for item in items]
        out: list[str | None] = [None] * len(pairs)
        todo: dict[tuple[str, str], list[int]] = {}
        for row, (p, n) in enumerate(pairs):
            key = (keys[p], item_keys[n])
            hit = self._generations.get(key)
            if hit is not None:
                self._generations.move_to_end(key)
                out[row] = hit[0]
            else:
                todo.setdefault(key, []).append(row)
        self.stats.requested += len(pairs)
        self.stats.cache_hits += len(pairs) - sum(len(rows) for rows in todo.values())
        if todo:
            firsts = [pairs[rows[0]] for rows in todo.values()]
            if self.budget is not None:
                self.budget.check("lm_calls", len(firsts))
            texts = self._generate_pairs(prompt_list, soft, firsts, items)
            self.charge_lm_calls(len(firsts))
            for (key, rows), text in zip(todo.items(), texts, strict=True):
                self._generations[key] = text
                for row in rows:
                    out[row] = text[0]
            while len(self._generations) > max(self.config.cache_size, 0):
                self._generations.popitem(last=False)
        sizes = [len(e) for e in examples_per_prompt]
        flat = [text for text in out if text is not None]
        result, start = [], 0
        for size in sizes:
            result.append(flat[start : start + size])
            start += size
        return result

    def _generate_pairs(
        self, prompts: list[Any], soft: bool, pairs: list[tuple[int, int]], items: Sequence[Any]
    ) -> list[tuple[str, int]]:
        """(text, generated tokens) of each (prompt, input) pair, in batches of similar length:
        rows with a prefix and a continuation continue from the prefix's cached keys and
        values, the others are prefilled whole (left padded)."""
        splits = self._split_rows(prompts, soft, pairs, items)
        rows = list(range(len(pairs)))
        cached = [r for r in rows if self.prefix_caching and self._cacheable(prompts, soft, splits[r], 0)]
        whole = [r for r in rows if r not in set(cached)]
        results: list[tuple[str, int] | None] = [None] * len(pairs)
        batch_size = self.generation.batch_size
        reserve = self.generation.max_new_tokens
        with torch.inference_mode():
            if cached:
                tails: list[list[int]] = [[] for _ in cached]
                for chunk, batch, chunk_prefixes, soft_rows in self._continuation_batches(
                    prompts, soft, splits, cached, tails, batch_size, reserve=reserve
                ):
                    states, cache, attention = continue_from(
                        self.model.base_model,
                        self.model,
                        chunk_prefixes,
                        batch.input_ids,
                        batch.lengths,
                        soft_rows,
                        batch.slot_mask if soft_rows is not None else None,
                        return_cache=True,
                    )
                    self.stats.forward_batches += 1
                    index = torch.arange(len(chunk), device=self.device)
                    first = self._apply_head(states[index, batch.lengths]).float()
                    prefix_lengths = torch.tensor([p.length for p in chunk_prefixes], device=self.device)
                    texts = self._decode(first, cache, attention, prefix_lengths + batch.lengths)
                    for r, text in zip(chunk, texts, strict=True):
                        results[cached[r]] = text
            if whole:
                for chunk, ids, attention, embeds in self._left_padded_batches(
                    prompts, soft, [pairs[r] for r in whole], items, batch_size
                ):
                    positions = (attention.cumsum(1) - 1).clamp_min(0)
                    inputs = {"input_ids": ids} if embeds is None else {"inputs_embeds": embeds}
                    first, cache = self._step(inputs, attention, positions)
                    texts = self._decode(first, cache, attention, attention.sum(1))
                    for r, text in zip(chunk, texts, strict=True):
                        results[whole[r]] = text
        return results  # type: ignore[return-value]

    def _step(
        self, inputs: dict[str, torch.Tensor], attention: torch.Tensor, positions: torch.Tensor, cache: Any = None
    ) -> tuple[torch.Tensor, Any]:
        """One forward with the key/value cache: the logits after the last position ``[B, V]``
        and the grown cache (the LM head only at that position when the model allows it)."""
        model = self.model.base_model if self._use_head_shortcut else self.model
        kwargs = {**inputs, "attention_mask": attention, "position_ids": positions, "use_cache": True}
        if cache is not None:
            kwargs.update(with_cache(model, cache))
        self.stats.forward_batches += 1
        out = model(**kwargs)
        if self._use_head_shortcut:
            return self._apply_head(out.last_hidden_state[:, -1]).float(), output_cache(out)
        return out.logits[:, -1].float(), output_cache(out)

    def _left_padded_batches(
        self, prompts: list[Any], soft: bool, pairs: list[tuple[int, int]], items: Sequence[Any], batch_size: int
    ) -> Any:
        """Batches of whole inputs (template, prompt spliced in), left-padded for generation."""
        used = sorted({n for _, n in pairs})
        position = {n: i for i, n in enumerate(used)}
        encoded = self._encode_items(self.input_layout, [items[n] for n in used], soft)
        width = prompts[0].shape[0] if soft else 0
        rows = []
        for p, n in pairs:
            pre, post = encoded[position[n]]
            slot = [self.pad_id] * width if soft else list(self.input_layout.prompt_ids(prompts[p]))
            rows.append((pre, slot, post, p))
        lengths = [len(a) + len(b) + len(c) for a, b, c, _ in rows]
        if self.max_positions is not None and max(lengths) + self.generation.max_new_tokens > self.max_positions:
            raise RLPromptError(
                f"an input is {max(lengths)} tokens and may grow by {self.generation.max_new_tokens}, "
                f"over the model's {self.max_positions} positions; lower task_model.max_sentence_tokens"
            )
        order = sorted(range(len(rows)), key=lambda r: lengths[r])
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            longest = max(lengths[r] for r in chunk)
            ids = torch.full((len(chunk), longest), self.pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), longest), dtype=torch.long)
            slot_mask = torch.zeros((len(chunk), longest), dtype=torch.bool)
            for b, r in enumerate(chunk):
                pre, slot, post, _ = rows[r]
                offset = longest - lengths[r]
                ids[b, offset:] = torch.tensor(pre + slot + post, dtype=torch.long)
                attention[b, offset:] = 1
                slot_mask[b, offset + len(pre) : offset + len(pre) + len(slot)] = True
            ids, attention = ids.to(self.device), attention.to(self.device)
            embeds = None
            if soft:
                embeds = self.model.get_input_embeddings()(ids)
                soft_rows = torch.stack([prompts[rows[r][3]].float() for r in chunk]).to(self.device, embeds.dtype)
                embeds = embeds.masked_scatter(slot_mask.to(self.device).unsqueeze(-1), soft_rows)
            yield chunk, ids, attention, embeds

    def _decode(
        self, first_logits: torch.Tensor, cache: Any, attention: torch.Tensor, next_positions: torch.Tensor
    ) -> list[tuple[str, int]]:
        """Greedy decoding on ``cache`` from the logits of the first new token; per row the text
        (cut at the first stop string) and the number of tokens generated.

        Rows that have finished leave the batch (their keys and values are dropped from the
        cache) once a quarter of it has finished, so a few long answers do not keep paying for
        the short ones already done."""
        stops = self.generation.stop
        batch = first_logits.shape[0]
        generated: list[list[int]] = [[] for _ in range(batch)]
        texts: list[str | None] = [None] * batch
        active = list(range(batch))  # the rows of the batch tensors, in order
        logits = first_logits
        positions = next_positions.clone()
        for step in range(self.generation.max_new_tokens):
            tokens = logits.argmax(-1)
            for i, b in enumerate(active):
                if texts[b] is not None:
                    continue
                token = int(tokens[i])
                if token in self.eos_ids:
                    texts[b] = self.tokenizer.decode(generated[b], skip_special_tokens=True)
                    continue
                generated[b].append(token)
                text = self.tokenizer.decode(generated[b], skip_special_tokens=True)
                cut = stop_cut(text, stops, self.generation.stop_after_text)
                if cut >= 0:
                    texts[b] = text[:cut]
            running = [i for i, b in enumerate(active) if texts[b] is None]
            if not running or step == self.generation.max_new_tokens - 1:
                break
            if len(running) <= 0.75 * len(active):
                keep = torch.tensor(running, device=tokens.device)
                cache.batch_select_indices(keep)
                tokens, attention, positions = tokens[keep], attention[keep], positions[keep]
                active = [active[i] for i in running]
            attention = torch.cat(
                [attention, torch.ones((len(active), 1), dtype=attention.dtype, device=attention.device)], 1
            )
            logits, cache = self._step({"input_ids": tokens[:, None]}, attention, positions[:, None], cache)
            positions = positions + 1
        self.stats.generated_tokens += sum(len(g) for g in generated)
        return [
            (
                (
                    self.tokenizer.decode(generated[b], skip_special_tokens=True)
                    if texts[b] is None
                    else cast(str, texts[b])  # not None here (mypy does not narrow texts[b])
                ).strip(),
                len(generated[b]),
            )
            for b in range(batch)
        ]

    # ------------------------------------------------------------ state

    def cache_state(self) -> dict[str, Any]:
        state = super().cache_state()
        state["generations"] = [[p, i, text, n] for (p, i), (text, n) in self._generations.items()]
        return state

    def load_cache_state(self, state: dict[str, Any]) -> None:
        super().load_cache_state(state)
        self._generations = OrderedDict(((p, i), (text, int(n))) for p, i, text, n in state.get("generations", []))

    def clear_cache(self) -> None:
        super().clear_cache()
        self._generations.clear()

    def score(self, prompts: Any, texts: Any) -> torch.Tensor:
        raise RLPromptError(
            "a generation task model scores references (log_likelihood) and generates; it has no classes to score"
        )

    def score_pairs(self, prompts: Any, texts_per_prompt: Any) -> list[torch.Tensor]:
        return [self.score(prompts, texts_per_prompt)]  # raises

    def score_soft_with_grad(self, soft_prompt: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        raise RLPromptError("gradient prompt tuning (agent prompt_tuning) is for classification tasks")


def _with_references(example: Example, references: Sequence[str]) -> dict[str, str]:
    fields = {"sentence": example} if isinstance(example, str) else dict(example)
    fields[REFERENCES_KEY] = json.dumps(list(references), ensure_ascii=False)
    return fields


__all__ = ["CausalGenerationModel", "prompt_key", "render_chat_template"]
