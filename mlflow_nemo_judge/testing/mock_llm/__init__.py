"""A MOCK OpenAI-compatible LLM server on loopback: a test double, not a model.

It exists so the test suite, the offline demo and the benchmarks can exercise every network path of
the package (target calls, judge calls, retries, timeouts, unparseable judge output) without an API
key or the internet. Nothing it says is produced by a language model: the "models" are small
deterministic text functions (``mock_models``), and every response says so (``system_fingerprint: "mock"``,
``owned_by: "mlflow-nemo-judge-mock"`` in ``/v1/models``, a ``Server`` header and the startup line).

Mock model ids:

* ``mock/faithful-summarizer`` copies the most informative sentences of the document verbatim.
* ``mock/poor-summarizer`` answers with a short, generic and partly wrong summary.
* ``mock/echo`` returns the last user message unchanged.
* ``mock/judge`` rates a labelled candidate (``Summary:``/``Answer:``...) against a labelled source
  (``Full Consult:``/``Document:``...) by word overlap, in the answer format and scale the prompt asks
  for (``RATING: <number>``, ``{"score": <n>}``, ``1 to 5``, ``0-10``...).
* ``mock/judge-think`` is the judge with its reasoning wrapped in ``<think>...</think>``.
* ``mock/judge-malformed`` never emits a score marker, to exercise unparseable judge output.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions`` (both also with ``stream``),
``GET /v1/models[/{id}]``, ``GET /health``; admin: ``GET|DELETE /mock/requests`` (the request log),
``GET|POST /mock/config`` (``{"latency": s, "faults": {...}}``). Token counts are whitespace words.

The server is pure-stdlib asyncio HTTP/1.1 with keep-alive, run on its own event loop in a daemon
thread (``MockLLMServer``) or as a process (``python -m mlflow_nemo_judge.testing.mock_llm``,
``start_subprocess``); the process keeps the server off the caller's GIL for benchmarks.
``FaultConfig`` injects seeded, per-request transient faults.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import logging
import math
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from mlflow_nemo_judge.testing.mock_llm.models import MOCK_MODELS, generate, truncate_words, word_count

__all__ = [
    "MOCK_MODELS",
    "OWNED_BY",
    "FaultConfig",
    "MockLLMServer",
    "RequestLogEntry",
    "main",
    "start_subprocess",
]

logger = logging.getLogger(__name__)

OWNED_BY = "mlflow-nemo-judge-mock"
SYSTEM_FINGERPRINT = "mock"
STARTUP_LINE = "MOCK LLM SERVER (test double) listening on {url}"

# Faults that replace the response; they are mutually exclusive, so their probabilities share one draw.
_ERROR_FAULTS = ("rate_limit", "server_error", "drop", "timeout", "malformed")
_THINK_TEXT = "some reasoning"
_MAX_BODY = 64 * 1024 * 1024


# --------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class FaultConfig:
    """Per-request fault probabilities (0..1), drawn from a seeded RNG so a run is reproducible.

    ``rate_limit``, ``server_error``, ``drop``, ``timeout`` and ``malformed`` exclude one another (one
    draw decides among them, so their sum must be <= 1); ``think`` is drawn separately for requests that
    got no error fault. Faults are transient: a retried request draws again.
    """

    rate_limit: float = 0.0
    server_error: float = 0.0
    drop: float = 0.0
    timeout: float = 0.0
    malformed: float = 0.0
    think: float = 0.0
    retry_after: float = 0.05
    timeout_seconds: float = 30.0
    only_models: list[str] | None = None

    def __post_init__(self) -> None:
        for name in (*_ERROR_FAULTS, "think"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"FaultConfig.{name} must be a probability in [0, 1], got {value!r}")
        total = sum(getattr(self, name) for name in _ERROR_FAULTS)
        if total > 1.0 + 1e-9:
            raise ValueError(f"FaultConfig error-fault probabilities sum to {total:g} > 1")
        if self.retry_after < 0 or self.timeout_seconds < 0:
            raise ValueError("FaultConfig.retry_after and timeout_seconds must be >= 0")
        if self.only_models is not None:
            if isinstance(self.only_models, str) or not all(isinstance(m, str) for m in self.only_models):
                raise ValueError("FaultConfig.only_models must be a list of model ids")
            # A private copy, so a caller mutating its list cannot change a running server's faults.
            object.__setattr__(self, "only_models", list(self.only_models))

    @classmethod
    def transient(cls, rate: float, **kwargs: Any) -> FaultConfig:
        """Split ``rate`` evenly across the retryable faults: rate_limit, server_error and drop."""
        share = rate / 3.0
        return cls(rate_limit=share, server_error=share, drop=share, **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultConfig:
        """Build from a JSON-ish mapping (``/mock/config``, CLI); unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))

    @property
    def error_rate(self) -> float:
        return sum(getattr(self, name) for name in _ERROR_FAULTS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RequestLogEntry:
    """One request to a model endpoint, ``time`` being its arrival (``time.time()``).

    ``status`` is 0 when the server dropped the request or let it time out.
    """

    path: str
    model: str | None
    body: dict[str, Any]
    status: int
    fault: str | None
    time: float


# ----------------------------------------------------------------------------------------------- HTTP


class _Reply(NamedTuple):
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


_PHRASES = {status.value: status.phrase for status in HTTPStatus}
_PIECE_RE = re.compile(r"\s*\S+\s*")  # a streamed chunk: one word with its spacing
_MODEL_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
_JSON_SEPARATORS = (",", ":")
_NO_FAULTS = FaultConfig()


def _json_reply(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    return _Reply(status, json.dumps(payload, separators=_JSON_SEPARATORS).encode("utf-8"), headers=headers)


def _error_reply(status: int, message: str, kind: str, code: str | None = None) -> _Reply:
    return _json_reply(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})


def _content_text(content: Any) -> str:
    """Chat content is a string or a list of parts; only text parts mean anything to the mock."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    raise _BadRequest(400, "message `content` must be a string or a list of content parts")


def _apply_limits(text: str, stop: Sequence[str], max_tokens: int | None) -> tuple[str, str]:
    """Apply ``stop`` then ``max_tokens`` (in whitespace words, the mock's token) -> (text, finish_reason)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    if cut >= 0:
        text = text[:cut]
    if max_tokens is not None and word_count(text) > max_tokens:
        return truncate_words(text, max_tokens), "length"
    return text, "stop"


def _int_param(body: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _BadRequest(400, f"`{name}` must be an integer in [{low}, {high}], got {value!r}")
    return value


class MockLLMServer:
    """The mock OpenAI-compatible server, run on loopback in a daemon thread with its own event loop.

    ``aliases`` maps extra model ids (for example a real model name in a config) onto mock ids;
    ``log_limit`` bounds the request log so a 100k-request benchmark does not hold every body.
    """

    def __init__(
        self,
        latency: float = 0.0,
        faults: FaultConfig | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        aliases: Mapping[str, str] | None = None,
        log_limit: int | None = 100_000,
    ) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self.aliases: dict[str, str] = dict(aliases or {})
        for alias, target in self.aliases.items():
            if target not in MOCK_MODELS:
                raise ValueError(
                    f"alias {alias!r} points at {target!r}, which is not a mock model {MOCK_MODELS}"
                )
        self._latency = 0.0
        self.set_latency(latency)
        # (config, rng) swapped as one tuple so a request never sees a config with another config's RNG.
        self._fault_state: tuple[FaultConfig | None, random.Random] = (faults, random.Random(seed))
        self._log: deque[RequestLogEntry] = deque(maxlen=log_limit)
        self._log_lock = threading.Lock()
        self._total_requests = 0
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._routes: dict[str, dict[str, Callable[[bytes], _Reply]]] = {
            "/v1/models": {"GET": self._list_models},
            "/health": {"GET": lambda _raw: _json_reply(200, {"status": "ok", "mock": True})},
            "/mock/requests": {"GET": self._get_log, "DELETE": self._delete_log},
            "/mock/config": {"GET": self._get_config, "POST": self._post_config},
        }

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> MockLLMServer:
        if self._thread is not None:
            raise RuntimeError("MockLLMServer is already started")
        self._ready.clear()
        self._startup_error = None
        self._thread = threading.Thread(target=self._run, name="mock-llm-server", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise self._startup_error
        logger.info(STARTUP_LINE.format(url=self.base_url))
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            self._loop = self._thread = self._server = None

    def __enter__(self) -> MockLLMServer:
        return self if self._thread is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(
                asyncio.start_server(self._serve_connection, self.host, self.port, backlog=2048)
            )
        except BaseException as exc:  # handed to start() so the caller sees e.g. "address in use"
            self._startup_error = exc
            loop.close()
            self._ready.set()
            return
        self._server = server
        self.port = server.sockets[0].getsockname()[1]
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        # Cancel open connections (keep-alive idlers, timeout-fault sleepers) so stop() never hangs.
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- runtime control (any thread) -------------------------------------------------------------

    @property
    def latency(self) -> float:
        return self._latency

    def set_latency(self, seconds: float) -> None:
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"latency must be a finite number >= 0, got {seconds!r}")
        self._latency = float(seconds)

    @property
    def faults(self) -> FaultConfig | None:
        return self._fault_state[0]

    def set_faults(self, faults: FaultConfig | None) -> None:
        """Replace the fault config; the RNG is reseeded so the same config gives the same fault count."""
        self._fault_state = (faults, random.Random(self.seed))

    @property
    def requests(self) -> list[RequestLogEntry]:
        """A snapshot of the request log (model endpoints only), oldest first."""
        with self._log_lock:
            return list(self._log)

    @property
    def request_count(self) -> int:
        """Requests seen since the last ``clear_log()``, including those the bounded log let go."""
        return self._total_requests

    def clear_log(self) -> None:
        with self._log_lock:
            self._log.clear()
            self._total_requests = 0

    def _record(
        self,
        path: str,
        model: str | None,
        body: dict[str, Any],
        status: int,
        fault: str | None,
        received: float,
    ) -> None:
        entry = RequestLogEntry(path, model, body, status, fault, received)
        with self._log_lock:
            self._log.append(entry)
            self._total_requests += 1

    # -- HTTP/1.1 ----------------------------------------------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed the keep-alive connection: the normal end
                except asyncio.LimitOverrunError:
                    writer.write(
                        self._encode(
                            _error_reply(431, "request head too large", "invalid_request_error"), False
                        )
                    )
                    return
                try:
                    reply, keep_alive = await self._handle_request(head, reader, writer)
                except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    # A bug in the mock must surface as a 500 the test can see, not a silent hang-up.
                    logger.exception("mock LLM server failed on a request")
                    reply = _error_reply(500, f"mock LLM server bug: {exc!r}", "server_error")
                    keep_alive = False
                if reply is None:  # the "drop" fault: close without a byte of response
                    writer.transport.abort()
                    return
                writer.write(self._encode(reply, keep_alive))
                await writer.drain()
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            # Only stop() cancels a connection. Ending the task normally matters: Python 3.11's
            # start_server callback calls task.exception() on it, which raises on a cancelled task.
            return
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()

    async def _handle_request(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[_Reply | None, bool]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _error_reply(400, "malformed request line", "invalid_request_error"), False
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        try:
            body = await self._read_body(headers, reader, writer)
        except _BadRequest as exc:
            return _error_reply(exc.status, str(exc), exc.kind), False
        path = target.split("?", 1)[0]
        return await self._dispatch(method, path, body), keep_alive

    @staticmethod
    async def _read_body(
        headers: Mapping[str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes:
        if headers.get("expect", "").lower() == "100-continue":  # curl waits a second for this otherwise
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            size_total = 0
            while True:
                size_line = await reader.readline()
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _BadRequest(400, "malformed chunk size") from None
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers carry nothing the mock needs
                    return b"".join(chunks)
                size_total += size
                if size_total > _MAX_BODY:
                    raise _BadRequest(413, "request body too large")
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit():
            raise _BadRequest(400, "invalid Content-Length")
        length = int(length_text)
        if length > _MAX_BODY:
            raise _BadRequest(413, "request body too large")
        return await reader.readexactly(length) if length else b""

    @staticmethod
    def _encode(reply: _Reply, keep_alive: bool) -> bytes:
        extra = "".join(f"{name}: {value}\r\n" for name, value in reply.headers)
        head = (
            f"HTTP/1.1 {reply.status} {_PHRASES.get(reply.status, '')}\r\n"
            f"Server: {OWNED_BY}\r\n"
            f"Content-Type: {reply.content_type}\r\n"
            f"Content-Length: {len(reply.body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n{extra}\r\n"
        )
        return head.encode("latin-1") + reply.body

    async def _dispatch(self, method: str, path: str, raw: bytes) -> _Reply | None:
        if path in _MODEL_PATHS:
            if method != "POST":
                return _error_reply(
                    405, f"{method} is not allowed on {path}; use POST", "invalid_request_error"
                )
            return await self._completion(path, raw)
        if path.startswith("/v1/models/"):
            methods: dict[str, Callable[[bytes], _Reply]] | None = {
                "GET": functools.partial(self._get_model, path[len("/v1/models/") :])
            }
        else:
            methods = self._routes.get(path)
        if methods is None:
            return _error_reply(404, f"No route {method} {path} on the mock LLM server", "not_found")
        handler = methods.get(method)
        if handler is None:
            allowed = ", ".join(methods)
            return _error_reply(
                405, f"{method} is not allowed on {path}; use {allowed}", "invalid_request_error"
            )
        return handler(raw)

    # -- model endpoints ---------------------------------------------------------------------------

    def _model_card(self, model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": OWNED_BY}

    def _list_models(self, _raw: bytes) -> _Reply:
        ids = [*MOCK_MODELS, *self.aliases]
        return _json_reply(200, {"object": "list", "data": [self._model_card(m) for m in ids]})

    def _get_model(self, model_id: str, _raw: bytes) -> _Reply:
        if model_id in MOCK_MODELS or model_id in self.aliases:
            return _json_reply(200, self._model_card(model_id))
        return self._unknown_model(model_id)

    @staticmethod
    def _unknown_model(model: str) -> _Reply:
        return _error_reply(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        )

    def _draw_fault(self, model: str, resolved: str) -> tuple[str | None, FaultConfig]:
        """-> (fault name or None, the config it was drawn from, whose retry/timeout settings apply)."""
        faults, rng = self._fault_state
        if faults is None:
            return None, _NO_FAULTS
        if (
            faults.only_models is not None
            and model not in faults.only_models
            and resolved not in faults.only_models
        ):
            return None, faults
        if faults.error_rate > 0:
            draw, threshold = rng.random(), 0.0
            for name in _ERROR_FAULTS:
                threshold += getattr(faults, name)
                if draw < threshold:
                    return name, faults
        if faults.think > 0 and rng.random() < faults.think:
            return "think", faults
        return None, faults

    async def _completion(self, path: str, raw: bytes) -> _Reply | None:
        received = time.time()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            self._record(path, None, {}, 400, None, received)
            return _error_reply(400, f"Request body is not valid JSON: {exc}", "invalid_request_error")
        if not isinstance(body, dict):
            self._record(path, None, {}, 400, None, received)
            return _error_reply(400, "Request body must be a JSON object", "invalid_request_error")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self._record(path, None, body, 400, None, received)
            return _error_reply(400, "you must provide a `model` parameter", "invalid_request_error")
        resolved = self.aliases.get(model, model)
        if resolved not in MOCK_MODELS:
            self._record(path, model, body, 404, None, received)
            return self._unknown_model(model)
        try:
            chat = path == "/v1/chat/completions"
            system, prompts, prompt_tokens = self._read_prompts(body, chat)
            max_tokens = _int_param(body, "max_tokens", 1, 10_000_000)
            if max_tokens is None:
                max_tokens = _int_param(body, "max_completion_tokens", 1, 10_000_000)
            n = _int_param(body, "n", 1, 128) or 1
            stop = body.get("stop") or []
            stop = [stop] if isinstance(stop, str) else stop
            if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
                raise _BadRequest(400, "`stop` must be a string or a list of strings")
        except _BadRequest as exc:
            self._record(path, model, body, exc.status, None, received)
            return _error_reply(exc.status, str(exc), exc.kind)

        fault, faults = self._draw_fault(model, resolved)
        if self._latency > 0:
            await asyncio.sleep(self._latency)
        if fault == "rate_limit":
            self._record(path, model, body, 429, fault, received)
            wait = faults.retry_after
            return _json_reply(
                429,
                {
                    "error": {
                        "message": f"Rate limit reached for {model} (mock fault injection); retry after {wait:g}s.",
                        "type": "requests",
                        "param": None,
                        "code": "rate_limit_exceeded",
                    }
                },
                headers=(("Retry-After", f"{wait:g}"), ("retry-after-ms", str(round(wait * 1000)))),
            )
        if fault == "server_error":
            self._record(path, model, body, 500, fault, received)
            return _error_reply(
                500,
                "The mock server had an error while processing your request (mock fault injection).",
                "server_error",
            )
        if fault == "drop":
            self._record(path, model, body, 0, fault, received)
            return None
        if fault == "timeout":
            self._record(path, model, body, 0, fault, received)
            await asyncio.sleep(faults.timeout_seconds)  # the client's timeout fires first

        request_id = next(self._ids)
        if fault == "malformed":
            self._record(path, model, body, 200, fault, received)
            return _Reply(
                200,
                f'{{"id":"chatcmpl-mock-{request_id}","object":"chat.completion","choices":[{{"index":0,"message":{{"content":"'.encode(),
            )

        choices: list[dict[str, Any]] = []
        completion_tokens = 0
        for prompt in prompts:
            content = generate(resolved, system, prompt)
            if fault == "think":
                content = f"<think>{_THINK_TEXT}</think>\n{content}"
            text, finish = _apply_limits(content, stop, max_tokens)
            completion_tokens += word_count(text) * n
            for _ in range(n):
                choices.append({"text": text, "finish_reason": finish})
        if fault != "timeout":
            self._record(path, model, body, 200, fault, received)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        prefix = "chatcmpl" if chat else "cmpl"
        envelope = {
            "id": f"{prefix}-mock-{request_id}",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return self._stream_reply(envelope, choices, chat, usage if include_usage else None)
        if chat:
            out = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": c["text"]},
                    "logprobs": None,
                    "finish_reason": c["finish_reason"],
                }
                for i, c in enumerate(choices)
            ]
            return _json_reply(200, {**envelope, "object": "chat.completion", "choices": out, "usage": usage})
        out = [
            {"index": i, "text": c["text"], "logprobs": None, "finish_reason": c["finish_reason"]}
            for i, c in enumerate(choices)
        ]
        return _json_reply(200, {**envelope, "object": "text_completion", "choices": out, "usage": usage})

    @staticmethod
    def _read_prompts(body: Mapping[str, Any], chat: bool) -> tuple[str, list[str], int]:
        """-> (system text, one prompt per choice group, prompt token count)."""
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise _BadRequest(400, "`messages` must be a non-empty list")
            system_parts: list[str] = []
            last_user = ""
            prompt_tokens = 0
            for message in messages:
                if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                    raise _BadRequest(400, "each message must be an object with a `role`")
                text = _content_text(message.get("content"))
                prompt_tokens += word_count(text)
                if message["role"] in ("system", "developer"):
                    system_parts.append(text)
                elif message["role"] == "user":
                    last_user = text
            return "\n".join(system_parts), [last_user], prompt_tokens
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            return "", [prompt], word_count(prompt)
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            return "", list(prompt), sum(word_count(p) for p in prompt)
        raise _BadRequest(
            400, "`prompt` must be a string or a non-empty list of strings (token ids are not supported)"
        )

    @staticmethod
    def _stream_reply(
        envelope: dict[str, Any], choices: list[dict[str, Any]], chat: bool, usage: dict[str, int] | None
    ) -> _Reply:
        """Server-sent events, one chunk per word, in a single Content-Length body (clients parse it the same)."""
        kind = "chat.completion.chunk" if chat else "text_completion"
        events: list[dict[str, Any]] = []
        for index, choice in enumerate(choices):
            pieces: Iterable[str] = _PIECE_RE.findall(choice["text"])
            if chat:
                events.append(
                    {"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                )
                events.extend(
                    {"index": index, "delta": {"content": p}, "finish_reason": None} for p in pieces
                )
                events.append({"index": index, "delta": {}, "finish_reason": choice["finish_reason"]})
            else:
                events.extend({"index": index, "text": p, "finish_reason": None} for p in pieces)
                events.append({"index": index, "text": "", "finish_reason": choice["finish_reason"]})
        lines = [
            json.dumps({**envelope, "object": kind, "choices": [e]}, separators=_JSON_SEPARATORS)
            for e in events
        ]
        if usage is not None:
            lines.append(
                json.dumps(
                    {**envelope, "object": kind, "choices": [], "usage": usage}, separators=_JSON_SEPARATORS
                )
            )
        lines.append("[DONE]")
        payload = "".join(f"data: {line}\n\n" for line in lines).encode("utf-8")
        return _Reply(200, payload, content_type="text/event-stream")

    # -- admin endpoints ---------------------------------------------------------------------------

    def _get_log(self, _raw: bytes) -> _Reply:
        return _json_reply(200, {"total": self.request_count, "requests": [asdict(e) for e in self.requests]})

    def _delete_log(self, _raw: bytes) -> _Reply:
        self.clear_log()
        return _json_reply(200, {"cleared": True})

    def _get_config(self, _raw: bytes) -> _Reply:
        faults = self.faults
        return _json_reply(
            200, {"latency": self.latency, "faults": faults.to_dict() if faults else None, "seed": self.seed}
        )

    def _post_config(self, raw: bytes) -> _Reply:
        try:
            data = json.loads(raw or b"{}")
            if not isinstance(data, dict):
                raise ValueError("the config must be a JSON object")
            unknown = sorted(set(data) - {"latency", "faults"})
            if unknown:
                raise ValueError(f"unknown config key(s) {unknown}; known: ['faults', 'latency']")
            faults = self.faults
            if "faults" in data:
                spec = data["faults"]
                if spec is not None and not isinstance(spec, dict):
                    raise ValueError("`faults` must be an object or null")
                faults = FaultConfig.from_dict(spec) if spec is not None else None
            if "latency" in data:
                latency = data["latency"]
                if isinstance(latency, bool) or not isinstance(latency, (int, float)):
                    raise ValueError("`latency` must be a number of seconds")
                self.set_latency(float(latency))
            if "faults" in data:
                self.set_faults(faults)
        except (ValueError, TypeError) as exc:
            return _error_reply(400, f"invalid mock config: {exc}", "invalid_request_error")
        return self._get_config(b"")


# ---------------------------------------------------------------------------------------- subprocess

_FAULT_FLAGS = (
    "rate_limit",
    "server_error",
    "drop",
    "timeout",
    "malformed",
    "think",
    "retry_after",
    "timeout_seconds",
)
_LISTENING_RE = re.compile(r"listening on (http://\S+)")


def _alias_arg(text: str) -> tuple[str, str]:
    name, sep, target = text.partition("=")
    if not sep or not name or target not in MOCK_MODELS:
        raise argparse.ArgumentTypeError(
            f"expected NAME=MOCK_ID with MOCK_ID one of {', '.join(MOCK_MODELS)}"
        )
    return name, target


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mlflow_nemo_judge.testing.mock_llm",
        description="Run the MOCK OpenAI-compatible LLM server (a test double, not a model) until SIGTERM/SIGINT.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds slept per model request")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")
    parser.add_argument(
        "--fault-rate", type=float, default=0.0, help="split evenly over rate-limit/server-error/drop"
    )
    for name in _FAULT_FLAGS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, default=None)
    parser.add_argument("--only-models", nargs="+", default=None, help="apply faults only to these model ids")
    parser.add_argument(
        "--alias",
        action="append",
        default=[],
        type=_alias_arg,
        metavar="NAME=MOCK_ID",
        help="serve NAME as a mock model",
    )
    parser.add_argument("--log-limit", type=int, default=100_000, help="request log entries kept in memory")
    return parser.parse_args(argv)


def _faults_from_args(args: argparse.Namespace) -> FaultConfig | None:
    values: dict[str, Any] = FaultConfig.transient(args.fault_rate).to_dict() if args.fault_rate else {}
    values.update({name: getattr(args, name) for name in _FAULT_FLAGS if getattr(args, name) is not None})
    if args.only_models is not None:
        values["only_models"] = args.only_models
    return FaultConfig.from_dict(values) if values else None


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; print the one startup line on stdout for the parent to parse."""
    args = _parse_args(argv)
    aliases = dict(args.alias)
    server = MockLLMServer(
        latency=args.latency,
        faults=_faults_from_args(args),
        seed=args.seed,
        host=args.host,
        port=args.port,
        aliases=aliases,
        log_limit=args.log_limit,
    )
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with server:
        print(STARTUP_LINE.format(url=server.base_url), flush=True)
        while not stop.wait(0.5):  # a timed wait keeps the main thread responsive to signals everywhere
            pass
    return 0


def start_subprocess(
    latency: float = 0.0,
    *,
    seed: int = 0,
    port: int = 0,
    aliases: Mapping[str, str] | None = None,
    startup_timeout: float = 30.0,
    **faults: Any,
) -> tuple[subprocess.Popen[str], str]:
    """Launch the mock server as a child process -> (process, base_url); the caller terminates it.

    ``faults`` are FaultConfig fields (``rate_limit=0.1``, ``only_models=[...]``) or ``fault_rate`` for
    ``FaultConfig.transient``. A separate process keeps the server off the caller's GIL, which matters
    for benchmarks that drive it at high request rates.
    """
    command = [
        sys.executable,
        "-m",
        "mlflow_nemo_judge.testing.mock_llm",
        "--port",
        str(port),
        "--latency",
        str(latency),
        "--seed",
        str(seed),
    ]
    for name, value in faults.items():
        if name == "fault_rate":
            command += ["--fault-rate", str(value)]
        elif name == "only_models":
            if value is not None:
                command += ["--only-models", *value]
        elif name in _FAULT_FLAGS:
            command += [f"--{name.replace('_', '-')}", str(value)]
        else:
            raise TypeError(f"start_subprocess() got an unknown fault {name!r}")
    for alias, target in (aliases or {}).items():
        command += ["--alias", f"{alias}={target}"]
    # The child must import this package even when it is run from a source checkout, not installed.
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()

    def read_stdout() -> None:
        # readline() has no timeout, so it runs here and a dead or hung child fails fast below. The
        # thread then drains stdout to EOF, so the child can never block on a full pipe, and closes it.
        stream = process.stdout
        if stream is None:
            lines.put("")
            return
        with stream:
            lines.put(stream.readline())
            for _ in stream:
                pass

    threading.Thread(target=read_stdout, name="mock-llm-stdout", daemon=True).start()
    try:
        line = lines.get(timeout=startup_timeout)
    except queue.Empty:
        line = ""
    match = _LISTENING_RE.search(line)
    if match is None:
        process.kill()
        process.wait()
        raise RuntimeError(
            f"mock LLM server did not start (exit code {process.returncode}, first line {line!r})"
        )
    return process, match.group(1)
