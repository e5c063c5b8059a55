"""HTTP client construction for the engine.

httpx's connection pool (httpcore 1.0) does work proportional to queued requests × pooled connections
on every request it schedules; with one client of 128 connections that bookkeeping, not the network,
caps a run at ~100 requests/s on a 2-core machine (measured: see bench/RESULTS.md). Sharding the same
number of connections over several small clients keeps each pool's bookkeeping tiny, so throughput is
set by the endpoints again. Requests are spread round-robin; the caller's semaphore still bounds the
total in flight.
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx

# Connections per shard: small enough that the pool scan stays cheap, large enough that few shards exist.
SHARD_CONNECTIONS = 8


class ShardedAsyncClient:
    """A drop-in for the subset of ``httpx.AsyncClient`` the engine uses (``post``, ``aclose``)."""

    def __init__(self, connections: int, timeout: httpx.Timeout, shard_size: int = SHARD_CONNECTIONS) -> None:
        n = max(1, -(-connections // shard_size))
        per = max(1, -(-connections // n))
        self.clients = [httpx.AsyncClient(limits=httpx.Limits(max_connections=per, max_keepalive_connections=per),
                                          timeout=timeout) for _ in range(n)]
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
