"""make_http_transport / make_http_client (the engine's httpx transport, aiohttp underneath) against
loopback servers: the request on the wire, keep-alive within the connection bound, response framing and
decoding, failures as httpx exceptions, the env knob, environment proxies, and OpenAIClient over the
production stack (the transport handed to it directly, per-request timeouts included)."""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from mlflow_nemo_judge import __version__
from mlflow_nemo_judge.errors import EndpointError
from mlflow_nemo_judge.http.openai import Endpoint, OpenAIClient
from mlflow_nemo_judge.http.transport import (
    HTTP_CLIENT_ENV,
    AioHTTPTransport,
    make_http_client,
    make_http_transport,
    transport_choice,
)
from mlflow_nemo_judge.results import Usage
from mlflow_nemo_judge.testing.mock_llm import MockLLMServer

Reply = Callable[[bytes, bytes], Awaitable[bytes | None]]  # (head, body) -> raw response (None: hang up)
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*PROXY_VARS, HTTP_CLIENT_ENV):
        monkeypatch.delenv(name, raising=False)


class RawServer:
    """A loopback HTTP/1.1 server whose replies are raw bytes; counts connections open at once."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.open_now = 0
        self.max_open = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def origin(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    @property
    def url(self) -> str:
        return f"{self.origin}/v1/chat/completions?x=1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if b"transfer-encoding: chunked" in head.lower():
                    body = b""
                    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                        body += (await reader.readexactly(size + 2))[:-2]
                    await reader.readuntil(b"\r\n")
                else:
                    body = await reader.readexactly(length)
                self.requests.append((head, body))
                out = await self.reply(head, body)
                if out is None:
                    return
                writer.write(out)
                await writer.drain()
                if b"connection: close" in out.lower():
                    return
        finally:
            self.open_now -= 1
            writer.close()


def ok_json(payload: Any, extra: str = "") -> bytes:
    body = json.dumps(payload).encode()
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def echo(head: bytes, body: bytes) -> bytes:
    return ok_json({"echo": json.loads(body)})


def head_fields(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode().split("\r\n")
    return lines[0], {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}


def aio(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test body on a fresh event loop (the suite has no asyncio pytest plugin)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))  # type: ignore[arg-type]

    return wrapper


def client(connections: int = 4, timeout: float = 5.0) -> httpx.AsyncClient:
    return make_http_client(connections, httpx.Timeout(timeout))


def both_transports(fn: Callable[..., None]) -> Any:
    """Run a test once per transport choice of the env knob: the behaviour must not depend on it."""
    return pytest.mark.parametrize("choice", ["aiohttp", "httpx"])(fn)


# -- the request ---------------------------------------------------------------------------------------


@both_transports
@aio
async def test_post_json_roundtrip_and_headers(choice: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HTTP_CLIENT_ENV, choice)
    async with RawServer(echo) as srv, client() as c:
        r = await c.post(
            srv.url,
            json={"model": "m", "text": "héllo"},
            headers={"Authorization": "Bearer k", "X-Team": "qa"},
        )
    assert isinstance(c, httpx.AsyncClient)
    assert r.status_code == 200 and r.json() == {"echo": {"model": "m", "text": "héllo"}}
    assert r.headers["content-type"] == "application/json"
    request_line, hdrs = head_fields(srv.requests[0][0])
    assert request_line == "POST /v1/chat/completions?x=1 HTTP/1.1"
    assert hdrs["host"].startswith("127.0.0.1:") and hdrs["authorization"] == "Bearer k"
    assert hdrs["x-team"] == "qa" and hdrs["content-type"] == "application/json"
    assert hdrs["user-agent"] == f"mlflow-nemo-judge/{__version__}"
    assert int(hdrs["content-length"]) == len(srv.requests[0][1])


@aio
async def test_default_transport_is_aiohttp_and_the_knob_selects_httpx(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert transport_choice() == "aiohttp"
    async with RawServer(echo) as srv:
        async with client() as c:
            fast = await c.post(srv.url, json={})
        monkeypatch.setenv(HTTP_CLIENT_ENV, "httpx")
        assert transport_choice() == "httpx"
        async with client() as c:
            plain = await c.post(srv.url, json={})
    # httpcore (httpx's own transport) exposes its network stream; the aiohttp transport does not.
    assert "network_stream" not in fast.extensions
    assert "network_stream" in plain.extensions
    monkeypatch.setenv(HTTP_CLIENT_ENV, "curl")
    with pytest.raises(ValueError, match=HTTP_CLIENT_ENV):
        client()
    with pytest.raises(ValueError):
        make_http_client(0, httpx.Timeout(1.0))


@aio
async def test_make_http_transport_picks_the_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    t = make_http_transport(4, httpx.Timeout(1.0))
    assert isinstance(t, AioHTTPTransport)
    await t.aclose()
    monkeypatch.setenv(HTTP_CLIENT_ENV, "httpx")
    t = make_http_transport(4, httpx.Timeout(1.0))
    assert isinstance(t, httpx.AsyncHTTPTransport) and not isinstance(t, AioHTTPTransport)
    await t.aclose()
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    c = make_http_transport(4, httpx.Timeout(1.0))
    assert isinstance(c, httpx.AsyncClient)  # httpx's client implements env proxies and NO_PROXY
    await c.aclose()
    with pytest.raises(ValueError):
        make_http_transport(0, httpx.Timeout(1.0))


@aio
async def test_streamed_request_body_takes_the_library_path() -> None:
    async def parts() -> Any:
        yield b'{"a":'
        yield b"1}"

    async with RawServer(echo) as srv, client() as c:
        r = await c.post(srv.url, content=parts(), headers={"Content-Type": "application/json"})
    assert r.json() == {"echo": {"a": 1}}


@aio
async def test_keep_alive_reuses_connections_within_the_bound() -> None:
    gate = asyncio.Event()

    async def held(head: bytes, body: bytes) -> bytes:
        await gate.wait()  # every request waits until the test opens the gate: all 3 slots fill up
        return ok_json({"ok": True})

    async with RawServer(held) as srv, client(connections=3) as c:
        batch = asyncio.gather(*(c.post(srv.url, json={"i": i}) for i in range(30)))
        while len(srv.requests) < 3:
            await asyncio.sleep(0)
        gate.set()
        rs = await batch
    assert all(r.json() == {"ok": True} for r in rs)
    assert len(srv.requests) == 30
    assert srv.max_open <= 3 and srv.connections <= 3, "connections must be bounded and kept alive"


# -- responses -----------------------------------------------------------------------------------------


@aio
async def test_chunked_gzip_and_connection_close_responses() -> None:
    payload = {"choices": [{"text": "x" * 5000}]}
    gz = gzip.compress(json.dumps(payload).encode())
    raw_json = json.dumps(payload).encode()

    async def reply(head: bytes, body: bytes) -> bytes:
        kind = json.loads(body)["kind"]
        if kind == "gzip":
            return (
                f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(gz)}\r\n\r\n".encode()
                + gz
            )
        if kind == "chunked":
            chunks = [raw_json[:100], raw_json[100:]]
            out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            for ch in chunks:
                out += f"{len(ch):x}\r\n".encode() + ch + b"\r\n"
            return out + b"0\r\n\r\n"
        return ok_json(payload, "Connection: close\r\n")

    async with RawServer(reply) as srv, client(connections=1) as c:
        for kind in ("gzip", "chunked", "close", "gzip"):
            r = await c.post(srv.url, json={"kind": kind})
            assert r.json() == payload, kind
    assert srv.connections == 2  # one reused across gzip/chunked, a new one after the server's close


# -- failures ------------------------------------------------------------------------------------------


@both_transports
@aio
async def test_failures_raise_httpx_transport_errors(choice: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HTTP_CLIENT_ENV, choice)
    hang = asyncio.Event()

    async def reply(head: bytes, body: bytes) -> bytes | None:
        kind = json.loads(body)["kind"]
        if kind == "hangup":
            return None
        if kind == "garbage":
            return b"NOT HTTP AT ALL\r\n\r\n"
        if kind == "short":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{}"
        await hang.wait()  # "slow": never answers within the client's timeout
        return None

    async with RawServer(reply) as srv, client(timeout=0.3) as c:
        for kind in ("hangup", "garbage", "short"):
            with pytest.raises(httpx.TransportError):
                r = await c.post(srv.url, json={"kind": kind})
                r.json()  # a short body must fail before here, but never as a silent partial success
        with pytest.raises(httpx.TimeoutException):
            await c.post(srv.url, json={"kind": "slow"})
        hang.set()
        port = int(srv.origin.rsplit(":", 1)[1])
    # Nothing listens on the port any more once the server is closed.
    async with client() as c:
        with pytest.raises(httpx.ConnectError):
            await c.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={})
        with pytest.raises(httpx.UnsupportedProtocol):
            await c.post("ftp://127.0.0.1/x", json={})


# -- environment proxies -------------------------------------------------------------------------------


@aio
async def test_environment_proxy_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    async with RawServer(echo) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.origin)
        async with client() as c:
            r = await c.post("http://llm.invalid/v1/chat/completions", json={"via": "proxy"})
    assert r.json() == {"echo": {"via": "proxy"}}
    request_line, _ = head_fields(proxy.requests[0][0])
    # A forward proxy receives the absolute URL; no DNS lookup of llm.invalid happened on our side.
    assert request_line == "POST http://llm.invalid/v1/chat/completions HTTP/1.1"


# -- OpenAIClient over the production stack -------------------------------------------------------------

CHAT_BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "Rate: RATING: 4"}]}


def test_openai_client_over_the_production_stack_against_the_mock_llm() -> None:
    secret = "sk-live-SECRET-abcdef0123456789"
    with MockLLMServer() as srv:

        async def main() -> tuple[str | None, EndpointError]:
            usage = Usage()
            http = make_http_transport(4, httpx.Timeout(5.0))
            assert isinstance(http, AioHTTPTransport)
            try:
                oc = OpenAIClient(http, usage=usage, max_retries=0)
                ok = await oc.call(
                    Endpoint(srv.base_url, "mock/judge", api_key=secret), CHAT_BODY, use_cache=False
                )
                with pytest.raises(EndpointError) as info:
                    await oc.call(
                        Endpoint(srv.base_url, "no-such-model", api_key=secret),
                        {"messages": [{"role": "user", "content": "x"}]},
                        use_cache=False,
                    )
            finally:
                await http.aclose()
            assert usage.requests == 2 and usage.failed_requests == 1
            return ok.text, info.value

        text, err = asyncio.run(main())
    assert text is not None and text.strip()
    assert err.status == 404 and secret not in str(err) and secret not in repr(err)


def chat_reply(text: str) -> dict[str, Any]:
    return {"choices": [{"message": {"content": text}, "finish_reason": "stop"}], "usage": {}}


@both_transports
@aio
async def test_openai_client_on_the_wire_over_the_transport(
    choice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What OpenAIClient sends through the bare transport (no AsyncClient adding defaults), and that
    gzip/chunked replies are decoded and connections reused."""
    monkeypatch.setenv(HTTP_CLIENT_ENV, choice)
    payload = json.dumps(chat_reply("zipped")).encode()
    gz = gzip.compress(payload)

    async def reply(head: bytes, body: bytes) -> bytes:
        if b"gzip" in head.lower() and len(srv.requests) == 1:
            return (
                f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(gz)}\r\n\r\n".encode()
                + gz
            )
        out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        for ch in (payload[:10], payload[10:]):
            out += f"{len(ch):x}\r\n".encode() + ch + b"\r\n"
        return out + b"0\r\n\r\n"

    async with RawServer(reply) as srv:
        host = srv.origin.removeprefix("http://")
        http = make_http_transport(2, httpx.Timeout(5.0))
        try:
            oc = OpenAIClient(http, usage=Usage(), max_retries=0)
            ep = Endpoint(srv.url, "judge", api_key="k", headers={"X-Team": "qa"})
            first = await oc.call(ep, CHAT_BODY, use_cache=False)
            second = await oc.call(ep, CHAT_BODY, use_cache=False)
        finally:
            await http.aclose()
    assert first.text == "zipped" and second.text == "zipped"
    assert srv.connections == 1  # kept alive across both calls
    request_line, hdrs = head_fields(srv.requests[0][0])
    assert request_line == "POST /v1/chat/completions?x=1 HTTP/1.1"
    assert hdrs["host"] == host
    assert hdrs["user-agent"] == f"mlflow-nemo-judge/{__version__}"
    assert hdrs["authorization"] == "Bearer k" and hdrs["x-team"] == "qa"
    assert hdrs["content-type"] == "application/json" and "gzip" in hdrs["accept-encoding"]
    assert int(hdrs["content-length"]) == len(srv.requests[0][1])
    assert json.loads(srv.requests[0][1]) == {"model": "judge", **CHAT_BODY}


@both_transports
@aio
async def test_openai_client_timeout_applies_per_request_on_the_transport(
    choice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transport has no timeout of its own: OpenAIClient's per-call timeout (in
    ``request.extensions``) is what stops a server that never answers."""
    monkeypatch.setenv(HTTP_CLIENT_ENV, choice)
    never = asyncio.Event()

    async def reply(head: bytes, body: bytes) -> bytes | None:
        await never.wait()
        return None

    async with RawServer(reply) as srv:
        http = make_http_transport(2, httpx.Timeout(600.0))
        try:
            oc = OpenAIClient(http, usage=Usage(), max_retries=0, timeout=600.0)
            with pytest.raises(EndpointError) as info:
                await asyncio.wait_for(oc.call(Endpoint(srv.url, "m"), CHAT_BODY, timeout=0.2), 30)
        finally:
            never.set()
            await http.aclose()
    assert isinstance(info.value.__cause__, httpx.TimeoutException)


@aio
async def test_openai_client_through_an_environment_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    async def reply(head: bytes, body: bytes) -> bytes:
        return ok_json(chat_reply("via proxy"))

    async with RawServer(reply) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.origin)
        http = make_http_transport(2, httpx.Timeout(5.0))
        assert isinstance(http, httpx.AsyncClient)
        try:
            oc = OpenAIClient(http, usage=Usage(), max_retries=0)
            result = await oc.call(Endpoint("http://llm.invalid/v1", "m"), CHAT_BODY, use_cache=False)
        finally:
            await http.aclose()
    assert result.text == "via proxy"
    request_line, hdrs = head_fields(proxy.requests[0][0])
    assert request_line == "POST http://llm.invalid/v1/chat/completions HTTP/1.1"
    assert hdrs["user-agent"] == f"mlflow-nemo-judge/{__version__}"
