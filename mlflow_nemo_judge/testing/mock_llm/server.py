"""The mock LLM server's HTTP/1.1 layer and lifecycle: pure-stdlib asyncio on its own loop and thread.

Keep-alive, pipelining, ``Content-Length`` and chunked request bodies, ``Expect: 100-continue``; what
each request gets back is decided in ``routes``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from types import TracebackType
from typing import Any

from mlflow_nemo_judge.testing.mock_llm.faults import FaultConfig, FaultInjector
from mlflow_nemo_judge.testing.mock_llm.rate_limits import RateLimitConfig, RateLimiter
from mlflow_nemo_judge.testing.mock_llm.routes import MockRoutes, RequestLogEntry, Sleep
from mlflow_nemo_judge.testing.mock_llm.shapes import OWNED_BY, BadRequest, Reply, error_reply

__all__ = ["STARTUP_LINE", "MockLLMServer"]

# The package's logger name from before the split, so existing log configuration still applies.
logger = logging.getLogger("mlflow_nemo_judge.testing.mock_llm")

STARTUP_LINE = "MOCK LLM SERVER (test double) listening on {url}"

_MAX_BODY = 64 * 1024 * 1024
_PHRASES = {status.value: status.phrase for status in HTTPStatus}


class MockLLMServer:
    """The mock OpenAI-compatible server, run on loopback in a daemon thread with its own event loop.

    ``aliases`` maps extra model ids (for example a real model name in a config) onto mock ids;
    ``log_limit`` bounds the request log so a 100k-request benchmark does not hold every body.
    ``sleep`` (an awaitable, default ``asyncio.sleep``) serves the latency and the ``timeout`` fault and
    ``clock`` (default ``time.time``) stamps the log, so tests can observe waits rather than time them.
    ``rate_limits`` caps each listed model's requests per second (429 with ``Retry-After`` above it).
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
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rate_limits: RateLimitConfig | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self._routes = MockRoutes(
            aliases=aliases or {},
            latency=latency,
            faults=FaultInjector(faults, seed),
            log_limit=log_limit,
            sleep=sleep,
            clock=clock,
            rate_limits=RateLimiter(rate_limits),
        )
        self.aliases = self._routes.aliases
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

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
        return self._routes.latency

    def set_latency(self, seconds: float) -> None:
        self._routes.set_latency(seconds)

    @property
    def faults(self) -> FaultConfig | None:
        return self._routes.faults.config

    def set_faults(self, faults: FaultConfig | None) -> None:
        """Replace the fault config; the RNG is reseeded so the same config gives the same fault count."""
        self._routes.faults.set(faults)

    @property
    def rate_limits(self) -> RateLimitConfig | None:
        return self._routes.rate_limits.config

    def set_rate_limits(self, limits: RateLimitConfig | None) -> None:
        """Replace the per-model rate limits; buckets start full and the counters from zero."""
        self._routes.rate_limits.set(limits)

    @property
    def rate_limiter(self) -> RateLimiter:
        """The limiter, whose counters (admitted, refused, in flight and its peak per model) tests read."""
        return self._routes.rate_limits

    @property
    def requests(self) -> list[RequestLogEntry]:
        """A snapshot of the request log (model endpoints only), oldest first."""
        return self._routes.requests

    @property
    def request_count(self) -> int:
        """Requests seen since the last ``clear_log()``, including those the bounded log let go."""
        return self._routes.request_count

    def clear_log(self) -> None:
        self._routes.clear_log()

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
                        _encode(error_reply(431, "request head too large", "invalid_request_error"), False)
                    )
                    return
                try:
                    reply, keep_alive = await self._handle_request(head, reader, writer)
                except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    # A bug in the mock must surface as a 500 the test can see, not a silent hang-up.
                    logger.exception("mock LLM server failed on a request")
                    reply = error_reply(500, f"mock LLM server bug: {exc!r}", "server_error")
                    keep_alive = False
                if reply is None:  # the "drop" fault: close without a byte of response
                    writer.transport.abort()
                    return
                writer.write(_encode(reply, keep_alive))
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
    ) -> tuple[Reply | None, bool]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return error_reply(400, "malformed request line", "invalid_request_error"), False
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        try:
            body = await _read_body(headers, reader, writer)
        except BadRequest as exc:
            return error_reply(exc.status, str(exc), exc.kind), False
        path = target.split("?", 1)[0]
        return await self._routes.dispatch(method, path, body, headers, target), keep_alive


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
                raise BadRequest(400, "malformed chunk size") from None
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers carry nothing the mock needs
                return b"".join(chunks)
            size_total += size
            if size_total > _MAX_BODY:
                raise BadRequest(413, "request body too large")
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        raise BadRequest(400, "invalid Content-Length")
    length = int(length_text)
    if length > _MAX_BODY:
        raise BadRequest(413, "request body too large")
    return await reader.readexactly(length) if length else b""


def _encode(reply: Reply, keep_alive: bool) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in reply.headers)
    head = (
        f"HTTP/1.1 {reply.status} {_PHRASES.get(reply.status, '')}\r\n"
        f"Server: {OWNED_BY}\r\n"
        f"Content-Type: {reply.content_type}\r\n"
        f"Content-Length: {len(reply.body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n{extra}\r\n"
    )
    return head.encode("latin-1") + reply.body
