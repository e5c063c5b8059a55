"""FastHTTPClient (the engine's lean HTTP/1.1 client) against raw loopback servers: framing, keep-alive,
connection bound, errors as httpx exceptions, and the httpx fallback for proxied origins."""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from mlflow_nemo_judge.http.transport import FastHTTPClient, ShardedAsyncClient, make_client

Reply = Callable[[bytes, bytes], Awaitable[bytes | None]]  # (head, body) -> raw response (None: hang up)


class RawServer:
    """A loopback HTTP/1.1 server whose replies are raw bytes, to exercise the client's parser."""

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
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/chat/completions?x=1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
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


def aio(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test body on a fresh event loop (the suite has no asyncio pytest plugin)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))  # type: ignore[arg-type]

    return wrapper


def client(connections: int = 4, timeout: float = 5.0) -> FastHTTPClient:
    return FastHTTPClient(connections, httpx.Timeout(timeout))


@aio
async def test_post_json_roundtrip_and_headers() -> None:
    async with RawServer(echo) as srv, client() as c:
        r = await c.post(
            srv.url,
            json={"model": "m", "text": "héllo"},
            headers={"Authorization": "Bearer k", "X-Team": "qa"},
        )
    assert r.status_code == 200 and r.json() == {"echo": {"model": "m", "text": "héllo"}}
    assert r.headers["content-type"] == "application/json"
    head, body = srv.requests[0]
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions?x=1 HTTP/1.1"
    hdrs = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    assert hdrs["host"].startswith("127.0.0.1:") and hdrs["authorization"] == "Bearer k"
    assert hdrs["x-team"] == "qa" and hdrs["content-type"] == "application/json"
    assert int(hdrs["content-length"]) == len(body)
    assert (
        body
        == json.dumps({"model": "m", "text": "héllo"}, ensure_ascii=False, separators=(",", ":")).encode()
    )


@aio
async def test_keep_alive_reuses_connections_and_respects_the_bound() -> None:
    async def slow(head: bytes, body: bytes) -> bytes:
        await asyncio.sleep(0.01)
        return ok_json({"ok": True})

    async with RawServer(slow) as srv, client(connections=3) as c:
        rs = await asyncio.gather(*(c.post(srv.url, json={"i": i}) for i in range(30)))
    assert all(r.json() == {"ok": True} for r in rs)
    assert len(srv.requests) == 30
    assert srv.max_open <= 3 and srv.connections <= 3


@aio
async def test_chunked_gzip_and_close_delimited_bodies() -> None:
    payload = json.dumps({"a": "b" * 50}).encode()

    async def chunked(head: bytes, body: bytes) -> bytes:
        parts = [payload[:7], payload[7:]]
        chunks = b"".join(f"{len(p):x};ext=1\r\n".encode() + p + b"\r\n" for p in parts)
        return (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\nX-Trailer: 1\r\n\r\n"
        )

    async def gzipped(head: bytes, body: bytes) -> bytes:
        z = gzip.compress(payload)
        return f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(z)}\r\n\r\n".encode() + z

    async def until_close(head: bytes, body: bytes) -> bytes:
        return b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n" + payload

    for reply in (chunked, gzipped, until_close):
        async with RawServer(reply) as srv, client() as c:
            first = await c.post(srv.url, json={})
            second = await c.post(srv.url, json={})
        assert first.json() == second.json() == {"a": "b" * 50}, reply.__name__
        assert srv.connections == (2 if reply is until_close else 1), reply.__name__


@aio
async def test_informational_responses_are_skipped() -> None:
    async def early_hints(head: bytes, body: bytes) -> bytes:
        return b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + ok_json({"ok": 1})

    async with RawServer(early_hints) as srv, client() as c:
        assert (await c.post(srv.url, json={})).json() == {"ok": 1}


@aio
async def test_error_statuses_are_returned_not_raised() -> None:
    async def limited(head: bytes, body: bytes) -> bytes:
        b = b'{"error": {"message": "slow down"}}'
        return (
            f"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: {len(b)}\r\n\r\n"
        ).encode() + b

    async with RawServer(limited) as srv, client() as c:
        r = await c.post(srv.url, json={})
    assert r.status_code == 429 and r.headers["retry-after"] == "2" and "slow down" in r.text


@aio
async def test_server_closing_idle_connection_is_not_reused() -> None:
    async def once(head: bytes, body: bytes) -> bytes:
        return ok_json({"ok": True}, extra="Connection: close\r\n")

    async with RawServer(once) as srv, client() as c:
        for _ in range(3):
            assert (await c.post(srv.url, json={})).json() == {"ok": True}
    assert srv.connections == 3


@aio
async def test_failures_raise_httpx_transport_errors() -> None:
    async def hang_up(head: bytes, body: bytes) -> bytes | None:
        return None

    async def never(head: bytes, body: bytes) -> bytes:
        await asyncio.sleep(5)
        return ok_json({})

    async def garbage(head: bytes, body: bytes) -> bytes:
        return b"SPDY/9 what\r\n\r\n"

    async def short(head: bytes, body: bytes) -> bytes | None:
        return b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{"a"'

    async with RawServer(hang_up) as srv, client() as c:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await c.post(srv.url, json={})
    async with RawServer(never) as srv, client() as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post(srv.url, json={}, timeout=httpx.Timeout(0.2))
        assert c._open == 0  # the timed-out connection was closed, not pooled
    async with RawServer(garbage) as srv, client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.post(srv.url, json={})
    async with RawServer(short) as srv, client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.post(srv.url, json={})
    async with RawServer(echo) as srv:
        url = srv.url
    async with client() as c:
        with pytest.raises(httpx.ConnectError):
            await c.post(url, json={})  # nothing listens there any more
        with pytest.raises(httpx.UnsupportedProtocol):
            await c.post("ftp://127.0.0.1/x", json={})
        with pytest.raises(httpx.LocalProtocolError):
            await c.post("http://127.0.0.1:9/x", json={}, headers={"X-Bad": "a\r\nInjected: 1"})


@aio
async def test_cancellation_closes_the_connection() -> None:
    async def never(head: bytes, body: bytes) -> bytes:
        await asyncio.sleep(5)
        return ok_json({})

    async with RawServer(never) as srv, client() as c:
        t = asyncio.ensure_future(c.post(srv.url, json={}))
        await asyncio.sleep(0.05)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert c._open == 0


@aio
async def test_proxied_scheme_goes_through_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # httpx itself then connects directly
    async with RawServer(echo) as srv, client() as c:
        r = await c.post(srv.url, json={"k": 1})
        assert r.json() == {"echo": {"k": 1}}
        assert c._fallback is not None and c._open == 0


def test_make_client_selects_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    t = httpx.Timeout(5.0)
    monkeypatch.delenv("NEMO_JUDGE_HTTP_CLIENT", raising=False)
    assert isinstance(make_client(4, t), FastHTTPClient)
    monkeypatch.setenv("NEMO_JUDGE_HTTP_CLIENT", "httpx")
    assert isinstance(make_client(4, t), ShardedAsyncClient)
    monkeypatch.setenv("NEMO_JUDGE_HTTP_CLIENT", "curl")
    with pytest.raises(ValueError):
        make_client(4, t)


@pytest.fixture(autouse=True)
def _no_env_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@aio
async def test_https_with_sni_hostname_check_and_keep_alive(tmp_path: Any) -> None:
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    srv = RawServer(echo)
    srv.server = await asyncio.start_server(srv._serve, "127.0.0.1", 0, ssl=server_ctx)
    port = srv.server.sockets[0].getsockname()[1]
    url = f"https://localhost:{port}/v1/chat/completions"
    try:
        trusted = FastHTTPClient(
            2, httpx.Timeout(5.0), ssl_context=ssl.create_default_context(cafile=str(cert))
        )
        async with trusted:
            rs = await asyncio.gather(*(trusted.post(url, json={"i": i}) for i in range(6)))
        assert [r.json()["echo"]["i"] for r in rs] == list(range(6))
        assert srv.connections <= 2
        async with client() as default:  # certifi's roots do not trust a self-signed certificate
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await default.post(url, json={})
    finally:
        srv.server.close()


@aio
async def test_python310_deadline_shim() -> None:
    from mlflow_nemo_judge.http.transport import _deadline_compat

    async with _deadline_compat(None):
        await asyncio.sleep(0)
    async with _deadline_compat(1.0):
        await asyncio.sleep(0.01)
    with pytest.raises(TimeoutError):
        async with _deadline_compat(0.05):
            await asyncio.sleep(5)
    t = asyncio.ensure_future(asyncio.sleep(5))

    async def outer() -> None:
        async with _deadline_compat(5.0):
            await t

    task = asyncio.ensure_future(outer())
    await asyncio.sleep(0.01)
    task.cancel()  # a cancellation from outside stays a cancellation
    with pytest.raises(asyncio.CancelledError):
        await task
