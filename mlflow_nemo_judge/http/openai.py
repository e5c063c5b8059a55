"""Async calls to OpenAI-compatible ``/chat/completions`` and ``/completions`` endpoints.

One :class:`OpenAIClient` sends through a shared ``httpx.AsyncBaseTransport`` (or an
``httpx.AsyncClient``) and adds what an evaluation over many
thousands of items needs: a concurrency bound, retries with jittered exponential backoff that honour
``Retry-After``, a persistent response cache, and usage counting. The API key travels per request to its
own endpoint only and never reaches logs, reprs or error messages.

The hot path builds an ``httpx.Request`` and awaits the transport's public
``handle_async_request`` directly (see :mod:`mlflow_nemo_judge.http.transport` for why); tests pass
``httpx.MockTransport`` and run exactly that code.

The concurrency bound is per endpoint (origin + model id) and adapts to 429s (AIMD):
:mod:`mlflow_nemo_judge.http.limits`.

Retry timing (jittered exponential backoff, ``Retry-After``/``retry-after-ms``) is
:mod:`mlflow_nemo_judge.http.retry`, shared with the NeMo client; endpoint health (when to stop calling
an endpoint that keeps failing) is :mod:`mlflow_nemo_judge.http.health`; the pure wire format (URLs,
headers, bodies, reading replies and error messages) is :mod:`mlflow_nemo_judge.http.wire`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from mlflow_nemo_judge.config.secrets import redact_url
from mlflow_nemo_judge.errors import EndpointError
from mlflow_nemo_judge.http.cache import ResponseCache
from mlflow_nemo_judge.http.health import FATAL_STATUSES, EndpointHealth, EndpointUnhealthy, HealthPolicy
from mlflow_nemo_judge.http.limits import AdaptiveLimit, AimdPolicy, EndpointKey, EndpointLimits
from mlflow_nemo_judge.http.retry import (
    RETRYABLE_STATUSES,
    backoff_delay,
    is_retryable_status,
    retry_after_seconds,
)
from mlflow_nemo_judge.http.wire import (
    CallResult,
    Endpoint,
    Kind,
    dumps,
    endpoint_secrets,
    extract,
    has_tool_calls,
    hide,
    http_timeout,
    illegal_header,
    provider_message,
    request_headers,
    request_url,
    resolve_url,
    truncate,
    well_formed,
)
from mlflow_nemo_judge.results import Usage

log = logging.getLogger(__name__)

__all__ = [
    "RETRYABLE_STATUSES",
    "CallResult",
    "Endpoint",
    "HTTPPoster",
    "Kind",
    "OpenAIClient",
    "endpoint_secrets",
    "resolve_url",
]


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


_HeadersKey = tuple[httpx.URL, str, str | None, tuple[tuple[str, str], ...] | None]


def _headers_key(url: httpx.URL, endpoint: Endpoint) -> _HeadersKey:
    headers = tuple(endpoint.headers.items()) if endpoint.headers else None
    return url, endpoint.url, endpoint.api_key, headers


@dataclass
class _Prepared:
    """What a request to one endpoint needs besides its body, built once per endpoint."""

    headers: httpx.Headers
    secrets: tuple[str, ...]
    shown_url: str  # the resolved URL with its credentials masked: for logs and errors


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
        health: HealthPolicy | None = None,
        second_round: bool = True,
        aimd: AimdPolicy | None = None,
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
        self._prepared: dict[_HeadersKey, _Prepared] = {}
        # Health per (URL, model id); see mlflow_nemo_judge.http.health. Default policy: the env knobs.
        self.health_policy = health if health is not None else HealthPolicy.from_settings()
        self._health: dict[tuple[str, str], EndpointHealth] = {}
        self.second_round = second_round
        self.usage = usage
        self.cache = cache
        self.max_concurrency = max_concurrency  # each endpoint's default maximum (see .limits)
        self.aimd = aimd if aimd is not None else AimdPolicy.from_settings()
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._rng = random.Random(rng_seed)
        self._sleep = sleep
        self._limits = EndpointLimits(max_concurrency, self.aimd, sleep=sleep, pause_cap=backoff_max)

    def limit(self, url: httpx.URL, endpoint: Endpoint) -> AdaptiveLimit:
        """The adaptive concurrency limit of ``endpoint`` (``url`` as resolved for the request)."""
        return self._limits.get(url, endpoint.model_id, endpoint.max_concurrency)

    @property
    def limits(self) -> dict[EndpointKey, AdaptiveLimit]:
        """The endpoints' limits on the current event loop, for reports and tests."""
        return self._limits.current()

    def _prepare(self, url: httpx.URL, endpoint: Endpoint) -> _Prepared:
        key = _headers_key(url, endpoint)
        prepared = self._prepared.get(key)
        if prepared is None:
            if len(self._prepared) >= 256:
                self._prepared.clear()
            prepared = _Prepared(
                request_headers(url, endpoint, transport=self._transport is not None),
                endpoint_secrets(endpoint),
                redact_url(str(url)),
            )
            self._prepared[key] = prepared
        return prepared

    def health(self, url: str, model_id: str) -> EndpointHealth:
        """The health record of one endpoint (``url`` as resolved for the request)."""
        key = (url, model_id)
        rec = self._health.get(key)
        if rec is None:
            rec = self._health[key] = EndpointHealth(redact_url(url), model_id, self.health_policy)
        return rec

    async def _post(
        self, url: httpx.URL, content: bytes, headers: httpx.Headers, secs: float
    ) -> tuple[int, httpx.Headers, bytes]:
        """One POST: (status, response headers, decoded body). Raises httpx's exceptions."""
        timeout, extensions = http_timeout(secs)
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
        text, finish, prompt_tokens, completion_tokens = extract(data)
        if not cached:
            # Tokens count what this run spent; a cache hit spent nothing.
            self.usage.prompt_tokens += prompt_tokens
            self.usage.completion_tokens += completion_tokens
        # Output-quality counters describe the answers the run used, cached or not.
        if finish == "length":
            self.usage.truncated_outputs += 1
        if (text is None or not text.strip()) and not has_tool_calls(data):
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

        Raises :class:`EndpointError` at once on a non-retryable status (400, 422, …) and, on transient
        failures, after ``max_retries`` retries and then (``second_round``) a cool-down and one more
        round of retries. Raises :class:`EndpointUnhealthy` when the endpoint refuses us (401/403/404),
        cannot be called as configured (bad scheme, a header with CR/LF) or keeps failing (see
        :mod:`.health`). Error texts carry no secret of the endpoint. ``asyncio.CancelledError``
        propagates.
        """
        try:
            url, target_url = request_url(endpoint.url, kind)
        except (httpx.InvalidURL, ValueError) as exc:
            secrets = endpoint_secrets(endpoint)
            raise EndpointUnhealthy(endpoint.url, hide(f"the URL cannot be used: {exc}", secrets)) from None
        health = self.health(url, endpoint.model_id)
        health.check()
        retries_allowed = self.max_retries if max_retries is None else max_retries
        secs = self.timeout if timeout is None else timeout
        payload = {"model": endpoint.model_id, **body}
        cache = self.cache if use_cache and self.cache is not None and self.cache.enabled else None

        key: str | None = None
        if cache is not None:
            key = cache.key(url, endpoint.model_id, body, endpoint.headers)
            hit = cache.get(key)
            # Checked before taking a slot: a hit costs no HTTP and must not wait behind in-flight calls.
            if hit is not None and well_formed(hit):
                self.usage.cache_hits += 1
                log.debug("cache hit %s model=%s", redact_url(url), endpoint.model_id)
                return self._result(hit, cached=True, attempts=0)

        bad_header = illegal_header(endpoint)
        if bad_header is not None:
            raise health.condemn(f"header {bad_header!r} holds a CR, LF or NUL character and cannot be sent")
        prepared = self._prepare(target_url, endpoint)
        shown, secrets = prepared.shown_url, prepared.secrets
        limit = self.limit(target_url, endpoint)
        content = dumps(payload)  # once, not per attempt

        attempts = 0
        round_attempts = 0  # attempts in the current round (the main one, then the second)
        second = False
        waited_until: float | None = None  # loop time the last Retry-After sleep lasted until
        while True:
            health.check()  # another call may have condemned the endpoint meanwhile
            attempts += 1
            round_attempts += 1
            self.usage.requests += 1
            status: int | None = None
            retry_after: float | None = None
            last_exc: BaseException | None = None
            try:
                # The slot is held only for the request itself, never during backoff sleeps.
                epoch = await limit.acquire(waited_until=waited_until)
                try:
                    # Checked again with the slot: calls queued behind the slot while another call
                    # condemned the endpoint must not send.
                    health.check()
                    status, response_headers, response_body = await self._post(
                        target_url, content, prepared.headers, secs
                    )
                finally:
                    limit.release()
            except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
                # A bad scheme or a request that cannot be framed will not fix itself: retrying (or
                # scoring every sample NaN) only delays the error.
                self.usage.failed_requests += 1
                raise health.condemn(hide(f"{type(exc).__name__}: {exc}", secrets)) from None
            except (httpx.TransportError, httpx.DecodingError) as exc:
                # TransportError covers TimeoutException, connect errors, dropped connections and
                # RemoteProtocolError; DecodingError is a garbled (e.g. bad gzip) body. All are worth
                # another try.
                failure = hide(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, secrets)
                last_exc = exc
                log.debug(
                    "POST %s model=%s attempt=%d failed: %s",
                    shown,
                    endpoint.model_id,
                    attempts,
                    type(exc).__name__,
                )
                health.attempt_failed(failure, None, hard=True)
            else:
                log.debug("POST %s model=%s attempt=%d status=%d", shown, endpoint.model_id, attempts, status)
                if 200 <= status < 300:
                    try:
                        data = json.loads(response_body)
                    except ValueError:
                        data = None
                    if well_formed(data):
                        if key is not None and cache is not None:
                            cache.put(key, data)  # a reply without text is not stored (see cache)
                        limit.succeeded()
                        health.call_done(failed=False)
                        return self._result(data, cached=False, attempts=attempts)
                # Failures only: a response object gives the provider's text with httpx's decoding.
                response = httpx.Response(status, headers=response_headers, content=response_body)
                detail = truncate(hide(provider_message(response), secrets))
                if 200 <= status < 300:
                    failure = f"HTTP {status} with a malformed body (no JSON 'choices'): {detail}"
                else:
                    failure = f"HTTP {status}: {detail}"
                    if status in FATAL_STATUSES:
                        self.usage.failed_requests += 1
                        raise health.refused(status, failure)
                    if not is_retryable_status(status):
                        self.usage.failed_requests += 1
                        health.attempt_failed(failure, status, hard=True)
                        health.call_done(failed=True, failure=failure, status=status)
                        raise EndpointError(url, failure, status)
                    retry_after = retry_after_seconds(response_headers)
                    if status == 429:
                        limit.rate_limited(epoch, retry_after)
                # A 429 is the endpoint pacing us, not failing: it does not count towards "never worked".
                health.attempt_failed(failure, status, hard=status != 429)

            retry_index = round_attempts - 1
            if retry_index >= retries_allowed:
                if self.second_round and not second and retries_allowed > 0:
                    # The second pass: a call whose retries ran out on transient failures waits one
                    # backoff step longer than its last retry, then gets one more round. It holds no
                    # HTTP slot meanwhile, and it is this call's own wait, so nothing else waits on it.
                    second, round_attempts, waited_until = True, 0, None
                    delay = self.backoff_delay(retries_allowed)
                    self.usage.second_rounds += 1
                    log.debug(
                        "second round for %s model=%s in %.2fs after %d attempts; last failure: %s",
                        shown,
                        endpoint.model_id,
                        delay,
                        attempts,
                        failure,
                    )
                    await self._sleep(delay)
                    continue
                self.usage.failed_requests += 1
                message = f"failed after {attempts} attempt(s); last failure: {failure}"
                health.call_done(failed=True, failure=message, status=status)
                error = EndpointError(url, message, status)
                if last_exc is not None:
                    raise error from last_exc
                raise error
            delay = self.backoff_delay(retry_index, retry_after)
            waited_until = asyncio.get_running_loop().time() + delay if retry_after is not None else None
            self.usage.retries += 1
            log.debug(
                "retrying %s model=%s in %.2fs (retry %d/%d)",
                shown,
                endpoint.model_id,
                delay,
                retry_index + 1,
                retries_allowed,
            )
            await self._sleep(delay)
