"""Task models behind an OpenAI-compatible HTTP API: hosted APIs, vLLM, llama.cpp, Ollama, ``transformers serve``.

Requests go through :class:`~rlprompt.task_models.openai_client.ApiClient` (concurrency, the
response cache, retries, counted requests, tokens and money), which this module's models use.

:class:`OpenAITaskModel` scores classification prompts in one of three modes (``scoring``):
next-token ``logprobs`` of the verbalizers, ``echo`` (each verbalizer's continuation log-prob)
or ``generation`` (the generated text matched to a verbalizer; unmatched answers score a tie,
which the metrics count as wrong, and are counted in ``invalid_answers``).
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

import torch

from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.task_models.base import Prompt, TaskModel, TaskModelStats
from rlprompt.task_models.config import OpenAITaskModelConfig
from rlprompt.task_models.openai_client import ApiClient, ApiError, LogprobsUnavailable
from rlprompt.task_models.sequences import Example, input_key, stop_cut
from rlprompt.template import render

INVALID_SCORE = 0.0
"""Every class's score on an answer that matches no verbalizer: a tie, counted as wrong."""
MISSING_MARGIN = math.log(2.0)
"""A verbalizer absent from the listed top log-probs scores the smallest listed value minus
this (its probability is below every listed one)."""


def _normal(text: str) -> str:
    return re.sub(r"[^\w]+", " ", text.lower()).strip()


def match_verbalizer(answer: str, verbalizers: Sequence[str]) -> int | None:
    """The class whose verbalizer the answer starts with (case, spaces and punctuation aside;
    the longest wins); else the one class whose verbalizer occurs in it as whole words (a chat
    model's "The review is positive."); else None (an invalid answer)."""
    text = _normal(answer)
    words = [_normal(v) for v in verbalizers]
    best, best_len = None, 0
    for index, word in enumerate(words):
        if word and (text == word or text.startswith(word + " ")) and len(word) > best_len:
            best, best_len = index, len(word)
    if best is not None:
        return best
    padded = f" {text} "
    found = [i for i, word in enumerate(words) if word and f" {word} " in padded]
    found = [i for i in found if not any(j != i and f" {words[i]} " in f" {words[j]} " for j in found)]
    return found[0] if len(found) == 1 else None


def verbalizer_scores(top: dict[str, float], verbalizers: Sequence[str]) -> list[float]:
    """Class scores from one token's top log-probs, by one rule for every class: each
    verbalizer's exact token when every verbalizer has one listed; otherwise, for each, the
    tokens equal to it up to case and spaces (probabilities summed); a verbalizer with none
    listed scores below every listed value."""
    floor = min(top.values()) - MISSING_MARGIN if top else -100.0

    def key(token: str) -> str:
        return token.strip().lower()

    exact = all(v in top for v in verbalizers)
    scores = []
    for verbalizer in verbalizers:
        if exact:
            scores.append(float(top[verbalizer]))
            continue
        loose = [v for t, v in top.items() if t.strip() and key(t) == key(verbalizer)]
        scores.append(float(torch.logsumexp(torch.tensor(loose), 0)) if loose else floor)
    return scores


class OpenAITaskModel(TaskModel):
    """Classification on a served model: class scores from log-probs, echo or generated text."""

    supports_soft_prompts = False
    supports_gradients = False
    served = True

    def __init__(self, config: OpenAITaskModelConfig, template: str, verbalizers: Sequence[str]) -> None:
        self.config = config
        self.template = template
        self.verbalizers = list(verbalizers)
        self.num_classes = len(self.verbalizers)
        self.stats = TaskModelStats()
        self.client = ApiClient(config, self.stats)
        self.scoring = config.scoring
        """The mode in use: ``auto`` until the first request settles it."""
        self._memo: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self._words: list[str] | None = None
        self._multi_word = any(len(v.split()) > 1 for v in self.verbalizers)
        if self._multi_word and config.scoring == "logprobs":
            raise ConfigError(
                f"task_model.scoring=logprobs reads one next token, but verbalizers {self.verbalizers} "
                "have several words: use scoring: echo (exact), generation or auto"
            )

    @classmethod
    def from_config(cls, config: Any, template: str, verbalizers: Sequence[str], **kwargs: Any) -> OpenAITaskModel:
        return cls(config, template, verbalizers)

    @property
    def scores_are_probabilities(self) -> bool:
        """False once scoring settled on generated answers (hard, one-hot-like scores)."""
        return self.scoring != "generation"

    # ------------------------------------------------------------ TaskModel (text prompts only)

    def score(self, prompts: Sequence[Prompt] | torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        rows = self.score_pairs(prompts, [texts] * len(prompts))
        return torch.stack(rows) if rows else torch.zeros(0, len(texts), self.num_classes)

    def score_pairs(
        self, prompts: Sequence[Prompt] | torch.Tensor, texts_per_prompt: Sequence[Sequence[str]]
    ) -> list[torch.Tensor]:
        prompt_list = _text_prompts(prompts)
        keys = [("cls", p, t) for p, texts in zip(prompt_list, texts_per_prompt, strict=True) for t in texts]
        values = self._memoized(
            keys, lambda todo: self._compute([(k[1], k[2]) for k in todo]), lambda todo: self._requests_for(len(todo))
        )
        out, start = [], 0
        for texts in texts_per_prompt:
            rows = values[start : start + len(texts)]
            out.append(torch.tensor(rows, dtype=torch.float32) if rows else torch.zeros(0, self.num_classes))
            start += len(texts)
        return out

    def _memoized(self, keys: Sequence[tuple[str, ...]], compute: Any, requests_for: Any) -> list[Any]:
        """Values of ``keys``: remembered ones reused (free), the others computed once each, after
        every budget is checked (``requests_for(todo)``: the requests the new keys take)."""
        self.stats.requested += len(keys)
        todo = list(dict.fromkeys(k for k in keys if k not in self._memo))
        self.stats.cache_hits += len(keys) - len(todo)
        fresh: dict[tuple[str, ...], Any] = {}
        if todo:
            if self.budget is not None:  # every budget checked before any is charged
                self.budget.check("requests", requests_for(todo))
                self.budget.check("tokens")
                self.budget.check("cost")
            self.charge_lm_calls(len(todo))
            self.client.budget = self.budget
            fresh = dict(zip(todo, compute(todo), strict=True))
        out = [fresh[k] if k in fresh else self._memo[k] for k in keys]
        for key in keys:
            if key in self._memo:
                self._memo.move_to_end(key)
        if self.config.cache_size:
            self._memo.update(fresh)
            while len(self._memo) > self.config.cache_size:
                self._memo.popitem(last=False)
        return out

    def _grouped(self, texts: int) -> int:
        """Requests that ``texts`` texts take (lists of ``prompts_per_request`` on completions)."""
        size = 1 if self.config.endpoint == "chat" else self.config.prompts_per_request
        return -(-texts // size)

    def _requests_for(self, pairs: int) -> int:
        if self.scoring == "auto":  # one probe, then the rest in the mode it settles on (at most echo's count)
            per_pair = self.num_classes if self._multi_word else 1
            return 1 + self._grouped(max(pairs - 1, 0) * per_pair) if pairs else 0
        return self._grouped(pairs * (self.num_classes if self.scoring == "echo" else 1))

    def clear_cache(self) -> None:
        self._memo.clear()

    def cache_state(self) -> dict[str, Any]:
        """Counters, remembered answers (JSON values) and the scoring mode: a resumed run scores
        and counts exactly as the uninterrupted one."""
        return {
            "stats": self.stats.as_dict(),
            "memo": [[list(k), v] for k, v in self._memo.items()],
            "scoring": self.scoring,
        }

    def load_cache_state(self, state: dict[str, Any]) -> None:
        restored = TaskModelStats(**state["stats"])
        for name, value in restored.as_dict().items():
            setattr(self.stats, name, value)  # the client shares this object
        self._memo = OrderedDict((tuple(k), v) for k, v in state.get("memo", []))
        self.scoring = state.get("scoring", self.scoring)

    def reset_stats(self) -> None:
        for name, value in TaskModelStats().as_dict().items():
            setattr(self.stats, name, value)

    def words(self) -> list[str]:
        if self._words is None:
            if self.config.tokenizer:
                from transformers import AutoTokenizer

                from rlprompt.task_models.vocab import tokenizer_words

                try:
                    tokenizer = AutoTokenizer.from_pretrained(self.config.tokenizer)
                except (OSError, ValueError) as exc:
                    raise ConfigError(f"task_model.tokenizer: cannot load '{self.config.tokenizer}' ({exc})") from None
                self._words = tokenizer_words(tokenizer)
            else:
                from rlprompt.task_models.words import ENGLISH_WORDS

                self._words = list(ENGLISH_WORDS)
        return self._words

    # ------------------------------------------------------------ requests

    def text(self, prompt: str, sentence: str) -> str:
        return render(self.template, {"prompt": prompt, "sentence": sentence})

    def _body(
        self, text: str, *, max_tokens: int, logprobs: bool, system: str | None = None, stop: Sequence[str] = ()
    ) -> dict[str, Any]:
        config = self.config
        body: dict[str, Any] = {"model": config.model, config.max_tokens_param: max_tokens}
        if config.temperature is not None:
            body["temperature"] = config.temperature
        if stop:
            body["stop"] = list(stop)
        if config.endpoint == "chat":
            system = system if system is not None else config.system_prompt
            messages = [{"role": "system", "content": system}] if system else []
            body["messages"] = [*messages, {"role": "user", "content": text}]
            if logprobs:
                body.update(logprobs=True, top_logprobs=config.top_logprobs)
        else:
            body["prompt"] = text
            if logprobs:
                body["logprobs"] = config.top_logprobs
        return body

    def _echo_body(self, text: str) -> dict[str, Any]:
        body = {"model": self.config.model, "prompt": text, "max_tokens": 1, "logprobs": 0, "echo": True}
        if self.config.temperature is not None:
            body["temperature"] = self.config.temperature
        return body

    def _requests(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One answer's first choice per body; completions bodies are grouped into prompt lists
        of ``prompts_per_request`` (each cached as one request)."""
        size = self.config.prompts_per_request
        if size == 1 or self.config.endpoint == "chat":
            return [_first_choice(a, self.config.base_url) for a in self.client.request(bodies)]
        grouped = []
        for start in range(0, len(bodies), size):
            chunk = bodies[start : start + size]
            grouped.append({**chunk[0], "prompt": [b["prompt"] for b in chunk]})
        choices: list[dict[str, Any]] = []
        for body, answer in zip(grouped, self.client.request(grouped), strict=True):
            _first_choice(answer, self.config.base_url)
            ordered = sorted(answer["choices"], key=lambda c: c.get("index") or 0)
            if len(ordered) != len(body["prompt"]):
                raise ApiError(
                    f"{self.config.base_url} answered {len(ordered)} choices for {len(body['prompt'])} "
                    "prompts: set task_model.prompts_per_request: 1 for this server"
                )
            choices.extend(ordered)
        return choices

    # ------------------------------------------------------------ classification scoring

    def _compute(self, pairs: list[tuple[str, str]]) -> list[list[float]]:
        texts = [self.text(p, s) for p, s in pairs]
        if self.scoring == "auto":
            mode: Literal["echo", "logprobs"]
            mode, method = ("echo", self._by_echo) if self._multi_word else ("logprobs", self._by_logprobs)
            try:
                first = method(texts[:1])
            except LogprobsUnavailable:
                self.scoring = "generation"
            else:
                self.scoring = mode
                return first + (method(texts[1:]) if len(texts) > 1 else [])
        if self.scoring == "logprobs":
            return self._by_logprobs(texts)
        if self.scoring == "echo":
            return self._by_echo(texts)
        return self._by_generation(texts)

    def _by_logprobs(self, texts: list[str]) -> list[list[float]]:
        choices = self._requests([self._body(t, max_tokens=1, logprobs=True) for t in texts])
        out = []
        for choice in choices:
            top = self._first_top(choice)
            scores = verbalizer_scores(top, self.verbalizers)
            if all(x == scores[0] for x in scores):  # no verbalizer among the listed tokens: no answer
                self.stats.invalid_answers += 1
            out.append(scores)
        return out

    def _first_top(self, choice: dict[str, Any]) -> dict[str, float]:
        logprobs = choice.get("logprobs") or {}
        if self.config.endpoint == "chat":
            content = logprobs.get("content") or []
            if content and isinstance(content[0], dict) and content[0].get("top_logprobs"):
                return {
                    str(t["token"]): float(t["logprob"])
                    for t in content[0]["top_logprobs"]
                    if isinstance(t, dict) and t.get("logprob") is not None
                }
        else:
            tops = logprobs.get("top_logprobs") or []
            if tops and isinstance(tops[0], dict) and tops[0]:
                return {str(k): float(v) for k, v in tops[0].items() if v is not None}
        raise LogprobsUnavailable(
            f"{self.config.base_url} answered without top log-probabilities: use "
            "task_model.scoring: generation (or auto)"
        )

    def _by_echo(self, texts: list[str]) -> list[list[float]]:
        spans = [(t, v) for t in texts for v in self.verbalizers]
        choices = self._requests([self._echo_body(t + v) for t, v in spans])
        scores = [continuation_log_prob(c, len(t), len(t + v))[0] for (t, v), c in zip(spans, choices, strict=True)]
        return [scores[i * self.num_classes : (i + 1) * self.num_classes] for i in range(len(texts))]

    def _by_generation(self, texts: list[str]) -> list[list[float]]:
        choices = self._requests([self._body(t, max_tokens=self.config.max_tokens, logprobs=False) for t in texts])
        out = []
        for choice in choices:
            index = match_verbalizer(_choice_text(choice), self.verbalizers)
            if index is None:
                self.stats.invalid_answers += 1
                out.append([INVALID_SCORE] * self.num_classes)
            else:
                row = [-math.log(1e4)] * self.num_classes
                row[index] = 0.0
                out.append(row)
        return out


class OpenAIGenerationModel(OpenAITaskModel):
    """Generation tasks on a served model: reference likelihoods through ``echo`` (where the
    server has it) and greedy generations scored by the task's metrics."""

    def __init__(self, config: OpenAITaskModelConfig, template: str, generation: Any) -> None:
        super().__init__(config, template, [])
        self.generation = generation
        if generation.chat == "system" and config.endpoint != "chat":
            raise ConfigError(
                "generation.chat=system puts the prompt in a system message: it needs task_model.endpoint: chat"
            )
        if generation.chat == "user" and config.endpoint != "chat":
            raise ConfigError(
                "generation.chat=user sends the template as a chat message: set task_model.endpoint: chat"
            )
        prefix = generation.reference_prefix
        self.reference_prefix = (" " if config.endpoint == "completions" else "") if prefix is None else prefix

    @classmethod
    def from_config(
        cls, config: Any, template: str, verbalizers: Sequence[str], **kwargs: Any
    ) -> OpenAIGenerationModel:
        return cls(config, template, kwargs["generation"])

    def score_pairs(self, prompts: Any, texts_per_prompt: Any) -> list[torch.Tensor]:
        raise RLPromptError("a generation task has no class scores: use log_likelihood() or generate()")

    def check_references(self, examples: Sequence[Example], references: Sequence[Sequence[str]], source: str) -> None:
        """The server's context length is unknown here: it answers an over-long request with a clear 400."""

    def render_example(self, prompt: str, example: Example) -> tuple[str, str | None]:
        """(user text, system message) of one (prompt, input)."""
        values = {"sentence": example} if isinstance(example, str) else dict(example)
        if self.generation.chat == "system":
            return render(self.template, values), prompt
        return render(self.template, {**values, "prompt": prompt}), None

    def log_likelihood(
        self,
        prompts: Sequence[Prompt] | torch.Tensor,
        examples_per_prompt: Sequence[Sequence[Example]],
        references_per_prompt: Sequence[Sequence[Sequence[str]]],
    ) -> list[torch.Tensor]:
        """Per prompt ``i``, ``[n_i]`` mean token log-probs of each example's best reference (echo)."""
        if self.config.endpoint == "chat" or self.scoring in ("logprobs", "generation"):
            raise ConfigError(
                "the likelihood reward needs echoed log-probs (task_model.endpoint: completions, "
                "scoring: echo or auto on a server with echo); use a generation metric as the "
                "reward (reward.name: f1, rougeL ...) on this server"
            )
        prompt_list = _text_prompts(prompts)
        keys, owners = [], []
        for p, examples, references in zip(prompt_list, examples_per_prompt, references_per_prompt, strict=True):
            for example, refs in zip(examples, references, strict=True):
                keys.append(("ll", p, input_key(example), json.dumps(list(refs))))
                owners.append(example)
        by_key = dict(zip(keys, owners, strict=True))
        values = self._memoized(
            keys,
            lambda todo: self._likelihoods([(k[1], by_key[k], json.loads(k[3])) for k in todo]),
            lambda todo: self._grouped(sum(len(json.loads(k[3])) for k in todo)),
        )
        out, start = [], 0
        for examples in examples_per_prompt:
            out.append(torch.tensor(values[start : start + len(examples)], dtype=torch.float32))
            start += len(examples)
        return out

    def _likelihoods(self, rows: list[tuple[str, Example, list[str]]]) -> list[float]:
        stop = self.generation.stop[0] if self.generation.score_stop and self.generation.stop else ""
        spans, owner = [], []
        for index, (prompt, example, refs) in enumerate(rows):
            text, _ = self.render_example(prompt, example)
            for ref in refs:
                continuation = self.reference_prefix + ref + stop
                spans.append((text, continuation))
                owner.append(index)
        choices = self._requests([self._echo_body(t + c) for t, c in spans])
        if self.scoring == "auto":
            self.scoring = "echo"
        best = [-math.inf] * len(rows)
        for (text, continuation), choice, index in zip(spans, choices, owner, strict=True):
            total, count = continuation_log_prob(choice, len(text), len(text + continuation))
            best[index] = max(best[index], total / count)
        return best

    def generate(
        self, prompts: Sequence[Prompt] | torch.Tensor, examples_per_prompt: Sequence[Sequence[Example]]
    ) -> list[list[str]]:
        """Greedy outputs of every prompt on its examples (stop strings cut off, whitespace stripped)."""
        prompt_list = _text_prompts(prompts)
        keys, owners = [], []
        for p, examples in zip(prompt_list, examples_per_prompt, strict=True):
            for example in examples:
                keys.append(("gen", p, input_key(example)))
                owners.append(example)
        by_key = dict(zip(keys, owners, strict=True))
        values = self._memoized(
            keys,
            lambda todo: self._generations([(k[1], by_key[k]) for k in todo]),
            lambda todo: self._grouped(len(todo)),
        )
        out, start = [], 0
        for examples in examples_per_prompt:
            out.append(list(values[start : start + len(examples)]))
            start += len(examples)
        return out

    def _generations(self, rows: list[tuple[str, Example]]) -> list[str]:
        bodies = []
        for prompt, example in rows:
            text, system = self.render_example(prompt, example)
            # a server stops at a stop string anywhere; stops that count only after text are cut here
            stop = () if self.generation.stop_after_text else self.generation.stop
            bodies.append(
                self._body(text, max_tokens=self.generation.max_new_tokens, logprobs=False, system=system, stop=stop)
            )
        before = self.stats.completion_tokens
        choices = self._requests(bodies)
        self.stats.generated_tokens += self.stats.completion_tokens - before
        outputs = []
        for choice in choices:
            answer = _choice_text(choice)
            cut = stop_cut(
                answer, self.generation.stop, self.generation.stop_after_text
            )  # servers ignoring ``stop`` too
            outputs.append((answer if cut < 0 else answer[:cut]).strip())
        return outputs


def _first_choice(answer: Any, base_url: str) -> dict[str, Any]:
    """The first choice of an answer, or one clear error for an answer without any."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise ApiError(f"{base_url} answered without choices: {str(answer)[:200]}")
    return choices[0]


def _choice_text(choice: dict[str, Any]) -> str:
    text = choice.get("text")
    if text is None:
        text = (choice.get("message") or {}).get("content")
    return text or ""


def _text_prompts(prompts: Sequence[Prompt] | torch.Tensor) -> list[str]:
    if isinstance(prompts, torch.Tensor) or any(not isinstance(p, str) for p in prompts):
        raise RLPromptError("a served model takes text only: soft prompts need a local model")
    return list(prompts)


def continuation_log_prob(choice: dict[str, Any], start: int, end: int) -> tuple[float, int]:
    """Sum and count of the echoed log-probs of the tokens overlapping characters ``[start, end)``."""
    logprobs = choice.get("logprobs") or {}
    offsets, tokens, values = logprobs.get("text_offset"), logprobs.get("tokens"), logprobs.get("token_logprobs")
    if not offsets or not tokens or values is None:
        raise LogprobsUnavailable(
            "the server answered an echo request without token log-probabilities: "
            "use task_model.scoring: logprobs or generation (or a generation metric reward)"
        )
    total, count = 0.0, 0
    for offset, token, value in zip(offsets, tokens, values, strict=False):
        if offset < end and offset + len(token) > start and value is not None:
            total += float(value)
            count += 1
    if not count:
        raise LogprobsUnavailable("the echoed tokens do not cover the scored text: the server's echo is unusable here")
    return total, count
