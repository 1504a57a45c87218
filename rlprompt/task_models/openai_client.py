"""The HTTP side of served task models: :class:`ApiClient` sends request bodies to one
OpenAI-compatible server through the official ``openai`` client (async, at most
``max_concurrency`` in flight), reads repeated requests from the on-disk
:class:`~rlprompt.task_models.response_cache.ResponseCache`, retries 429/5xx/timeouts/dropped
connections with exponential backoff and jitter (``Retry-After`` honoured), and counts requests,
tokens (from each answer's ``usage``) and money. Budgets in ``requests`` are charged before a
batch is sent; ``tokens`` and ``cost``, known only from the answers, are checked before and
recorded after (so they can be exceeded by at most one batch).

Counts are *logical*: a request answered from the disk cache counts as it would have been paid
(``requests_cached`` says how many were free), so a run stops at the same point, with the same
results, whether its cache was cold, warm or restored by a resume. The models that use it
(classification and generation scoring) are in :mod:`rlprompt.task_models.openai_api`.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import sqlite3
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, cast

from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.io import cache_dir
from rlprompt.task_models.base import TaskModelStats
from rlprompt.task_models.config import OpenAITaskModelConfig
from rlprompt.task_models.response_cache import ResponseCache, request_key


class ApiError(RLPromptError):
    """The server could not be used (after retries where retrying makes sense)."""


class LogprobsUnavailable(ApiError):
    """The server does not return the log-probabilities the scoring mode needs."""


class ApiClient:
    """Concurrent, cached, retried, counted requests to one OpenAI-compatible server."""

    def __init__(self, config: OpenAITaskModelConfig, stats: TaskModelStats) -> None:
        self.config = config
        self.stats = stats
        self.budget: Any = None
        key = None
        if config.api_key_env is not None:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise ConfigError(
                    f"the API key variable {config.api_key_env} is not set: export {config.api_key_env}=... "
                    "(or set task_model.api_key_env: null for a server that needs no key)"
                )
        self._api_key = key or "no-key"
        path = config.response_cache
        if path == "auto":
            path = str(cache_dir() / "api-responses.sqlite")
        self.cache = ResponseCache(path) if path else None
        self._reached = False
        self._warned_cache = False
        self._jitter = random.Random(0)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="rlprompt-api")
        self._thread.start()
        self._client: Any = None

    # ------------------------------------------------------------ public

    def request(self, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Answers (JSON dicts) of ``bodies`` in order: cached ones read, the others sent
        concurrently, each cached as it arrives. Charges and records the budget (see module)."""
        if not bodies:
            return []
        if self.budget is not None:
            self.budget.check("tokens")
            self.budget.check("cost")
            self.budget.charge("requests", len(bodies))
        keys = [request_key(self.config.base_url, self.config.endpoint, dict(b)) for b in bodies]
        answers: list[dict[str, Any] | None] = [self.cache.get(k) if self.cache else None for k in keys]
        missing = [i for i, a in enumerate(answers) if a is None]
        self.stats.requests_cached += len(bodies) - len(missing)
        if missing:
            if not self._thread.is_alive():
                raise ApiError("the API client was closed")
            future: Future[list[Any]] = asyncio.run_coroutine_threadsafe(
                self._send_all([bodies[i] for i in missing], [keys[i] for i in missing]), self._loop
            )
            try:
                sent = future.result()
            except BaseException:  # Ctrl-C: stop sending (answers that arrived are cached)
                future.cancel()
                raise
            failures = [r for r in sent if isinstance(r, BaseException)]
            for i, result in zip(missing, sent, strict=True):
                if not isinstance(result, BaseException):
                    answers[i] = result
            if failures:
                self._count([a for a in answers if a is not None], len(bodies))
                raise failures[0]
        self._count(answers, len(bodies))  # type: ignore[arg-type]
        return answers  # type: ignore[return-value]

    def close(self) -> None:
        if self._loop.is_running():
            if self._client is not None:
                asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self.cache is not None:
            self.cache.close()

    def models(self) -> list[str]:
        """The model names the server lists (empty when it lists none)."""
        return asyncio.run_coroutine_threadsafe(self._models(), self._loop).result()

    async def _models(self) -> list[str]:
        try:
            page = await self._openai().models.list()
            return [m.id for m in page.data]
        except Exception:  # noqa: BLE001 - only used to enrich an error message
            return []

    # ------------------------------------------------------------ internals

    def _count(self, answers: Sequence[dict[str, Any]], requests: int) -> None:
        """Record ``requests`` requests (as charged: failed ones too) and the answers' usage."""
        prompt_tokens = completion_tokens = 0
        for answer in answers:
            usage = answer.get("usage") or {}
            prompt_tokens += int(usage.get("prompt_tokens") or 0)
            completion_tokens += int(usage.get("completion_tokens") or 0)
        cost = (
            prompt_tokens * self.config.price_prompt_per_1m + completion_tokens * self.config.price_completion_per_1m
        ) / 1e6
        self.stats.requests += requests
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        self.stats.cost += cost
        if self.budget is not None:
            self.budget.record("tokens", prompt_tokens + completion_tokens)
            self.budget.record("cost", cost)

    def _openai(self) -> Any:
        if self._client is None:
            import openai

            timeout = openai.Timeout(self.config.timeout_s, connect=self.config.connect_timeout_s)
            self._client = openai.AsyncOpenAI(
                base_url=self.config.base_url, api_key=self._api_key, timeout=timeout, max_retries=0
            )
        return self._client

    async def _send_all(self, bodies: list[dict[str, Any]], keys: list[str]) -> list[Any]:
        limit = asyncio.Semaphore(self.config.max_concurrency)

        async def one(body: dict[str, Any], key: str) -> Any:
            async with limit:
                answer = await self._send(body)
            if self.cache is not None:
                try:
                    await asyncio.to_thread(self.cache.put, key, answer)
                except sqlite3.Error as exc:  # the answer is kept for this run; only its caching failed
                    if not self._warned_cache:
                        self._warned_cache = True
                        warnings.warn(f"response cache {self.cache.path}: {exc}; answers are not cached", stacklevel=1)
            return answer

        if not self._reached:  # the first contact alone: a wrong URL or key fails once, fast
            # gather returns a list (typeshed says a tuple for one awaitable)
            first = cast(list[Any], await asyncio.gather(one(bodies[0], keys[0]), return_exceptions=True))
            if isinstance(first[0], BaseException):
                return first + [first[0]] * (len(bodies) - 1)
            rest = await asyncio.gather(
                *(one(b, k) for b, k in zip(bodies[1:], keys[1:], strict=True)), return_exceptions=True
            )
            return first + list(rest)
        return list(
            await asyncio.gather(*(one(b, k) for b, k in zip(bodies, keys, strict=True)), return_exceptions=True)
        )

    async def _send(self, body: dict[str, Any]) -> dict[str, Any]:
        import openai

        client = self._openai()
        config = self.config
        where = f"{config.base_url} ({config.endpoint})"
        for attempt in range(config.max_retries + 1):
            try:
                if config.endpoint == "chat":
                    response = await client.chat.completions.create(**body)
                else:
                    response = await client.completions.create(**body)
                self._reached = True
                return response.model_dump(mode="json")
            except openai.AuthenticationError as exc:
                raise ApiError(
                    f"{where} refused the API key from ${config.api_key_env or '(none)'} (401: {_message(exc)})"
                ) from None
            except openai.PermissionDeniedError as exc:
                raise ApiError(f"{where} denied access (403: {_message(exc)})") from None
            except openai.NotFoundError as exc:
                self._reached = True
                names = await self._models()
                known = (
                    f"; the server lists {names}"
                    if names
                    else "; check base_url (most servers want the /v1 suffix) and the model name"
                )
                raise ApiError(f"{where} answered 404 for model '{config.model}': {_message(exc)}{known}") from None
            except openai.BadRequestError as exc:
                self._reached = True
                message = _message(exc)
                if _asks_logprobs(body) and re.search(r"logprob|echo", message, re.IGNORECASE):
                    raise LogprobsUnavailable(
                        f"{where} rejected a request for log-probabilities ({message}): "
                        "use task_model.scoring: generation (or auto)"
                    ) from None
                raise ApiError(f"{where} rejected the request (400: {message})") from None
            except openai.APIStatusError as exc:
                if exc.status_code not in (408, 409, 429) and exc.status_code < 500:
                    raise ApiError(f"{where} answered {exc.status_code}: {_message(exc)}") from None
                if attempt == config.max_retries:
                    raise ApiError(
                        f"{where} failed {attempt + 1} times in a row, last: {exc.status_code} "
                        f"{_message(exc)}; the run stopped with a resumable checkpoint (answers so far "
                        "are cached)"
                    ) from None
                self.stats.retries += 1
                await asyncio.sleep(self._delay(attempt, exc))
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                if not self._reached and _could_not_connect(exc):
                    raise ApiError(
                        f"cannot reach {config.base_url}: {_message(exc)} (is the server running?)"
                    ) from None
                if attempt == config.max_retries:
                    raise ApiError(
                        f"{where} failed {attempt + 1} times in a row, last: {_message(exc)}; the run "
                        "stopped with a resumable checkpoint (answers so far are cached)"
                    ) from None
                self.stats.retries += 1
                await asyncio.sleep(self._delay(attempt, exc))
            except openai.APIError as exc:  # a malformed answer, or another failure of the client
                raise ApiError(f"{where}: {type(exc).__name__}: {_message(exc)}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, exc: Exception) -> float:
        response = getattr(exc, "response", None)
        retry_after = None if response is None else response.headers.get("retry-after")
        if retry_after is not None:
            try:
                return min(float(retry_after), self.config.max_backoff_s)
            except ValueError:
                pass
        base = self.config.backoff_s * 2**attempt * (1.0 + 0.5 * self._jitter.random())
        return min(base, self.config.max_backoff_s)


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        for key in ("message", "detail"):
            if body.get(key):
                return str(body[key])
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _could_not_connect(exc: BaseException) -> bool:
    """No connection could be opened at all (refused, unknown host), as opposed to one dropped or
    timed out: the cause chain holds a connect error."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or type(seen).__name__ == "ConnectError":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _asks_logprobs(body: dict[str, Any]) -> bool:
    return body.get("logprobs") not in (None, False) or bool(body.get("echo"))
