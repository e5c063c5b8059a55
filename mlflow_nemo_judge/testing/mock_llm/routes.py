"""What the mock LLM server answers: the model endpoints, the request log and the admin routes.

Knows nothing about sockets: ``MockRoutes.dispatch`` maps (method, path, body bytes) to a ``Reply``
(or None for the ``drop`` fault), so the HTTP layer in ``server`` stays a thin framing loop.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from mlflow_nemo_judge.testing.mock_llm.faults import CONTENT_FAULTS, THINK_TEXT, FaultConfig, FaultInjector
from mlflow_nemo_judge.testing.mock_llm.models import MOCK_MODELS, generate, word_count
from mlflow_nemo_judge.testing.mock_llm.rate_limits import RateLimitConfig, RateLimiter, rate_limited_reply
from mlflow_nemo_judge.testing.mock_llm.shapes import (
    OWNED_BY,
    SYSTEM_FINGERPRINT,
    BadRequest,
    Reply,
    apply_limits,
    error_reply,
    int_param,
    json_reply,
    read_prompts,
    stream_reply,
    unknown_model,
)
from mlflow_nemo_judge.testing.mock_llm.tools import assistant_message

__all__ = ["MockRoutes", "RequestLogEntry", "Sleep"]

_MODEL_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})

#: An awaitable sleep (``asyncio.sleep`` by default); tests inject one to control latency and timeouts.
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class RequestLogEntry:
    """One request to a model endpoint, ``time`` being its arrival (the server's clock, ``time.time()``).

    ``status`` is 0 when the server dropped the request or let it time out.
    """

    path: str
    model: str | None
    body: dict[str, Any]
    status: int
    fault: str | None
    time: float


class MockRoutes:
    """The server's state (aliases, latency, faults, request log) and its request handlers.

    ``sleep`` serves both the latency and the ``timeout`` fault; ``clock`` stamps log entries and
    ``created``. Both are injectable so tests can observe waits instead of timing them.
    """

    def __init__(
        self,
        *,
        aliases: Mapping[str, str],
        latency: float,
        faults: FaultInjector,
        log_limit: int | None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rate_limits: RateLimiter | None = None,
    ) -> None:
        self.rate_limits = rate_limits if rate_limits is not None else RateLimiter(None)
        self.aliases: dict[str, str] = dict(aliases)
        for alias, target in self.aliases.items():
            if target not in MOCK_MODELS:
                raise ValueError(
                    f"alias {alias!r} points at {target!r}, which is not a mock model {MOCK_MODELS}"
                )
        self.faults = faults
        self.sleep = sleep
        self.clock = clock
        self._latency = 0.0
        self.set_latency(latency)
        self._log: deque[RequestLogEntry] = deque(maxlen=log_limit)
        self._log_lock = threading.Lock()
        self._total_requests = 0
        self._ids = itertools.count(1)
        self._routes: dict[str, dict[str, Callable[[bytes], Reply]]] = {
            "/v1/models": {"GET": self._list_models},
            "/health": {"GET": lambda _raw: json_reply(200, {"status": "ok", "mock": True})},
            "/mock/requests": {"GET": self._get_log, "DELETE": self._delete_log},
            "/mock/config": {"GET": self._get_config, "POST": self._post_config},
        }

    # -- state (any thread) -----------------------------------------------------------------------

    @property
    def latency(self) -> float:
        return self._latency

    def set_latency(self, seconds: float) -> None:
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"latency must be a finite number >= 0, got {seconds!r}")
        self._latency = float(seconds)

    @property
    def requests(self) -> list[RequestLogEntry]:
        with self._log_lock:
            return list(self._log)

    @property
    def request_count(self) -> int:
        return self._total_requests

    def clear_log(self) -> None:
        with self._log_lock:
            self._log.clear()
            self._total_requests = 0

    def _record(
        self, path: str, model: str | None, body: dict[str, Any], status: int, fault: str | None, at: float
    ) -> None:
        entry = RequestLogEntry(path, model, body, status, fault, at)
        with self._log_lock:
            self._log.append(entry)
            self._total_requests += 1

    # -- routing ----------------------------------------------------------------------------------

    async def dispatch(
        self,
        method: str,
        path: str,
        raw: bytes,
        headers: Mapping[str, str] | None = None,
        target: str | None = None,
    ) -> Reply | None:
        """The answer to one request; None means "close the connection without a response".

        ``headers`` and ``target`` (the request line's path and query) are only used by the
        ``echo_request`` fault, which quotes them back in error bodies."""
        if path in _MODEL_PATHS:
            if method != "POST":
                return error_reply(
                    405, f"{method} is not allowed on {path}; use POST", "invalid_request_error"
                )
            return await self._completion(path, raw, headers or {}, target or path)
        if path.startswith("/v1/models/"):
            methods: dict[str, Callable[[bytes], Reply]] | None = {
                "GET": functools.partial(self._get_model, path[len("/v1/models/") :])
            }
        else:
            methods = self._routes.get(path)
        if methods is None:
            return error_reply(404, f"No route {method} {path} on the mock LLM server", "not_found")
        handler = methods.get(method)
        if handler is None:
            allowed = ", ".join(methods)
            return error_reply(
                405, f"{method} is not allowed on {path}; use {allowed}", "invalid_request_error"
            )
        return handler(raw)

    # -- model endpoints ---------------------------------------------------------------------------

    @staticmethod
    def _model_card(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": OWNED_BY}

    def _list_models(self, _raw: bytes) -> Reply:
        ids = [*MOCK_MODELS, *self.aliases]
        return json_reply(200, {"object": "list", "data": [self._model_card(m) for m in ids]})

    def _get_model(self, model_id: str, _raw: bytes) -> Reply:
        if model_id in MOCK_MODELS or model_id in self.aliases:
            return json_reply(200, self._model_card(model_id))
        return unknown_model(model_id)

    async def _completion(
        self, path: str, raw: bytes, headers: Mapping[str, str], target: str
    ) -> Reply | None:
        received = self.clock()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            self._record(path, None, {}, 400, None, received)
            return error_reply(400, f"Request body is not valid JSON: {exc}", "invalid_request_error")
        if not isinstance(body, dict):
            self._record(path, None, {}, 400, None, received)
            return error_reply(400, "Request body must be a JSON object", "invalid_request_error")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self._record(path, None, body, 400, None, received)
            return error_reply(400, "you must provide a `model` parameter", "invalid_request_error")
        resolved = self.aliases.get(model, model)
        if resolved not in MOCK_MODELS:
            self._record(path, model, body, 404, None, received)
            return unknown_model(model)
        try:
            chat = path == "/v1/chat/completions"
            system, prompts, prompt_tokens = read_prompts(body, chat)
            max_tokens = int_param(body, "max_tokens", 1, 10_000_000)
            if max_tokens is None:
                max_tokens = int_param(body, "max_completion_tokens", 1, 10_000_000)
            n = int_param(body, "n", 1, 128) or 1
            stop = body.get("stop") or []
            stop = [stop] if isinstance(stop, str) else stop
            if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
                raise BadRequest(400, "`stop` must be a string or a list of strings")
        except BadRequest as exc:
            self._record(path, model, body, exc.status, None, received)
            return error_reply(exc.status, str(exc), exc.kind)

        limited, wait = self.rate_limits.admit(model, resolved)
        if wait is not None:  # refused at once, before the latency: a provider's limiter answers first
            self._record(path, model, body, 429, "rate_limited", received)
            return rate_limited_reply(model, wait, "mock rate limit")
        try:
            current = self.faults.config
            key = json.dumps(body, sort_keys=True) if current is not None and current.per_request else None
            fault, faults = self.faults.draw(model, resolved, key)
            if self._latency > 0:
                await self.sleep(self._latency)
            if fault is not None and fault not in CONTENT_FAULTS:
                early = await self._fault_reply(fault, faults, path, model, body, received)
                if early is not None and faults.echo_request and early.status >= 400:
                    early = _echo(early, headers, target)
                if fault != "timeout":
                    return early

            request_id = next(self._ids)
            choices: list[dict[str, Any]] = []
            completion_tokens = 0
            for prompt in prompts:
                content = generate(resolved, system, prompt, *_sampling(body))
                if fault == "think":
                    content = f"<think>{THINK_TEXT}</think>\n{content}"
                text: str | None
                text, finish = apply_limits(content, stop, max_tokens)
                if fault == "null_content":
                    text, finish = None, "length"
                elif fault == "empty_content":
                    text = ""
                completion_tokens += word_count(text or "") * n
                for _ in range(n):
                    choices.append({"text": text, "finish_reason": finish})
            if fault != "timeout":
                self._record(path, model, body, 200, fault, received)
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
            envelope = {
                "id": f"{'chatcmpl' if chat else 'cmpl'}-mock-{request_id}",
                "created": int(self.clock()),
                "model": model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
            }
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return stream_reply(envelope, choices, chat, usage if include_usage else None)
            if chat:
                out: list[dict[str, Any]] = []
                for i, c in enumerate(choices):
                    message, tool_finish = assistant_message(
                        resolved, body, prompts[0], c["text"], request_id
                    )
                    out.append(
                        {
                            "index": i,
                            "message": message,
                            "logprobs": None,
                            "finish_reason": tool_finish or c["finish_reason"],
                        }
                    )
                return json_reply(
                    200, {**envelope, "object": "chat.completion", "choices": out, "usage": usage}
                )
            out = [
                {"index": i, "text": c["text"], "logprobs": None, "finish_reason": c["finish_reason"]}
                for i, c in enumerate(choices)
            ]
            return json_reply(200, {**envelope, "object": "text_completion", "choices": out, "usage": usage})
        finally:
            if limited is not None:
                self.rate_limits.done(limited)

    async def _fault_reply(
        self, fault: str, faults: FaultConfig, path: str, model: str, body: dict[str, Any], received: float
    ) -> Reply | None:
        """The response an error fault puts in place of the answer (``timeout`` only delays it)."""
        if fault == "status":
            assert faults.status is not None
            self._record(path, model, body, faults.status, fault, received)
            return error_reply(
                faults.status,
                f"The mock server answers every request with HTTP {faults.status} (mock fault injection).",
                "server_error" if faults.status >= 500 else "invalid_request_error",
            )
        if fault == "rate_limit":
            self._record(path, model, body, 429, fault, received)
            return rate_limited_reply(model, faults.retry_after, "mock fault injection")
        if fault == "server_error":
            self._record(path, model, body, 500, fault, received)
            return error_reply(
                500,
                "The mock server had an error while processing your request (mock fault injection).",
                "server_error",
            )
        if fault == "drop":
            self._record(path, model, body, 0, fault, received)
            return None
        if fault == "timeout":
            self._record(path, model, body, 0, fault, received)
            await self.sleep(faults.timeout_seconds)  # the client's timeout fires first
            return None
        # "malformed": a 200 whose JSON body is cut off mid-string.
        self._record(path, model, body, 200, fault, received)
        request_id = next(self._ids)
        return Reply(
            200,
            f'{{"id":"chatcmpl-mock-{request_id}","object":"chat.completion","choices":[{{"index":0,"message":{{"content":"'.encode(),
        )

    # -- admin endpoints ---------------------------------------------------------------------------

    def _get_log(self, _raw: bytes) -> Reply:
        return json_reply(200, {"total": self.request_count, "requests": [asdict(e) for e in self.requests]})

    def _delete_log(self, _raw: bytes) -> Reply:
        self.clear_log()
        return json_reply(200, {"cleared": True})

    def _get_config(self, _raw: bytes) -> Reply:
        faults = self.faults.config
        return json_reply(
            200,
            {
                "latency": self.latency,
                "faults": faults.to_dict() if faults else None,
                "seed": self.faults.seed,
                "rate_limits": limits.to_dict() if (limits := self.rate_limits.config) else None,
                "rate_limit_stats": self.rate_limits.stats(),
            },
        )

    def _post_config(self, raw: bytes) -> Reply:
        try:
            data = json.loads(raw or b"{}")
            if not isinstance(data, dict):
                raise ValueError("the config must be a JSON object")
            unknown = sorted(set(data) - {"latency", "faults", "rate_limits"})
            if unknown:
                raise ValueError(
                    f"unknown config key(s) {unknown}; known: ['faults', 'latency', 'rate_limits']"
                )
            faults = self.faults.config
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
            limits = self.rate_limits.config
            if "rate_limits" in data:
                spec = data["rate_limits"]
                if spec is not None and not isinstance(spec, dict):
                    raise ValueError("`rate_limits` must be an object or null")
                limits = RateLimitConfig.from_dict(spec) if spec is not None else None
            if "faults" in data:
                self.faults.set(faults)
            if "rate_limits" in data:
                self.rate_limits.set(limits)
        except (ValueError, TypeError) as exc:
            return error_reply(400, f"invalid mock config: {exc}", "invalid_request_error")
        return self._get_config(b"")


def _sampling(body: Mapping[str, Any]) -> tuple[int | None, float | None]:
    """The request's ``seed`` and ``temperature`` as the sampled mock judges read them (else None).

    Not validated: the other mock models ignore both, as they did before any model used them."""
    seed, temperature = body.get("seed"), body.get("temperature")
    if isinstance(seed, bool) or not isinstance(seed, int):
        seed = None
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        return seed, None
    return seed, (float(temperature) if math.isfinite(temperature) else None)


def _echo(reply: Reply, headers: Mapping[str, str], target: str) -> Reply:
    """``reply`` with its error message followed by the request's URL and headers, as some gateways'
    debug errors do: what a client must never copy into a record, a log line or an error line."""
    try:
        payload = json.loads(reply.body)
        payload["error"]["message"] += f" request: POST {target} headers: {json.dumps(dict(headers))}"
    except (ValueError, KeyError, TypeError):
        return reply
    return json_reply(reply.status, payload, headers=reply.headers)
