"""HTTP client construction for the engine.

An evaluation is many thousands of small JSON POSTs to one or two OpenAI-compatible endpoints. Measured
on a 2-core machine (bench/RESULTS.md), the general-purpose stack (httpx → httpcore → anyio → h11)
spends ~3 ms of CPU per request, which caps a run near 300 requests/s whatever the endpoints can do:
client-side bookkeeping (request/URL objects, cookies, the connection pool's scheduling scan, anyio
stream wrappers, h11 state machine), not the network.

:class:`FastHTTPClient` does the same job for this one shape of traffic on plain asyncio streams:
HTTP/1.1 keep-alive connections kept per origin, the request head written as one pre-formatted block,
the response framed by ``Content-Length`` or chunked encoding. It still speaks httpx at its edges (it
returns ``httpx.Response``, so content decoding and ``.json()`` are httpx's, and it raises httpx's
exception types, so the caller's retry logic is unchanged), TLS uses httpx's default SSL context
(certifi, ``SSL_CERT_FILE``/``SSL_CERT_DIR``), and any origin that an environment proxy variable may
apply to is sent through httpx itself, which implements proxies and ``NO_PROXY``.

:class:`ShardedAsyncClient` is the httpx path (``NEMO_JUDGE_HTTP_CLIENT=httpx`` selects it): httpcore's
pool does work proportional to queued requests × pooled connections on every request it schedules, so
the connections are sharded over several small pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json as jsonlib
import os
import ssl
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple

import httpx

from mlflow_nemo_judge import __version__

# Connections per httpx shard: small enough that the pool scan stays cheap, large enough that few exist.
SHARD_CONNECTIONS = 8
# Selects the HTTP client of the engine: "fast" (default) or "httpx".
HTTP_CLIENT_ENV = "NEMO_JUDGE_HTTP_CLIENT"
# Idle keep-alive connections older than this are not reused (httpx's default keepalive_expiry), since
# servers close idle connections after a few seconds and a reused dead socket costs a failed request.
KEEPALIVE_EXPIRY = 5.0
_MAX_HEAD = 1 << 20  # bytes of response status line + headers we accept
_USER_AGENT = f"mlflow-nemo-judge/{__version__}"


class ShardedAsyncClient:
    """A drop-in for the subset of ``httpx.AsyncClient`` the engine uses (``post``, ``aclose``)."""

    def __init__(self, connections: int, timeout: httpx.Timeout, shard_size: int = SHARD_CONNECTIONS) -> None:
        n = max(1, -(-connections // shard_size))
        per = max(1, -(-connections // n))
        self.clients = [
            httpx.AsyncClient(
                limits=httpx.Limits(max_connections=per, max_keepalive_connections=per), timeout=timeout
            )
            for _ in range(n)
        ]
        self._next = itertools.cycle(self.clients)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await next(self._next).post(url, **kwargs)

    async def aclose(self) -> None:
        for c in self.clients:
            await c.aclose()

    async def __aenter__(self) -> ShardedAsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# ---------------------------------------------------------------------------------- fast HTTP/1.1 client


class _Origin(NamedTuple):
    scheme: str
    host: str
    port: int
    host_header: str  # "host" or "host:port" as the Host header carries it
    target: str  # path + query: the request-target


class _Conn:
    __slots__ = ("reader", "writer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0

    def reusable(self, now: float) -> bool:
        # at_eof: the server's FIN has already been seen; is_closing: our side is shutting it.
        return (
            not self.reader.at_eof()
            and not self.writer.transport.is_closing()
            and now - self.idle_since < KEEPALIVE_EXPIRY
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


@contextlib.asynccontextmanager
async def _deadline_compat(delay: float | None) -> AsyncIterator[None]:
    """``asyncio.timeout`` for Python 3.10: cancel the current task after ``delay`` seconds and turn that
    cancellation into ``TimeoutError``. (3.10 cannot un-cancel a task, so a timer that fires just as the
    block completes leaves a cancellation pending; 3.11+ uses ``asyncio.timeout``, which handles that.)"""
    if delay is None:
        yield
        return
    task = asyncio.current_task()
    assert task is not None
    fired = False

    def fire() -> None:
        nonlocal fired
        fired = True
        task.cancel()

    handle = asyncio.get_running_loop().call_later(delay, fire)
    try:
        yield
    except asyncio.CancelledError:
        if fired:
            raise TimeoutError from None
        raise
    finally:
        handle.cancel()


if sys.version_info >= (3, 11):
    _deadline: Any = asyncio.timeout
else:  # pragma: no cover - Python 3.10
    _deadline = _deadline_compat


def _timeouts(
    timeout: httpx.Timeout | float | None, default: httpx.Timeout
) -> tuple[float | None, float | None]:
    """(connect, read) seconds; writes share the read budget (requests are small)."""
    if timeout is None:
        timeout = default
    if not isinstance(timeout, httpx.Timeout):
        timeout = httpx.Timeout(timeout)
    return timeout.connect, timeout.read


def _proxied_schemes() -> frozenset[str]:
    """URL schemes an environment proxy variable may apply to (read once, as httpx does per client)."""
    proxies = urllib.request.getproxies()
    if proxies.get("all"):
        return frozenset({"http", "https"})
    return frozenset(s for s in ("http", "https") if proxies.get(s))


class FastHTTPClient:
    """Lean HTTP/1.1 keep-alive client for the engine's JSON POSTs; ``post``/``aclose`` like httpx.

    ``connections`` bounds the open connections (and so the requests in flight) over all origins;
    idle connections are reused most-recently-used first. Requests to origins an environment proxy may
    apply to go through an ``httpx.AsyncClient``.
    """

    def __init__(
        self, connections: int, timeout: httpx.Timeout, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be >= 1")
        self.connections = connections
        self.timeout = timeout
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._origins: dict[str, _Origin] = {}
        self._proxied = _proxied_schemes()
        self._fallback: ShardedAsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._open = 0  # connections open (in use or idle)
        self._closed = False

    # -- helpers ------------------------------------------------------------------------------------

    def _origin(self, url: str) -> _Origin:
        o = self._origins.get(url)
        if o is None:
            u = httpx.URL(url)
            scheme = u.scheme
            if scheme not in ("http", "https") or not u.host:
                raise httpx.UnsupportedProtocol(f"Request URL has an unsupported protocol '{scheme}://'.")
            port = u.port or (443 if scheme == "https" else 80)
            host = u.host
            shown = f"[{host}]" if ":" in host else host  # IPv6 literal
            host_header = shown if u.port is None else f"{shown}:{port}"
            target = u.raw_path.decode("ascii") or "/"
            o = _Origin(scheme, host, port, host_header, target)
            if len(self._origins) < 1024:
                self._origins[url] = o
        return o

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    async def _connect(self, o: _Origin, connect_timeout: float | None) -> _Conn:
        try:
            async with _deadline(connect_timeout):
                if o.scheme == "https":
                    reader, writer = await asyncio.open_connection(
                        o.host, o.port, ssl=self._ssl_context(), server_hostname=o.host, limit=_MAX_HEAD
                    )
                else:
                    reader, writer = await asyncio.open_connection(o.host, o.port, limit=_MAX_HEAD)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"timed out connecting to {o.host}:{o.port}") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        self._open += 1
        return _Conn(reader, writer)

    def _close(self, conn: _Conn) -> None:
        conn.close()
        self._open -= 1

    def _checkout(self, key: tuple[str, str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.reusable(now):
                return conn
            self._close(conn)
        return None

    def _checkin(self, key: tuple[str, str, int], conn: _Conn) -> None:
        if self._closed:
            self._close(conn)
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(key, []).append(conn)

    def _drop_one_idle(self) -> None:
        """Close an idle connection of another origin so a new one can open within the bound."""
        for idle in self._idle.values():
            if idle:
                self._close(idle.pop(0))
                return

    # -- the request ----------------------------------------------------------------------------------

    async def post(
        self,
        url: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | float | None = None,
    ) -> httpx.Response:
        """POST ``json`` (or raw ``content``) to ``url``; returns the whole response, body read."""
        if self._closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        o = self._origin(url)
        if o.scheme in self._proxied:
            return await self._via_httpx(url, json=json, content=content, headers=headers, timeout=timeout)
        if content is None:
            content = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
                "utf-8"
            )
            ctype: str | None = "application/json"
        else:
            ctype = None
        lines = [
            f"POST {o.target} HTTP/1.1\r\nHost: {o.host_header}\r\nAccept: */*\r\n"
            f"Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nUser-Agent: {_USER_AGENT}\r\n"
            f"Content-Length: {len(content)}\r\n"
        ]
        if ctype is not None and not (headers and any(k.lower() == "content-type" for k in headers)):
            lines.append(f"Content-Type: {ctype}\r\n")
        if headers:
            for k, v in headers.items():
                if "\r" in k or "\n" in k or "\r" in v or "\n" in v or ":" in k:
                    raise httpx.LocalProtocolError(f"invalid header {k!r}")
                lines.append(f"{k}: {v}\r\n")
        lines.append("\r\n")
        # Header values are ASCII as httpx requires; a non-ASCII value raises here, before any I/O.
        request = "".join(lines).encode("ascii") + content
        connect_t, read_t = _timeouts(timeout, self.timeout)

        if self._slots is None:
            self._slots = asyncio.Semaphore(self.connections)
        async with self._slots:
            key = (o.scheme, o.host, o.port)
            conn = self._checkout(key)
            if conn is None:
                if self._open >= self.connections:
                    self._drop_one_idle()
                conn = await self._connect(o, connect_t)
            try:
                status, raw_headers, body, keep = await self._exchange(conn, request, read_t)
            except BaseException:
                self._close(conn)  # state unknown (timeout, cancellation, protocol error): never reuse
                raise
            if keep:
                self._checkin(key, conn)
            else:
                self._close(conn)
        return _response(status, raw_headers, body)

    async def _exchange(
        self, conn: _Conn, request: bytes, read_t: float | None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        reader, writer = conn.reader, conn.writer
        phase = "write"
        try:
            async with _deadline(read_t):
                writer.write(request)
                await writer.drain()
                phase = "read"
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    status, version, raw_headers = _parse_head(head)
                    if not (100 <= status < 200):
                        break  # 1xx (e.g. 103 Early Hints) precede the real response
                return await self._read_body(reader, status, version, raw_headers)
        except TimeoutError as exc:
            if phase == "write":
                raise httpx.WriteTimeout("timed out sending the request") from exc
            raise httpx.ReadTimeout("timed out waiting for the response") from exc
        except asyncio.IncompleteReadError as exc:
            if not exc.partial and phase == "read":
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.") from exc
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body"
            ) from exc
        except asyncio.LimitOverrunError as exc:
            raise httpx.RemoteProtocolError("response head too large") from exc
        except (OSError, ssl.SSLError) as exc:
            cls = httpx.WriteError if phase == "write" else httpx.ReadError
            raise cls(f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    async def _read_body(
        reader: asyncio.StreamReader, status: int, version: bytes, raw_headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        length: int | None = None
        chunked = False
        close = version != b"HTTP/1.1"
        for name, value in raw_headers:
            lname = name.lower()
            if lname == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise httpx.RemoteProtocolError("invalid Content-Length") from None
                if length < 0:
                    raise httpx.RemoteProtocolError("invalid Content-Length")
            elif lname == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif lname == b"connection":
                v = value.lower()
                if b"close" in v:
                    close = True
                elif b"keep-alive" in v:
                    close = False
        if status in (204, 304):
            return status, raw_headers, b"", not close
        if chunked:
            parts: list[bytes] = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise httpx.RemoteProtocolError("malformed chunk size") from None
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass  # trailers
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            return status, raw_headers, b"".join(parts), not close
        if length is not None:
            body = await reader.readexactly(length) if length else b""
            return status, raw_headers, body, not close
        # No framing: the body runs until the server closes the connection.
        return status, raw_headers, await reader.read(), False

    async def _via_httpx(self, url: str, **kwargs: Any) -> httpx.Response:
        if self._fallback is None:
            self._fallback = ShardedAsyncClient(self.connections, self.timeout)
        kw = {k: v for k, v in kwargs.items() if v is not None}
        return await self._fallback.post(url, **kw)

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                self._close(conn)
        self._idle.clear()
        if self._fallback is not None:
            await self._fallback.aclose()

    async def __aenter__(self) -> FastHTTPClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _parse_head(head: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(rest) < 3 or not rest[:3].isdigit():
        raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise httpx.RemoteProtocolError(f"malformed header line {line[:80]!r}")
        headers.append((name, value.strip()))
    return int(rest[:3]), version, headers


def _response(status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> httpx.Response:
    """An ``httpx.Response`` holding a fully read body.

    A body with a ``Content-Encoding`` goes through httpx's constructor, which decodes it. Otherwise the
    object is set up as httpx itself restores a read, closed response (``Response.__setstate__``), which
    skips the stream machinery that a body already in memory does not need (~10% of a request's CPU).
    """
    if any(name.lower() == b"content-encoding" for name, _ in raw_headers):
        return httpx.Response(status, headers=raw_headers, content=body)
    r = httpx.Response.__new__(httpx.Response)
    r.status_code = status
    r.headers = httpx.Headers(raw_headers)
    r._request = None
    r.next_request = None
    r.extensions = {}
    r.history = []
    r.is_closed = True
    r.is_stream_consumed = True
    r.default_encoding = "utf-8"
    r.stream = httpx.ByteStream(body)
    r._content = body
    r._num_bytes_downloaded = len(body)
    return r


def make_client(connections: int, timeout: httpx.Timeout) -> FastHTTPClient | ShardedAsyncClient:
    """The engine's HTTP client: the fast one unless ``NEMO_JUDGE_HTTP_CLIENT=httpx``."""
    choice = os.environ.get(HTTP_CLIENT_ENV, "fast").strip().lower()
    if choice == "httpx":
        return ShardedAsyncClient(connections, timeout)
    if choice not in ("", "fast"):
        raise ValueError(f"{HTTP_CLIENT_ENV} must be 'fast' or 'httpx', not {choice!r}")
    return FastHTTPClient(connections, timeout)
