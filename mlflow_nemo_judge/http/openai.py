"""Async calls to OpenAI-compatible ``/chat/completions`` and ``/completions`` endpoints.

One :class:`OpenAIClient` sends through a shared ``httpx.AsyncBaseTransport`` (or an
``httpx.AsyncClient``) and adds what an evaluation over many
thousands of items needs: a concurrency bound, retries with jittered exponential backoff that honour
``Retry-After``, a persistent response cache, and usage counting. The API key travels per request to its
own endpoint only and never reaches logs, reprs or error messages.

The hot path builds an ``httpx.Request`` and awaits the transport's public
``handle_async_request`` directly (see :mod:`mlflow_nemo_judge.http.transport` for why); tests pass
``httpx.MockTransport`` and run exactly that code.

Retry timing (jittered exponential backoff, ``Retry-After``/``retry-after-ms``) is
:mod:`mlflow_nemo_judge.http.retry`, shared with the NeMo client.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

from mlflow_nemo_judge.config.secrets import redact_text
from mlflow_nemo_judge.errors import EndpointError
from mlflow_nemo_judge.http.cache import ResponseCache
from mlflow_nemo_judge.http.retry import (
    RETRYABLE_STATUSES,
    backoff_delay,
    is_retryable_status,
    retry_after_seconds,
)
from mlflow_nemo_judge.http.transport import USER_AGENT
from mlflow_nemo_judge.results import Usage

log = logging.getLogger(__name__)

Kind = Literal["chat", "completions"]

__all__ = ["RETRYABLE_STATUSES", "CallResult", "Endpoint", "HTTPPoster", "OpenAIClient", "resolve_url"]
_MESSAGE_LIMIT = 300


@dataclass(frozen=True)
class Endpoint:
    """Where to send a request. ``url`` is a full ``…/chat/completions``/``…/completions`` URL or a base
    ``…/v1`` URL (see :func:`resolve_url`)."""

    url: str
    model_id: str
    # repr=False keeps secrets out of logs and tracebacks that print the endpoint.
    api_key: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] | None = field(default=None, repr=False)


@dataclass
class CallResult:
    """One model answer. ``text`` is ``choices[0].message.content`` (chat; ``reasoning_content`` is
    ignored) or ``choices[0].text`` (completions)."""

    text: str | None
    finish_reason: str | None
    raw: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    attempts: int


@functools.lru_cache(maxsize=256)
def resolve_url(url: str, kind: Kind) -> str:
    """Keep a URL already ending in ``/chat/completions`` or ``/completions``; otherwise treat it as a
    base URL (``…/v1`` or ``…/v1/``) and append the path for ``kind``. Query strings (e.g. Azure's
    ``api-version``) are preserved."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    if not (path.endswith("/chat/completions") or path.endswith("/completions")):
        path = path + ("/chat/completions" if kind == "chat" else "/completions")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


@functools.lru_cache(maxsize=256)
def _request_url(url: str, kind: Kind) -> tuple[str, httpx.URL]:
    """The resolved URL as text (messages, cache keys) and parsed once: httpx parses a ``str`` URL on
    every request (~25 us, a visible share of a zero-latency run) but only copies a URL object."""
    resolved = resolve_url(url, kind)
    return resolved, httpx.URL(resolved)


@functools.lru_cache(maxsize=64)
def _http_timeout(secs: float) -> tuple[httpx.Timeout, dict[str, Any]]:
    """The per-request timeout, as ``httpx.Timeout`` (client path) and as the request extension every
    httpx transport reads (``request.extensions["timeout"]``: connect/read/write/pool seconds)."""
    timeout = httpx.Timeout(secs, connect=min(10.0, secs))
    return timeout, {"timeout": timeout.as_dict()}


def _dumps(payload: dict[str, Any]) -> bytes:
    """The request body as httpx's ``json=`` encodes it (compact, UTF-8, NaN/Infinity rejected)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


# What httpx.AsyncClient would add to every request; a transport adds nothing (Host and Content-Length
# come from httpx.Request). Only encodings httpx decodes without optional packages are advertised.
_TRANSPORT_HEADERS = (
    ("Accept", "*/*"),
    ("Accept-Encoding", "gzip, deflate"),
    ("Connection", "keep-alive"),
    ("User-Agent", USER_AGENT),
)
_JSON = ("Content-Type", "application/json")


def _redact(text: str, secret: str | None) -> str:
    # Providers sometimes echo the (possibly partial) key in auth errors; drop any verbatim occurrence.
    return redact_text(text, [secret]) if secret else text


def _truncate(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _provider_message(response: httpx.Response) -> str:
    """The provider's own explanation: ``error.message``, ``error`` (str), ``detail``, ``message``, or
    the body text."""
    try:
        data = response.json()
    except ValueError:
        data = None
    msg: Any = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            msg = err.get("message") or err.get("msg") or err
        elif err:
            msg = err
        if not msg:
            msg = data.get("detail") or data.get("message")
    if msg is None or msg == "":
        msg = response.text
    if isinstance(msg, str):
        return msg
    # FastAPI-style 422 detail is a list of dicts; show it compactly rather than as a Python repr.
    return json.dumps(msg, ensure_ascii=False, default=str)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _content_text(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        # Some servers return content as a list of parts ({"type": "text", "text": ...}); join the text.
        texts: list[str] = [
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
        return "".join(texts)
    return str(content)


def _extract(data: dict[str, Any]) -> tuple[str | None, str | None, int, int]:
    """(text, finish_reason, prompt_tokens, completion_tokens) from a well-formed response."""
    choice = data["choices"][0]
    if not isinstance(choice, dict):
        return None, None, 0, 0
    # Decide by shape rather than by the requested kind, so a base URL that really points at the other
    # API still yields its text.
    message = choice.get("message")
    text = (
        _content_text(message.get("content"))
        if isinstance(message, dict)
        else _content_text(choice.get("text"))
    )
    finish = choice.get("finish_reason")
    raw_usage = data.get("usage")
    usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
    return (
        text,
        finish if isinstance(finish, str) else None,
        _int(usage.get("prompt_tokens")),
        _int(usage.get("completion_tokens")),
    )


def _well_formed(data: Any) -> bool:
    choices = data.get("choices") if isinstance(data, dict) else None
    return isinstance(choices, list) and len(choices) > 0


class HTTPPoster(Protocol):
    """An HTTP client ``OpenAIClient`` can use instead of a transport: the ``post`` of
    ``httpx.AsyncClient`` (in practice one), returning a response whose body is read."""

    async def post(
        self,
        url: httpx.URL | str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response: ...


_HeadersKey = tuple[httpx.URL, str | None, tuple[tuple[str, str], ...] | None]


def _headers_key(url: httpx.URL, endpoint: Endpoint) -> _HeadersKey:
    return url, endpoint.api_key, tuple(endpoint.headers.items()) if endpoint.headers else None


def _request_headers(url: httpx.URL, endpoint: Endpoint, *, transport: bool) -> httpx.Headers:
    """Headers for a request to ``endpoint`` at ``url``: for a transport, ``Host`` and the defaults
    ``httpx.AsyncClient`` would add; then ``Content-Type``, the endpoint's own headers (which win,
    case-insensitively), and the key. ``Content-Length`` is set per request."""
    headers = httpx.Headers((("Host", url.netloc.decode("ascii")), *_TRANSPORT_HEADERS) if transport else ())
    headers[_JSON[0]] = _JSON[1]
    if endpoint.headers:
        headers.update(endpoint.headers)
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    return headers


class OpenAIClient:
    """Bounded-concurrency, retrying, caching caller of OpenAI-compatible endpoints.

    ``http`` is an ``httpx.AsyncBaseTransport`` (what the engine passes: requests go to its
    ``handle_async_request``) or an ``httpx.AsyncClient`` (requests go through its public ``post``; its
    default headers, timeout and proxies apply). It is shared and owned by the caller (connection pooling
    across endpoints); this class never sets default headers on it, so one endpoint's key is never sent
    to another.
    """

    def __init__(
        self,
        http: httpx.AsyncBaseTransport | HTTPPoster,
        *,
        usage: Usage,
        cache: ResponseCache | None = None,
        max_concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 60.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        rng_seed: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if backoff_base < 0 or backoff_max < 0:
            raise ValueError("backoff_base and backoff_max must be >= 0")
        self._transport: httpx.AsyncBaseTransport | None = None
        self._poster: HTTPPoster | None = None
        if isinstance(http, httpx.AsyncBaseTransport):
            self._transport = http
        else:
            self._poster = http
        # Headers per (api key, endpoint headers), built once: httpx.Request copies an httpx.Headers
        # as is, while a dict would be re-validated and re-encoded on every request.
        self._headers: dict[_HeadersKey, httpx.Headers] = {}
        self.usage = usage
        self.cache = cache
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._rng = random.Random(rng_seed)
        self._sleep = sleep
        # The semaphore is made per event loop: asyncio primitives bind to the loop that first waits on
        # them, and a client may be reused across separate asyncio.run() calls.
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:
            self._sem = asyncio.Semaphore(self.max_concurrency)
            self._sem_loop = loop
        return self._sem

    def _headers_for(self, url: httpx.URL, endpoint: Endpoint) -> httpx.Headers:
        key = _headers_key(url, endpoint)
        headers = self._headers.get(key)
        if headers is None:
            if len(self._headers) >= 256:
                self._headers.clear()
            headers = _request_headers(url, endpoint, transport=self._transport is not None)
            self._headers[key] = headers
        return headers

    async def _post(
        self, url: httpx.URL, content: bytes, headers: httpx.Headers, secs: float
    ) -> tuple[int, httpx.Headers, bytes]:
        """One POST: (status, response headers, decoded body). Raises httpx's exceptions."""
        timeout, extensions = _http_timeout(secs)
        transport = self._transport
        if transport is None:
            assert self._poster is not None
            response = await self._poster.post(url, content=content, headers=headers, timeout=timeout)
            return response.status_code, response.headers, response.content
        # What httpx.Request(content=...) builds, without re-deriving the fixed headers every time: the
        # body as an in-memory stream, Host in the cached headers, the length set here, the body "read"
        # (request.content) as transports and MockTransport handlers expect.
        request = httpx.Request(
            "POST", url, headers=headers, stream=httpx.ByteStream(content), extensions=extensions
        )
        request.headers["Content-Length"] = str(len(content))
        request.read()
        response = await transport.handle_async_request(request)
        try:
            body = await response.aread()  # decodes Content-Encoding
        finally:
            await response.aclose()
        return response.status_code, response.headers, body

    def backoff_delay(self, retry_index: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry_index`` (0-based); see :mod:`.retry`."""
        return backoff_delay(
            retry_index, base=self.backoff_base, cap=self.backoff_max, retry_after=retry_after, rng=self._rng
        )

    def _result(self, data: dict[str, Any], *, cached: bool, attempts: int) -> CallResult:
        text, finish, prompt_tokens, completion_tokens = _extract(data)
        if not cached:
            # Tokens count what this run spent; a cache hit spent nothing.
            self.usage.prompt_tokens += prompt_tokens
            self.usage.completion_tokens += completion_tokens
        # Output-quality counters describe the answers the run used, cached or not.
        if finish == "length":
            self.usage.truncated_outputs += 1
        if text is None or not text.strip():
            self.usage.empty_outputs += 1
        return CallResult(
            text=text,
            finish_reason=finish,
            raw=data,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached=cached,
            attempts=attempts,
        )

    async def call(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        *,
        kind: Kind = "chat",
        timeout: float | None = None,
        max_retries: int | None = None,
        use_cache: bool = True,
    ) -> CallResult:
        """POST ``{"model": endpoint.model_id, **body}`` and return the first choice.

        Raises :class:`EndpointError` at once on a non-retryable status (400, 401, 403, 404, 422, …)
        and after ``max_retries`` retries on transient failures. ``asyncio.CancelledError`` propagates.
        """
        url, request_url = _request_url(endpoint.url, kind)
        retries_allowed = self.max_retries if max_retries is None else max_retries
        secs = self.timeout if timeout is None else timeout
        payload = {"model": endpoint.model_id, **body}
        cache = self.cache if use_cache and self.cache is not None and self.cache.enabled else None

        key: str | None = None
        if cache is not None:
            key = cache.key(url, endpoint.model_id, body)
            hit = cache.get(key)
            # Checked before taking a slot: a hit costs no HTTP and must not wait behind in-flight calls.
            if hit is not None and _well_formed(hit):
                self.usage.cache_hits += 1
                log.debug("cache hit %s model=%s", url, endpoint.model_id)
                return self._result(hit, cached=True, attempts=0)

        headers = self._headers_for(request_url, endpoint)
        content = _dumps(payload)  # once, not per attempt

        attempts = 0
        while True:
            attempts += 1
            self.usage.requests += 1
            status: int | None = None
            retry_after: float | None = None
            last_exc: BaseException | None = None
            try:
                # The slot is held only for the request itself, never during backoff sleeps.
                async with self._semaphore():
                    status, response_headers, response_body = await self._post(
                        request_url, content, headers, secs
                    )
            except httpx.UnsupportedProtocol as exc:
                # A bad scheme in the configured URL will not fix itself; retrying only delays the error.
                self.usage.failed_requests += 1
                raise EndpointError(url, _redact(f"{type(exc).__name__}: {exc}", endpoint.api_key)) from exc
            except (httpx.TransportError, httpx.DecodingError) as exc:
                # TransportError covers TimeoutException, connect errors, dropped connections and
                # RemoteProtocolError; DecodingError is a garbled (e.g. bad gzip) body. All are worth
                # another try.
                failure = _redact(
                    f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, endpoint.api_key
                )
                last_exc = exc
                log.debug(
                    "POST %s model=%s attempt=%d failed: %s",
                    url,
                    endpoint.model_id,
                    attempts,
                    type(exc).__name__,
                )
            else:
                log.debug("POST %s model=%s attempt=%d status=%d", url, endpoint.model_id, attempts, status)
                if 200 <= status < 300:
                    try:
                        data = json.loads(response_body)
                    except ValueError:
                        data = None
                    if _well_formed(data):
                        if key is not None and cache is not None:
                            cache.put(key, data)
                        return self._result(data, cached=False, attempts=attempts)
                # Failures only: a response object gives the provider's text with httpx's decoding.
                response = httpx.Response(status, headers=response_headers, content=response_body)
                detail = _truncate(_redact(_provider_message(response), endpoint.api_key))
                if 200 <= status < 300:
                    failure = f"HTTP {status} with a malformed body (no JSON 'choices'): {detail}"
                else:
                    failure = f"HTTP {status}: {detail}"
                    if not is_retryable_status(status):
                        self.usage.failed_requests += 1
                        raise EndpointError(url, failure, status)
                    retry_after = retry_after_seconds(response_headers)

            retry_index = attempts - 1
            if retry_index >= retries_allowed:
                self.usage.failed_requests += 1
                error = EndpointError(
                    url, f"failed after {attempts} attempt(s); last failure: {failure}", status
                )
                if last_exc is not None:
                    raise error from last_exc
                raise error
            delay = self.backoff_delay(retry_index, retry_after)
            self.usage.retries += 1
            log.debug(
                "retrying %s model=%s in %.2fs (retry %d/%d)",
                url,
                endpoint.model_id,
                delay,
                retry_index + 1,
                retries_allowed,
            )
            await self._sleep(delay)
