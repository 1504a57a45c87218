"""A small OpenAI-compatible server backed by a real Hugging Face causal LM, for tests and drills.

It answers ``POST /v1/completions`` (a prompt or a list of prompts; ``max_tokens``, ``stop``,
``logprobs`` = number of top alternatives, ``echo``) and ``POST /v1/chat/completions``
(``messages``; ``logprobs``/``top_logprobs``) with greedy generations and the model's own
log-probabilities, plus ``GET /v1/models``. Usage (prompt and completion tokens) is counted as a
hosted API counts it. Faults can be injected into the next requests, in order: ``"429"`` (with a
``Retry-After`` header), ``"500"``, ``"drop"`` (the connection is closed without an answer) and
``"delay:SECONDS"``; ``logprobs=False`` makes it a generation-only server that rejects
``logprobs`` as ``transformers serve`` does.

Bounded by construction: it listens on 127.0.0.1 only, answers at most ``max_requests``
requests and shuts itself down ``lifetime_s`` seconds after it starts.

    with OpenAICompatibleServer(model_dir, model_name="tiny") as server:
        print(server.base_url)   # http://127.0.0.1:<port>/v1
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class OpenAICompatibleServer:
    """A real model behind the OpenAI wire format, with fault injection (see module docstring)."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        model_name: str = "test-model",
        api_key: str | None = None,
        logprobs: bool = True,
        port: int = 0,
        max_requests: int = 5000,
        lifetime_s: float = 600.0,
        max_top_logprobs: int = 2000,
    ) -> None:
        if model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            model = AutoModelForCausalLM.from_pretrained(model_dir)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.api_key = api_key
        self.logprobs = logprobs
        self.port = port
        self.max_requests = max_requests
        self.lifetime_s = lifetime_s
        self.max_top_logprobs = max_top_logprobs
        self.faults: deque[str] = deque()
        self.latency_s = 0.0
        """Added to every answer: a hosted API's network and queueing time, for benchmarks."""
        self.retry_after_s = 0.05
        self.requests_seen = 0
        self.answered = 0
        self.bodies: list[dict[str, Any]] = []
        """Request bodies answered, in order (with ``answers``, what a test can check counts against)."""
        self.answers: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._timer: threading.Timer | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAICompatibleServer:
        server = self

        class Handler(_Handler):
            owner = server

        ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if self._timer is not None:
            self._timer.cancel()
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def __enter__(self) -> OpenAICompatibleServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def inject(self, *faults: str) -> None:
        """Apply these faults to the next requests, one each, in order."""
        self.faults.extend(faults)

    # ------------------------------------------------------------ the model

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([int(token_id)])

    def _top(self, log_probs: Any, k: int) -> list[tuple[str, float]]:
        import torch

        k = min(k, self.max_top_logprobs, log_probs.shape[-1])
        values, ids = torch.topk(log_probs, k)
        out: dict[str, float] = {}
        for value, token_id in zip(values.tolist(), ids.tolist(), strict=True):
            text = self._token_text(token_id)
            if text not in out:  # two ids may decode alike; the likelier one is listed
                out[text] = float(value)
        return list(out.items())

    def _run(self, text: str, max_tokens: int, stop: Sequence[str], top_k: int | None, echo: bool) -> dict[str, Any]:
        """Greedy generation with per-token log-probs (and the prompt's own, when echoed)."""
        import torch

        from rlprompt.task_models.kv import output_cache, with_cache

        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            ids = [self.tokenizer.eos_token_id]
        prompt_ids = list(ids)
        with torch.no_grad():
            out = self.model(torch.tensor([ids]), use_cache=True)
            log_probs = torch.log_softmax(out.logits[0].float(), dim=-1)
            tokens: list[dict[str, Any]] = []
            if echo:
                for i, token_id in enumerate(prompt_ids):
                    value = None if i == 0 else float(log_probs[i - 1, token_id])
                    top = None if i == 0 or not top_k else self._top(log_probs[i - 1], top_k)
                    tokens.append({"id": token_id, "logprob": value, "top": top, "prompt": True})
            past, last = output_cache(out), log_probs[-1]
            generated: list[int] = []
            eos = self.tokenizer.eos_token_id
            finish = "length"
            for _ in range(max_tokens):
                token_id = int(last.argmax())
                if token_id == eos:
                    finish = "stop"
                    break
                tokens.append(
                    {
                        "id": token_id,
                        "logprob": float(last[token_id]),
                        "top": self._top(last, top_k) if top_k else None,
                        "prompt": False,
                    }
                )
                generated.append(token_id)
                completion = self.tokenizer.decode(generated)
                if any(s and s in completion for s in stop):
                    finish = "stop"
                    break
                out = self.model(torch.tensor([[token_id]]), use_cache=True, **with_cache(self.model, past))
                past, last = output_cache(out), torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        completion = self.tokenizer.decode(generated)
        for s in stop:
            if s and s in completion:
                completion = completion[: completion.index(s)]
        return {
            "prompt_ids": prompt_ids,
            "tokens": tokens,
            "text": completion,
            "finish": finish,
            "completion_tokens": len(generated),
        }

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        prompts = body.get("prompt", "")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        top_k = body.get("logprobs")
        echo = bool(body.get("echo", False))
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for index, text in enumerate(prompts):
            run = self._run(text, int(body.get("max_tokens", 16)), stop, top_k, echo)
            prompt_tokens += len(run["prompt_ids"])
            completion_tokens += run["completion_tokens"]
            logprobs = None
            if top_k is not None:  # token texts and offsets from incremental decoding, as servers report them
                ids = [t["id"] for t in run["tokens"]]
                offsets = [len(self.tokenizer.decode(ids[:i])) for i in range(len(ids) + 1)]
                pieces = self.tokenizer.decode(ids)
                logprobs = {
                    "tokens": [pieces[offsets[i] : offsets[i + 1]] for i in range(len(ids))],
                    "token_logprobs": [t["logprob"] for t in run["tokens"]],
                    "top_logprobs": [None if t["top"] is None else dict(t["top"]) for t in run["tokens"]],
                    "text_offset": offsets[:-1],
                }
            choices.append(
                {
                    "index": index,
                    "text": (text if echo else "") + run["text"],
                    "finish_reason": run["finish"],
                    "logprobs": logprobs,
                }
            )
        return {
            "id": f"cmpl-{self.answered}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = "\n".join(str(m.get("content", "")) for m in messages) + "\n"
        top_k = int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
        run = self._run(text, max_tokens, stop, top_k if top_k is not None else None, echo=False)
        logprobs = None
        if top_k is not None:
            logprobs = {
                "content": [
                    {
                        "token": self._token_text(t["id"]),
                        "logprob": t["logprob"],
                        "bytes": None,
                        "top_logprobs": [{"token": s, "logprob": v, "bytes": None} for s, v in (t["top"] or [])],
                    }
                    for t in run["tokens"]
                ]
            }
        return {
            "id": f"chatcmpl-{self.answered}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": run["text"]},
                    "finish_reason": run["finish"],
                    "logprobs": logprobs,
                }
            ],
            "usage": {
                "prompt_tokens": len(run["prompt_ids"]),
                "completion_tokens": run["completion_tokens"],
                "total_tokens": len(run["prompt_ids"]) + run["completion_tokens"],
            },
        }


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAICompatibleServer
    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection is closed: no handler thread outlives the server long

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        key = self.owner.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._send(401, _error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"))
        return False

    def do_GET(self) -> None:
        if not self._authorised():
            return
        if self.path.rstrip("/").endswith("/models"):
            self._send(
                200,
                {"object": "list", "data": [{"id": self.owner.model_name, "object": "model", "owned_by": "rlprompt"}]},
            )
        else:
            self._send(404, _error(f"no route {self.path}", "invalid_request_error"))

    def do_POST(self) -> None:
        owner = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        with owner._lock:
            owner.requests_seen += 1
            over = owner.requests_seen > owner.max_requests
            fault = owner.faults.popleft() if owner.faults else None
        if over:
            self._send(503, _error("request limit of this test server reached", "server_error"))
            return
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "429":
            self._send(
                429,
                _error("Rate limit reached", "requests", "rate_limit_exceeded"),
                {"Retry-After": f"{owner.retry_after_s:g}"},
            )
            return
        if fault == "500":
            self._send(500, _error("The server had an error while processing your request.", "server_error"))
            return
        if fault and fault.startswith("delay:"):
            time.sleep(float(fault.split(":", 1)[1]))
        if owner.latency_s:
            time.sleep(owner.latency_s)
        if not self._authorised():
            return
        if body.get("model") != owner.model_name:
            self._send(
                404,
                _error(f"The model `{body.get('model')}` does not exist.", "invalid_request_error", "model_not_found"),
            )
            return
        route = self.path.rstrip("/")
        wants_logprobs = body.get("logprobs") not in (None, False, 0) or bool(body.get("echo"))
        if wants_logprobs and not owner.logprobs:
            self._send(400, _error("logprobs are not supported by this server", "invalid_request_error"))
            return
        try:  # requests are computed concurrently, as a real server does
            if route.endswith("/chat/completions"):
                payload = owner.chat(body)
            elif route.endswith("/completions"):
                payload = owner.completions(body)
            else:
                payload = None
        except Exception as exc:  # noqa: BLE001 - a server answers 500, it does not drop the connection
            self._send(500, _error(f"{type(exc).__name__}: {exc}", "server_error"))
            return
        if payload is not None:
            with owner._lock:
                owner.answered += 1
                owner.bodies.append(body)
                owner.answers.append(payload)
        if payload is None:
            self._send(404, _error(f"no route {self.path}", "invalid_request_error"))
        else:
            self._send(200, payload)


@contextlib.contextmanager
def transformers_serve(
    model_dir: str | Path, port: int, timeout_s: float = 300.0, extra_args: Sequence[str] = ()
) -> Iterator[str]:
    """``transformers serve DIR`` on 127.0.0.1:``port`` (the model pinned, so requests name it by
    ``model_dir``); yields the base URL once it answers a completion, and stops it on exit."""
    import os
    import subprocess
    import sys
    import urllib.request

    exe = Path(sys.executable).with_name("transformers")
    proc = subprocess.Popen(
        [str(exe), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), *extra_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        body = json.dumps({"model": str(model_dir), "prompt": "Hello", "max_tokens": 1}).encode()
        deadline = time.time() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {proc.returncode}")
            if time.time() > deadline:
                raise RuntimeError(f"transformers serve did not answer within {timeout_s:.0f} s")
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/completions", data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=60) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(1.0)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


__all__ = ["OpenAICompatibleServer", "transformers_serve"]
