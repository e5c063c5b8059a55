"""The engine's HTTP stack: an ``httpx`` transport, whatever carries the bytes.

An evaluation is many thousands of small JSON POSTs to one or two OpenAI-compatible endpoints. httpx's
default transport (httpcore → anyio → h11) spends ~3 ms of CPU per request on such traffic, which caps a
run near 300 requests/s on a small machine (bench/RESULTS.md, "HTTP stack"). The engine therefore talks
to an ``httpx.AsyncBaseTransport``, httpx's public transport API: ``OpenAIClient`` builds an
``httpx.Request`` and awaits ``transport.handle_async_request`` itself, which skips the per-request
client machinery of ``httpx.AsyncClient`` (URL merging, cookie extraction on every response, auth and
redirect handling, event hooks) that a JSON POST to a fixed endpoint does not use. Unit tests pass an
``httpx.MockTransport`` (itself an ``AsyncBaseTransport``) and so exercise the same code path as
production; only the transport underneath is swapped for ``httpx-aiohttp``'s, which lets aiohttp
(C-accelerated HTTP/1.1 parser, keep-alive pool) move the bytes.

Environment and proxies: the aiohttp transport keeps httpx's TLS set-up (``httpx.create_ssl_context``:
certifi, ``SSL_CERT_FILE``/``SSL_CERT_DIR``). httpx only reads proxy variables (``HTTP(S)_PROXY``,
``ALL_PROXY``, ``NO_PROXY``) in ``httpx.AsyncClient``, which picks a transport per URL, so when any proxy
variable is set the factory returns a plain ``httpx.AsyncClient`` instead, which implements proxies and
``NO_PROXY`` exactly as httpx documents them; behind a proxy the proxy, not the client's CPU, is what
bounds throughput. ``OpenAIClient`` accepts either.
"""

from __future__ import annotations

import urllib.request
from typing import Any

import aiohttp
import httpx
import yarl
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions

from mlflow_nemo_judge import __version__, settings

HTTP_CLIENT_ENV = "NEMO_JUDGE_HTTP_CLIENT"
"""Environment knob choosing the engine's transport: ``aiohttp`` (default; httpx over aiohttp) or
``httpx`` (httpx's own transport). Kept because the two differ ~6x in zero-latency throughput
(bench/RESULTS.md) and the plain one is the fallback should aiohttp misbehave somewhere."""

KEEPALIVE_EXPIRY = 5.0
"""Idle keep-alive connections older than this are closed, not reused (httpx's default): servers drop
idle connections after a few seconds, and a reused dead socket costs a failed request."""

USER_AGENT = f"mlflow-nemo-judge/{__version__}"


class AioHTTPTransport(AiohttpTransport):
    """``httpx_aiohttp.AiohttpTransport`` with a buffered fast path and every aiohttp failure surfaced as
    the right httpx error.

    Fast path: a request whose body is in memory (every JSON POST) is sent with one
    ``ClientSession.request`` and its whole body is read inside the transport, so the response handed
    back holds an in-memory ``httpx.ByteStream``: no async-iterator stream wrapper over aiohttp, no
    exception-mapping context per chunk. This transport therefore does not stream responses (the
    engine's are small JSON documents); httpx still decodes ``Content-Encoding`` when the caller reads
    the response. Streamed request bodies and proxies take the library's own path.

    Errors: the library maps any ``aiohttp.ClientConnectionError`` it does not special-case to
    ``httpx.ConnectTimeout``: a refused connection, a server that dropped a kept-alive connection and a
    reset mid-response all look like connect timeouts; and some failures (e.g. ``ClientResponseError``
    for a malformed response) escape as aiohttp types. Callers decide on retries by httpx's classes (a
    request that never reached the server may be repeated even if it is a POST), so both are corrected.
    """

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            with map_aiohttp_exceptions():
                return await self._send(request)
        except httpx.ConnectTimeout as exc:
            raise _remapped(exc, request) from exc.__cause__
        except aiohttp.ClientError as exc:
            raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}", request=request) from exc
        except ValueError as exc:
            # aiohttp refuses a request it cannot frame (a CR/LF in a header value: "Potential header
            # injection attack") with a bare ValueError; httpx's own transport says LocalProtocolError,
            # which callers know is not worth a retry.
            raise httpx.LocalProtocolError(str(exc), request=request) from exc

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            data: bytes | None = request.content or None
        except httpx.RequestNotRead:
            data = None
            streamed = True
        else:
            streamed = False
        if streamed or self.proxy is not None:
            return await super().handle_async_request(request)
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()  # the library's lazy set-up, inside the running loop
        timeout = request.extensions.get("timeout", {})
        async with self.client.request(
            request.method,
            # httpx URLs are already percent-encoded: yarl must not re-quote them.
            yarl.URL(str(request.url), encoded=True),
            headers=request.headers.multi_items(),
            data=data,
            allow_redirects=False,
            auto_decompress=False,  # httpx decodes Content-Encoding, as for every transport
            compress=False,
            # The library's mapping of httpx's timeouts: pool wait + connect, connect, each read.
            timeout=aiohttp.ClientTimeout(
                sock_connect=timeout.get("connect"),
                sock_read=timeout.get("read"),
                connect=timeout.get("pool"),
            ),
            server_hostname=request.extensions.get("sni_hostname"),
        ) as response:
            body = await response.read()
            extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
            if response.reason:
                extensions["reason_phrase"] = response.reason.encode()
            return httpx.Response(
                status_code=response.status,
                headers=response.raw_headers,
                stream=httpx.ByteStream(body),
                request=request,
                extensions=extensions,
            )


def _remapped(exc: httpx.ConnectTimeout, request: httpx.Request) -> httpx.TransportError:
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientProxyConnectionError):
        return httpx.ProxyError(str(cause), request=request)
    if isinstance(cause, aiohttp.ClientConnectorError):  # refused, unreachable, DNS, TLS handshake
        return httpx.ConnectError(str(cause), request=request)
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(str(cause) or "Server disconnected", request=request)
    if isinstance(cause, aiohttp.ClientOSError):  # reset or broken pipe on an established connection
        return httpx.ReadError(f"{type(cause).__name__}: {cause}", request=request)
    return exc


def _limits(connections: int) -> httpx.Limits:
    return httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=KEEPALIVE_EXPIRY
    )


def env_proxies_set() -> bool:
    """Whether a proxy variable (or the OS proxy settings urllib reads) could apply to a request."""
    return any(v for k, v in urllib.request.getproxies().items() if k in ("http", "https", "all"))


def transport_choice() -> str:
    """``"aiohttp"`` or ``"httpx"``, from :data:`HTTP_CLIENT_ENV`; raises ``ValueError`` on other values."""
    choice = (settings.get(HTTP_CLIENT_ENV) or "aiohttp").strip().lower()
    if choice not in ("aiohttp", "httpx"):
        raise ValueError(f"{HTTP_CLIENT_ENV} must be 'aiohttp' or 'httpx', not {choice!r}")
    return choice


HTTPStack = httpx.AsyncBaseTransport | httpx.AsyncClient
"""What :func:`make_http_transport` returns and ``OpenAIClient`` sends through; both close with
``aclose()``."""


def _aiohttp_transport(limits: httpx.Limits) -> AioHTTPTransport:
    """The aiohttp transport with its session built the way ``httpx-aiohttp`` builds it (keep-alive pool
    of ``limits.max_connections``, httpx's SSL context), plus a no-op cookie jar: an OpenAI-compatible
    API is stateless, and aiohttp would otherwise parse and store every ``Set-Cookie`` and filter its jar
    on every request. The session is created lazily by the transport inside the running loop."""
    ssl_context = httpx.create_ssl_context()
    max_connections = limits.max_connections or 0  # aiohttp: 0 = unbounded

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=max_connections, keepalive_timeout=limits.keepalive_expiry, ssl=ssl_context
        )
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    return AioHTTPTransport(verify=ssl_context, limits=limits, client=session)


def _make_stack(connections: int, timeout: httpx.Timeout) -> HTTPStack:
    if connections < 1:
        raise ValueError("connections must be >= 1")
    limits = _limits(connections)
    choice = transport_choice()
    if env_proxies_set():
        return httpx.AsyncClient(timeout=timeout, headers={"User-Agent": USER_AGENT}, limits=limits)
    if choice == "httpx":
        return httpx.AsyncHTTPTransport(limits=limits)
    return _aiohttp_transport(limits)


def make_http_transport(connections: int, timeout: httpx.Timeout) -> HTTPStack:
    """What the engine hands to ``OpenAIClient``: a keep-alive pool of ``connections``.

    By default the aiohttp transport; ``httpx.AsyncHTTPTransport`` (httpx's own) when
    :data:`HTTP_CLIENT_ENV` is ``httpx``; and, when an environment proxy is configured, a plain
    ``httpx.AsyncClient`` with ``timeout`` and our User-Agent (see the module docstring). A transport
    has no default timeout: ``OpenAIClient`` sets one on every request (``request.extensions``). The
    caller closes the result with ``aclose()``.
    """
    return _make_stack(connections, timeout)


def make_http_client(connections: int, timeout: httpx.Timeout) -> httpx.AsyncClient:
    """A plain ``httpx.AsyncClient`` over the transport :func:`make_http_transport` picks (keep-alive pool
    of ``connections``, our User-Agent, ``timeout``), for callers that want httpx's client API; the
    engine sends through the transport directly. The caller closes it with ``aclose()``.
    """
    stack = _make_stack(connections, timeout)
    if isinstance(stack, httpx.AsyncClient):
        return stack
    return httpx.AsyncClient(
        transport=stack, timeout=timeout, headers={"User-Agent": USER_AGENT}, limits=_limits(connections)
    )
