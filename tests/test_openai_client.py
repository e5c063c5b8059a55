"""OpenAIClient against httpx.MockTransport: requests, retries, errors, concurrency, cache, usage.

Every test runs twice (the autouse ``http_mode`` fixture): with the MockTransport handed to OpenAIClient
directly, as the engine hands it its transport (the production path: ``handle_async_request``), and
wrapped in an ``httpx.AsyncClient``, which callers and other tests may pass instead."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlflow_nemo_judge.errors import EndpointError
from mlflow_nemo_judge.http.cache import CACHE_FILE_NAME, ResponseCache
from mlflow_nemo_judge.http.health import EndpointUnhealthy, HealthPolicy
from mlflow_nemo_judge.http.openai import CallResult, Endpoint, OpenAIClient, resolve_url
from mlflow_nemo_judge.http.retry import backoff_delay, is_retryable_status, retry_after_seconds
from mlflow_nemo_judge.http.transport import USER_AGENT
from mlflow_nemo_judge.results import Usage

SECRET = "sk-test-SECRET-0123456789"
CHAT_URL = "http://judge.local/v1/chat/completions"
BODY: dict[str, Any] = {
    "messages": [{"role": "user", "content": "Rate this."}],
    "temperature": 0.0,
    "max_tokens": 16,
}

# The two handler shapes httpx.MockTransport accepts: plain, or async (to simulate slow servers).
Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


def chat_json(
    text: str | None = "4", finish: str = "stop", prompt: int = 11, completion: int = 3
) -> dict[str, Any]:
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "finish_reason": finish,
                "message": {"role": "assistant", "content": text, "reasoning_content": "thinking"},
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


class Sleeps:
    """Replacement for asyncio.sleep that records the requested delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


MODE = {"http": "transport"}


@pytest.fixture(autouse=True, params=["transport", "client"])
def http_mode(request: pytest.FixtureRequest) -> str:
    MODE["http"] = request.param
    return str(request.param)


@asynccontextmanager
async def mock_http(handler: Handler) -> AsyncIterator[httpx.AsyncBaseTransport | httpx.AsyncClient]:
    """The MockTransport itself, or an AsyncClient around it, per the test's ``http_mode``."""
    transport = httpx.MockTransport(handler)
    if MODE["http"] == "transport":
        yield transport
        await transport.aclose()
    else:
        async with httpx.AsyncClient(transport=transport) as http:
            yield http


@asynccontextmanager
async def make_client(
    handler: Handler, *, usage: Usage | None = None, sleeps: Sleeps | None = None, **kw: Any
) -> AsyncIterator[OpenAIClient]:
    kw.setdefault("second_round", False)  # the second round has its own tests (test_second_pass.py)
    async with mock_http(handler) as http:
        yield OpenAIClient(http, usage=usage or Usage(), sleep=sleeps or Sleeps(), rng_seed=0, **kw)


def sequence(*steps: httpx.Response | Exception | dict[str, Any]) -> tuple[Handler, list[httpx.Request]]:
    """A handler that plays ``steps`` in order (the last one repeats) and records every request."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        step = steps[min(len(seen), len(steps) - 1)]
        seen.append(request)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, dict):
            return httpx.Response(200, json=step)
        return step

    return handler, seen


def call(
    handler: Handler, endpoint: Endpoint | None = None, body: dict[str, Any] | None = None, **kw: Any
) -> tuple[CallResult, Usage, Sleeps]:
    """Run one call on a fresh client; client kwargs and call kwargs are told apart by name."""
    call_kw = {k: kw.pop(k) for k in ("kind", "timeout", "max_retries", "use_cache") if k in kw}
    usage, sleeps = Usage(), Sleeps()

    async def main() -> CallResult:
        async with make_client(handler, usage=usage, sleeps=sleeps, **kw) as client:
            return await client.call(
                endpoint or Endpoint(CHAT_URL, "judge-model", api_key=SECRET),
                body if body is not None else BODY,
                **call_kw,
            )

    return asyncio.run(main()), usage, sleeps


def call_error(handler: Handler, **kw: Any) -> tuple[EndpointError, Usage, Sleeps]:
    usage, sleeps = Usage(), Sleeps()
    call_kw = {k: kw.pop(k) for k in ("kind", "timeout", "max_retries", "use_cache") if k in kw}

    async def main() -> None:
        async with make_client(handler, usage=usage, sleeps=sleeps, **kw) as client:
            await client.call(Endpoint(CHAT_URL, "judge-model", api_key=SECRET), BODY, **call_kw)

    with pytest.raises(EndpointError) as info:
        asyncio.run(main())
    return info.value, usage, sleeps


# -- requests ------------------------------------------------------------------------------------------


def test_chat_success_sends_model_params_and_key() -> None:
    handler, seen = sequence(chat_json("4"))
    result, usage, sleeps = call(handler)
    assert result.text == "4"  # reasoning_content ignored
    assert result.finish_reason == "stop"
    assert (result.prompt_tokens, result.completion_tokens) == (11, 3)
    assert result.cached is False and result.attempts == 1
    assert result.raw["id"] == "x"
    (req,) = seen
    assert req.method == "POST" and str(req.url) == CHAT_URL
    assert json.loads(req.content) == {"model": "judge-model", **BODY}
    assert req.headers["authorization"] == f"Bearer {SECRET}"
    assert usage.requests == 1 and usage.retries == 0 and usage.failed_requests == 0
    assert (usage.prompt_tokens, usage.completion_tokens) == (11, 3)
    assert usage.truncated_outputs == 0 and usage.empty_outputs == 0
    assert sleeps.delays == []


def test_completions_success_with_base_url() -> None:
    handler, seen = sequence(
        {
            "choices": [{"text": " yes", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1},
        }
    )
    result, usage, _ = call(
        handler,
        Endpoint("http://h:8000/v1/", "base-model"),
        {"prompt": "Q: ok?\nA:", "max_tokens": 1},
        kind="completions",
    )
    assert result.text == " yes"
    assert str(seen[0].url) == "http://h:8000/v1/completions"
    assert json.loads(seen[0].content) == {"model": "base-model", "prompt": "Q: ok?\nA:", "max_tokens": 1}
    assert usage.prompt_tokens == 5 and usage.completion_tokens == 1


def test_no_authorization_without_key_and_extra_headers_sent() -> None:
    handler, seen = sequence(chat_json())
    call(handler, Endpoint(CHAT_URL, "m", headers={"X-Team": "eval"}))
    assert "authorization" not in seen[0].headers
    assert seen[0].headers["x-team"] == "eval"


def test_url_userinfo_is_sent_as_basic_authorization_never_in_the_url() -> None:
    # Every transport alike: aiohttp would refuse userinfo beside an explicit header, httpcore drops it.
    handler, seen = sequence(chat_json())
    call(handler, Endpoint("http://us%40er:p%3Ass-9@judge.local/v1", "m"))
    assert str(seen[0].url) == "http://judge.local/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Basic " + base64.b64encode(b"us@er:p:ss-9").decode()


def test_key_only_sent_to_its_own_endpoint() -> None:
    handler, seen = sequence(chat_json())

    async def main() -> None:
        async with make_client(handler) as client:
            await client.call(Endpoint("http://a/v1", "m", api_key="key-a"), BODY)
            await client.call(Endpoint("http://b/v1", "m"), BODY)

    asyncio.run(main())
    assert seen[0].headers["authorization"] == "Bearer key-a"
    assert "authorization" not in seen[1].headers


def test_endpoint_repr_hides_secrets() -> None:
    ep = Endpoint(CHAT_URL, "m", api_key=SECRET, headers={"X-Api-Key": "hidden-too"})
    assert SECRET not in repr(ep) and "hidden-too" not in repr(ep)
    assert "judge.local" in repr(ep)


@pytest.mark.parametrize(
    ("url", "kind", "expected"),
    [
        ("http://h/v1", "chat", "http://h/v1/chat/completions"),
        ("http://h/v1/", "chat", "http://h/v1/chat/completions"),
        ("http://h/v1", "completions", "http://h/v1/completions"),
        ("http://h/v1/chat/completions", "chat", "http://h/v1/chat/completions"),
        ("http://h/v1/chat/completions/", "chat", "http://h/v1/chat/completions"),
        ("http://h/v1/completions", "completions", "http://h/v1/completions"),
        ("http://h/v1/completions", "chat", "http://h/v1/completions"),
        (
            "https://x.openai.azure.com/openai/deployments/d?api-version=2024-06-01",
            "chat",
            "https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-06-01",
        ),
    ],
)
def test_resolve_url(url: str, kind: Any, expected: str) -> None:
    assert resolve_url(url, kind) == expected


def test_request_on_the_transport_path_is_what_httpx_client_would_send(http_mode: str) -> None:
    """The transport gets a complete request: Host, the client defaults (User-Agent, Accept-Encoding…),
    Content-Type/Length matching the body; endpoint headers override defaults case-insensitively."""
    handler, seen = sequence(chat_json())
    ep = Endpoint(CHAT_URL + "?api-version=1", "m", api_key=SECRET, headers={"content-type": "application/x"})
    call(handler, ep, body={"messages": [{"role": "user", "content": "héllo"}]})
    call(handler, Endpoint("http://judge.local:8080/v1", "m"))
    first, second = seen
    assert first.headers["host"] == "judge.local" and second.headers["host"] == "judge.local:8080"
    assert str(first.url) == CHAT_URL + "?api-version=1"
    assert str(second.url) == "http://judge.local:8080/v1/chat/completions"
    assert first.headers.get_list("content-type") == ["application/x"]  # overridden, not duplicated
    assert second.headers["content-type"] == "application/json"
    assert first.headers["content-length"] == str(len(first.content))
    assert json.loads(first.content.decode("utf-8"))["messages"][0]["content"] == "héllo"
    assert first.content == json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "héllo"}]},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    if http_mode == "transport":
        # Nothing but OpenAIClient adds headers on this path (no AsyncClient in between).
        assert first.headers["user-agent"] == USER_AGENT
        assert "gzip" in first.headers["accept-encoding"]
        assert [k for k, _ in first.headers.multi_items()][0] == "host"
    else:
        assert first.headers["user-agent"].startswith("python-httpx/")  # the client's own defaults


def test_compressed_response_is_decoded() -> None:
    import gzip

    raw = gzip.compress(json.dumps(chat_json("zipped")).encode())

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=httpx.ByteStream(raw))

    result, _, _ = call(handler)
    assert result.text == "zipped"


def test_nan_in_body_is_rejected_before_any_request() -> None:
    handler, seen = sequence(chat_json())
    with pytest.raises(ValueError):
        call(handler, body={"messages": [], "temperature": float("nan")})
    assert seen == []


def test_timeout_passed_to_httpx() -> None:
    timeouts: list[dict[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"])
        return httpx.Response(200, json=chat_json())

    call(handler, timeout=5.0)
    call(handler, timeout=120.0)
    call(handler)  # client default 60
    assert timeouts[0] == {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}
    assert timeouts[1]["connect"] == 10.0 and timeouts[1]["read"] == 120.0
    assert timeouts[2]["connect"] == 10.0 and timeouts[2]["read"] == 60.0


# -- retries -------------------------------------------------------------------------------------------


def test_429_honours_retry_after_seconds() -> None:
    handler, seen = sequence(
        httpx.Response(429, headers={"Retry-After": "2.5"}, json={"error": {"message": "slow"}}), chat_json()
    )
    result, usage, sleeps = call(handler)
    assert result.text == "4" and result.attempts == 2
    assert sleeps.delays == [2.5]
    assert usage.requests == 2 and usage.retries == 1 and usage.failed_requests == 0
    assert len(seen) == 2


def test_retry_after_ms_http_date_and_cap() -> None:
    handler, _ = sequence(
        httpx.Response(429, headers={"retry-after-ms": "1500", "Retry-After": "9"}), chat_json()
    )
    assert call(handler)[2].delays == [1.5]

    handler, _ = sequence(httpx.Response(503, headers={"Retry-After": "3600"}), chat_json())
    assert call(handler, backoff_max=7.0)[2].delays == [7.0]

    # HTTP-dates: far in the future is capped; in the past means "now". (Exact parsing against an injected
    # clock is tested on retry.py below, so nothing here depends on how long the test takes.)
    future = email.utils.formatdate(time.time() + 86400, usegmt=True)
    handler, _ = sequence(httpx.Response(429, headers={"Retry-After": future}), chat_json())
    assert call(handler, backoff_max=7.0)[2].delays == [7.0]

    past = email.utils.formatdate(time.time() - 100, usegmt=True)
    handler, _ = sequence(httpx.Response(429, headers={"Retry-After": past}), chat_json())
    assert call(handler)[2].delays == [0.0]


def test_retry_after_parsing_against_an_injected_clock() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 20, usegmt=True)

    def parse(**headers: str) -> float | None:
        return retry_after_seconds(
            httpx.Headers({k.replace("_", "-"): v for k, v in headers.items()}), now=lambda: now
        )

    assert parse(Retry_After=date) == 20.0
    assert parse(Retry_After=email.utils.formatdate(now - 5, usegmt=True)) == 0.0
    assert parse(Retry_After="Wed, 21 Oct 2015 07:28:00") == 0.0  # naive date read as GMT, long past
    assert parse(Retry_After=" 3 ") == 3.0 and parse(Retry_After="-4") == 0.0
    assert parse(retry_after_ms="250", Retry_After="9") == 0.25  # the finer header wins
    assert parse(retry_after_ms="nan", Retry_After="9") == 9.0  # unusable ms falls back to Retry-After
    assert parse(Retry_After="soon") is None and parse(Retry_After="nan") is None and parse() is None


def test_backoff_policy_bounds_and_seeded_reproducibility() -> None:
    import random

    for n in range(12):
        window = min(4.0, 0.5 * 2**n)
        d = backoff_delay(n, base=0.5, cap=4.0, rng=random.Random(n))
        assert window / 2 <= d <= window
    assert backoff_delay(10**6, base=1.0, cap=30.0) <= 30.0  # no float overflow on huge retry counts
    assert backoff_delay(0, base=0.5, cap=4.0, retry_after=100.0) == 4.0
    assert backoff_delay(3, base=0.5, cap=4.0, retry_after=1.25) == 1.25
    seq = [backoff_delay(i, base=0.5, cap=30.0, rng=random.Random(7)) for i in range(5)]
    assert seq == [backoff_delay(i, base=0.5, cap=30.0, rng=random.Random(7)) for i in range(5)]
    assert [s for s in map(is_retryable_status, (408, 409, 429, 500, 503, 599))] == [True] * 6
    assert not any(map(is_retryable_status, (400, 401, 403, 404, 422)))


def test_retries_transient_failures_then_succeeds() -> None:
    req = httpx.Request("POST", CHAT_URL)
    handler, seen = sequence(
        httpx.Response(500, text="boom"),
        httpx.ReadTimeout("read timed out", request=req),
        httpx.ConnectError("connection refused", request=req),
        httpx.RemoteProtocolError("peer closed connection", request=req),
        httpx.Response(200, text="<html>gateway</html>"),
        httpx.Response(200, json={"object": "error", "message": "overloaded"}),
        httpx.Response(408),
        chat_json("ok"),
    )
    result, usage, sleeps = call(handler, max_retries=7, backoff_base=0.5, backoff_max=4.0)
    assert result.text == "ok" and result.attempts == 8
    assert usage.requests == 8 and usage.retries == 7 and usage.failed_requests == 0
    assert len(seen) == 8
    # Jittered exponential: retry n waits within [w/2, w], w = min(max, base * 2**n).
    for n, delay in enumerate(sleeps.delays):
        window = min(4.0, 0.5 * 2**n)
        assert window / 2 <= delay <= window


def test_backoff_is_reproducible_with_seed() -> None:
    handler, _ = sequence(httpx.Response(502), httpx.Response(502), chat_json())
    first = call(handler)[2].delays
    handler, _ = sequence(httpx.Response(502), httpx.Response(502), chat_json())
    assert call(handler)[2].delays == first


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_fail_at_once(status: int) -> None:
    payload = {
        "error": {
            "message": f"Incorrect API key provided: {SECRET}. " + "x" * 1000,
            "type": "invalid_request_error",
        }
    }
    handler, seen = sequence(httpx.Response(status, json=payload))
    err, usage, sleeps = call_error(handler)
    assert err.status == status
    assert str(status) in str(err) and "Incorrect API key provided" in str(err)
    assert SECRET not in str(err)
    assert len(str(err)) < 500  # provider text truncated
    assert err.url == CHAT_URL
    assert len(seen) == 1 and sleeps.delays == []
    assert usage.requests == 1 and usage.retries == 0 and usage.failed_requests == 1


def test_client_error_detail_field() -> None:
    handler, _ = sequence(
        httpx.Response(422, json={"detail": [{"loc": ["body", "messages"], "msg": "field required"}]})
    )
    err, _, _ = call_error(handler)
    assert "field required" in str(err) and "422" in str(err)
    handler, _ = sequence(httpx.Response(404, json={"detail": "Model not found"}))
    assert "Model not found" in str(call_error(handler)[0])


def test_retries_exhausted() -> None:
    handler, seen = sequence(httpx.Response(503, json={"error": {"message": "overloaded"}}))
    err, usage, sleeps = call_error(handler, max_retries=2)
    assert err.status == 503
    assert "3 attempt" in str(err) and "503" in str(err) and "overloaded" in str(err)
    assert SECRET not in str(err)
    assert len(seen) == 3 and len(sleeps.delays) == 2
    assert usage.requests == 3 and usage.retries == 2 and usage.failed_requests == 1


def test_retries_exhausted_on_exception_names_it() -> None:
    handler, _ = sequence(httpx.ConnectError("refused", request=httpx.Request("POST", CHAT_URL)))
    err, usage, _ = call_error(handler, max_retries=1)
    assert "ConnectError" in str(err) and "2 attempt" in str(err)
    assert err.status is None
    assert isinstance(err.__cause__, httpx.ConnectError)
    assert usage.failed_requests == 1


def test_per_call_max_retries_override() -> None:
    handler, seen = sequence(httpx.Response(500))
    _, usage, _ = call_error(handler, max_retries=0)
    assert len(seen) == 1 and usage.retries == 0 and usage.failed_requests == 1


def test_unsupported_protocol_not_retried() -> None:
    handler, seen = sequence(httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'."))
    err, usage, _ = call_error(handler)
    assert "UnsupportedProtocol" in str(err)
    assert len(seen) == 1 and usage.failed_requests == 1


def test_cancellation_propagates_and_is_not_retried() -> None:
    started = asyncio.Event()
    usage = Usage()
    count = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal count
        count += 1
        started.set()
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")

    async def main() -> None:
        async with make_client(handler, usage=usage) as client:
            task = asyncio.create_task(client.call(Endpoint(CHAT_URL, "m"), BODY))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert count == 1 and usage.retries == 0 and usage.failed_requests == 0


def test_debug_log_has_no_secrets_or_bodies(caplog: pytest.LogCaptureFixture) -> None:
    handler, _ = sequence(httpx.Response(500), chat_json())
    with caplog.at_level(logging.DEBUG, logger="mlflow_nemo_judge.http.openai"):
        call(handler, body={"messages": [{"role": "user", "content": "PRIVATE-PROMPT"}]})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "status=500" in text and CHAT_URL in text
    assert SECRET not in text and "PRIVATE-PROMPT" not in text and "Bearer" not in text


# -- concurrency ---------------------------------------------------------------------------------------


def test_concurrency_is_bounded() -> None:
    in_flight = 0
    peak = 0
    gate = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await gate.wait()  # held until the test has seen the slots fill
        in_flight -= 1
        return httpx.Response(200, json=chat_json())

    usage = Usage()

    async def main() -> list[CallResult]:
        async with make_client(handler, usage=usage, max_concurrency=3) as client:
            ep = Endpoint(CHAT_URL, "m")
            batch = asyncio.gather(*(client.call(ep, {**BODY, "seed": i}) for i in range(20)))
            for _ in range(1000):  # bounded: yield until three calls are in the handler
                if in_flight == 3:
                    break
                await asyncio.sleep(0)
            for _ in range(50):  # more turns of the loop must not let a fourth call in
                await asyncio.sleep(0)
            assert in_flight == 3
            gate.set()
            return await batch

    results = asyncio.run(main())
    assert len(results) == 20 and peak == 3 and usage.requests == 20


def test_backoff_sleep_does_not_hold_a_slot() -> None:
    """With one slot, a call sleeping in backoff must let another call run meanwhile."""
    other_done = asyncio.Event()
    first_sleeping = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content).get("seed") == "a" and not other_done.is_set():
            return httpx.Response(429)
        return httpx.Response(200, json=chat_json())

    async def blocking_sleep(delay: float) -> None:
        # Returns only once the other call has finished, which needs the (only) slot.
        first_sleeping.set()
        await asyncio.wait_for(other_done.wait(), timeout=5)

    async def main() -> None:
        async with mock_http(handler) as http:
            client = OpenAIClient(http, usage=Usage(), max_concurrency=1, sleep=blocking_sleep)
            ep = Endpoint(CHAT_URL, "m")
            first = asyncio.create_task(client.call(ep, {"seed": "a"}))
            await first_sleeping.wait()  # the first call got its 429 and is in backoff
            await client.call(ep, {"seed": "b"})
            other_done.set()
            assert (await first).attempts == 2

    asyncio.run(main())


# -- cache ---------------------------------------------------------------------------------------------


def test_cache_hit_miss_and_failures_not_cached(tmp_path: Path) -> None:
    handler, seen = sequence(chat_json("cached answer"))
    usage = Usage()
    cache = ResponseCache(tmp_path)

    async def main() -> tuple[CallResult, CallResult, CallResult, CallResult]:
        async with make_client(handler, usage=usage, cache=cache) as client:
            ep = Endpoint(CHAT_URL, "m", api_key=SECRET)
            first = await client.call(ep, BODY)
            second = await client.call(ep, dict(reversed(list(BODY.items()))))  # same body, other order
            different = await client.call(ep, {**BODY, "temperature": 0.7})
            bypass = await client.call(ep, BODY, use_cache=False)
            return first, second, different, bypass

    first, second, different, bypass = asyncio.run(main())
    cache.close()
    assert first.cached is False and second.cached is True and different.cached is False
    assert bypass.cached is False
    assert second.text == "cached answer" and second.attempts == 0 and second.raw == first.raw
    assert len(seen) == 3
    assert usage.requests == 3 and usage.cache_hits == 1
    # Tokens are counted for real requests only.
    assert usage.prompt_tokens == 3 * 11


def test_failures_are_not_cached(tmp_path: Path) -> None:
    handler, seen = sequence(httpx.Response(400, json={"error": {"message": "bad"}}), chat_json())
    usage = Usage()

    async def main() -> CallResult:
        with ResponseCache(tmp_path) as cache:
            async with make_client(handler, usage=usage, cache=cache) as client:
                ep = Endpoint(CHAT_URL, "m")
                with pytest.raises(EndpointError):
                    await client.call(ep, BODY)
                assert cache.stats() == 0
                return await client.call(ep, BODY)

    assert asyncio.run(main()).cached is False
    assert len(seen) == 2 and usage.cache_hits == 0


def test_malformed_success_not_cached(tmp_path: Path) -> None:
    handler, _ = sequence(httpx.Response(200, json={"no": "choices"}))
    with ResponseCache(tmp_path) as cache:
        call_error(handler, cache=cache, max_retries=1)
        assert cache.stats() == 0


def test_api_key_not_stored_and_cache_persists(tmp_path: Path) -> None:
    handler, seen = sequence(chat_json("persisted"))
    with ResponseCache(tmp_path) as cache:
        call(handler, cache=cache)
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(CACHE_FILE_NAME))
    assert b"persisted" in data
    assert SECRET.encode() not in data and b"Bearer" not in data

    # A new cache instance (as in a re-run) answers without HTTP.
    with ResponseCache(tmp_path) as reopened:
        result, usage, _ = call(handler, cache=reopened)
    assert result.cached and result.text == "persisted"
    assert len(seen) == 1 and usage.cache_hits == 1 and usage.requests == 0


def test_corrupted_cache_file_still_calls(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / CACHE_FILE_NAME).write_bytes(b"\x00garbage" * 500)
    with caplog.at_level(logging.WARNING, logger="mlflow_nemo_judge.http.cache"):
        cache = ResponseCache(tmp_path)
    assert not cache.enabled and caplog.records
    handler, seen = sequence(chat_json())
    result, usage, _ = call(handler, cache=cache)
    result2, _, _ = call(handler, cache=cache)
    assert result.text == "4" and not result.cached and not result2.cached
    assert len(seen) == 2 and usage.cache_hits == 0


# -- output accounting ---------------------------------------------------------------------------------


def test_truncated_and_empty_outputs_counted() -> None:
    handler, _ = sequence(chat_json("partial", finish="length"))
    result, usage, _ = call(handler)
    assert result.finish_reason == "length"
    assert usage.truncated_outputs == 1 and usage.empty_outputs == 0

    for text in (None, "", "  \n"):
        handler, _ = sequence(chat_json(text))
        result, usage, _ = call(handler)
        assert result.text == text
        assert usage.empty_outputs == 1 and usage.truncated_outputs == 0


def test_content_parts_are_joined() -> None:
    handler, _ = sequence(
        {
            "choices": [
                {
                    "message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                    "finish_reason": "stop",
                }
            ]
        }
    )
    result, usage, _ = call(handler)
    assert result.text == "ab"
    assert result.prompt_tokens == 0 and usage.prompt_tokens == 0  # no usage block in the response


def _call_endpoint(
    handler: Handler, endpoint: Endpoint, **kw: Any
) -> tuple[BaseException | CallResult, Usage]:
    usage = Usage()

    async def main() -> CallResult:
        async with make_client(handler, usage=usage, **kw) as client:
            return await client.call(endpoint, BODY)

    try:
        return asyncio.run(main()), usage
    except EndpointError as exc:
        return exc, usage


def test_no_endpoint_secret_in_errors_or_debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Key, header values, userinfo and query credentials, echoed by a provider, appear nowhere."""
    url = "http://user:pw-secret-9931@judge.local/v1/chat/completions?subscription-key=q-secret-4471"
    ep = Endpoint(url, "m", api_key=SECRET, headers={"X-Tenant": "tenant-secret-5521"})

    def handler(req: httpx.Request) -> httpx.Response:
        echo = f"{req.url} {dict(req.headers)}"
        return httpx.Response(500, json={"error": {"message": f"boom; you sent {echo}"}})

    with caplog.at_level(logging.DEBUG, logger="mlflow_nemo_judge"):
        err, _ = _call_endpoint(handler, ep, max_retries=1, health=HealthPolicy(fail_first=100))
    text = str(err) + "\n".join(r.getMessage() for r in caplog.records)
    assert "boom; you sent" in str(err) and caplog.records
    for secret in (SECRET, "tenant-secret-5521", "pw-secret-9931", "q-secret-4471"):
        assert secret not in text


def test_a_header_with_cr_lf_is_refused_at_once_without_showing_its_value() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json=chat_json())

    ep = Endpoint(CHAT_URL, "m", headers={"X-Bad": "inj-value-8812\r\nX-Evil: 1"})
    err, usage = _call_endpoint(handler, ep)
    assert isinstance(err, EndpointUnhealthy) and "'X-Bad'" in str(err) and "CR, LF" in str(err)
    assert "inj-value-8812" not in str(err) and not seen and usage.retries == 0


def test_local_protocol_errors_and_bad_schemes_are_not_retried() -> None:
    for exc in (httpx.LocalProtocolError("Illegal header value"), httpx.UnsupportedProtocol("ftp")):
        handler, seen = sequence(exc)
        err, usage = _call_endpoint(handler, Endpoint(CHAT_URL, "m"))
        assert isinstance(err, EndpointUnhealthy) and len(seen) == 1 and usage.retries == 0
