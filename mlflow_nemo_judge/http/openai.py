"""Async calls to OpenAI-compatible ``/chat/completions`` and ``/completions`` endpoints.

One :class:`OpenAIClient` wraps a shared ``httpx.AsyncClient`` and adds what an evaluation over many
thousands of items needs: a concurrency bound, retries with jittered exponential backoff that honour
``Retry-After``, a persistent response cache, and usage counting. The API key travels per request to its
own endpoint only and never reaches logs, reprs or error messages.

Backoff before retry ``n`` (``n`` = 0 for the first retry)::

    delay = min(backoff_max, backoff_base * 2**n) * uniform(0.5, 1.0)

i.e. exponential growth capped at ``backoff_max`` with "equal jitter" over the upper half of the window:
the jitter de-synchronises many workers that hit a rate limit together, while the 0.5 floor keeps the
backoff meaningfully exponential (full jitter over ``[0, cap]`` can retry almost at once). When the
server says how long to wait (``retry-after-ms`` or ``Retry-After`` as seconds or an HTTP-date) that
delay is used as given, capped at ``backoff_max``.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import functools
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

from mlflow_nemo_judge.config.secrets import redact_text
from mlflow_nemo_judge.errors import EndpointError
from mlflow_nemo_judge.http.cache import ResponseCache
from mlflow_nemo_judge.results import Usage

log = logging.getLogger(__name__)

Kind = Literal["chat", "completions"]

# 408 timeout, 409 conflict (some gateways use it for transient lock contention), 429 rate limit;
# every 5xx is retried as well.
RETRYABLE_STATUSES = frozenset({408, 409, 429})
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


@functools.lru_cache(maxsize=64)
def _http_timeout(secs: float) -> httpx.Timeout:
    return httpx.Timeout(secs, connect=min(10.0, secs))


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
    if not isinstance(msg, str):
        # FastAPI-style 422 detail is a list of dicts; show it compactly rather than as a Python repr.
        msg = json.dumps(msg, ensure_ascii=False, default=str)
    return msg


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``Retry-After``; None if absent or
    unparseable."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = None
        if value is not None and value == value:  # not NaN
            return max(0.0, value)
    ra = headers.get("retry-after")
    if ra is None:
        return None
    ra = ra.strip()
    try:
        value = float(ra)
    except ValueError:
        pass
    else:
        return max(0.0, value) if value == value else None
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:  # older Pythons return None instead of raising
        return None
    if when.tzinfo is None:
        # HTTP-dates are GMT by definition; a naive result would otherwise be read as local time.
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - time.time())


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
    """What the client needs of an HTTP client: ``httpx.AsyncClient`` or the engine's sharded one."""

    async def post(self, url: str, **kwargs: Any) -> httpx.Response: ...


class OpenAIClient:
    """Bounded-concurrency, retrying, caching caller of OpenAI-compatible endpoints.

    ``http`` is shared and owned by the caller (connection pooling across endpoints); this class never
    sets default headers on it, so one endpoint's key is never sent to another.
    """

    def __init__(
        self,
        http: HTTPPoster,
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
        self._http = http
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

    def backoff_delay(self, retry_index: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry_index`` (0-based); see the module docstring."""
        if retry_after is not None:
            return min(self.backoff_max, retry_after)
        # Exponent capped so a huge max_retries cannot overflow the float.
        window = min(self.backoff_max, self.backoff_base * 2.0 ** min(retry_index, 60))
        return window * self._rng.uniform(0.5, 1.0)

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
        url = resolve_url(endpoint.url, kind)
        retries_allowed = self.max_retries if max_retries is None else max_retries
        secs = self.timeout if timeout is None else timeout
        http_timeout = _http_timeout(secs)
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

        headers: dict[str, str] = {}
        if endpoint.headers:
            headers.update(endpoint.headers)
        if endpoint.api_key:
            headers["Authorization"] = f"Bearer {endpoint.api_key}"

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
                    response = await self._http.post(url, json=payload, headers=headers, timeout=http_timeout)
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
                status = response.status_code
                log.debug("POST %s model=%s attempt=%d status=%d", url, endpoint.model_id, attempts, status)
                if 200 <= status < 300:
                    try:
                        data = response.json()
                    except ValueError:
                        data = None
                    if _well_formed(data):
                        if key is not None and cache is not None:
                            cache.put(key, data)
                        return self._result(data, cached=False, attempts=attempts)
                    detail = _truncate(_redact(_provider_message(response), endpoint.api_key))
                    failure = f"HTTP {status} with a malformed body (no JSON 'choices'): {detail}"
                else:
                    detail = _truncate(_redact(_provider_message(response), endpoint.api_key))
                    failure = f"HTTP {status}: {detail}"
                    if not (status in RETRYABLE_STATUSES or status >= 500):
                        self.usage.failed_requests += 1
                        raise EndpointError(url, failure, status)
                    retry_after = _retry_after(response.headers)

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
