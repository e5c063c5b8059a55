"""Per-endpoint concurrency limits that adapt to rate limiting (AIMD).

Each endpoint — the request URL's ``scheme://host:port`` plus the model id — gets its own
:class:`AdaptiveLimit`, so a target and judges on different providers (or different models behind one
gateway) no longer share one semaphore. The model id is part of the key because gateways and hosted
APIs (OpenAI, build.nvidia.com, NIM behind a proxy) rate-limit per model: a slow judge model must not
throttle the target served by the same host. The path is not part of it: ``/v1/chat/completions`` and
``/v1/completions`` of one model share the provider's limit.

Each limit starts at its maximum — ``api_endpoint.max_concurrency`` of the model, else the run's
``parallelism`` — so a run that is never rate limited behaves exactly as with one fixed semaphore. Then:

* **multiplicative decrease**: on a 429 the limit is multiplied by ``NEMO_JUDGE_AIMD_DECREASE``
  (default 0.75), never below 1. Only once per round of calls: a 429 on a request sent *before* the
  previous decrease says nothing new (a burst of 32 rejected requests is one signal, not 32, or the
  limit would collapse to 1 on every burst). ``Retry-After`` is honoured for the endpoint, not only by
  the call that got it: no new request to the endpoint starts before the time the server named (capped
  at the client's ``backoff_max``); the call that got the 429 waits it out itself before its retry.
* **additive increase**: every successful call adds ``NEMO_JUDGE_AIMD_INCREASE / limit`` (default
  1.0 / limit) — one slot per limit's worth of successes, i.e. about one slot per round trip, as TCP's
  congestion avoidance — up to the maximum, never above it.

``NEMO_JUDGE_AIMD_DECREASE=1`` turns the adaptation off (a fixed limit per endpoint). A 429 never
counts against endpoint health (:mod:`.health`); this module only paces.

Written by hand: the well-kept asyncio limiters are rate limiters (aiolimiter's leaky bucket) or fixed
bounds (aiometer's ``max_at_once``, ``asyncio.Semaphore``, whose size cannot change while tasks wait);
the AIMD packages on PyPI are young single-release projects. What is needed is a semaphore whose size
moves, ~60 lines below.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

__all__ = ["AdaptiveLimit", "AimdPolicy", "EndpointKey", "EndpointLimits"]

# (scheme, host, port, model id): see the module docstring for why the model id is part of it.
EndpointKey = tuple[str, str, int | None, str]


@dataclass(frozen=True)
class AimdPolicy:
    """AIMD parameters; defaults from ``NEMO_JUDGE_AIMD_DECREASE`` and ``NEMO_JUDGE_AIMD_INCREASE``."""

    decrease: float = 0.75  # the limit is multiplied by this on a 429 (1 = never adapt)
    increase: float = 1.0  # slots added per limit's worth of successful calls

    def __post_init__(self) -> None:
        if not 0.0 < self.decrease <= 1.0:
            raise ValueError(f"the AIMD decrease factor must be in (0, 1], got {self.decrease!r}")
        if not self.increase >= 0.0 or math.isinf(self.increase):
            raise ValueError(f"the AIMD increase must be a finite number >= 0, got {self.increase!r}")

    @classmethod
    def from_settings(cls) -> AimdPolicy:
        from mlflow_nemo_judge import settings
        from mlflow_nemo_judge.errors import ConfigError

        values: list[float] = []
        for name in ("NEMO_JUDGE_AIMD_DECREASE", "NEMO_JUDGE_AIMD_INCREASE"):
            raw = settings.get(name)
            try:
                values.append(float(raw) if raw is not None else math.nan)
            except ValueError:
                values.append(math.nan)
        try:
            return cls(decrease=values[0], increase=values[1])
        except ValueError as exc:
            raise ConfigError("NEMO_JUDGE_AIMD", f"environment variables NEMO_JUDGE_AIMD_*: {exc}") from None


class AdaptiveLimit:
    """One endpoint's concurrency bound: a FIFO semaphore of ``floor(limit)`` slots, ``limit`` moving
    between 1 and ``maximum`` (AIMD, see the module docstring). Bound to the event loop it first waits
    on, like asyncio's own primitives (the client makes one set per loop)."""

    def __init__(
        self,
        maximum: int,
        policy: AimdPolicy,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        pause_cap: float = 30.0,
    ) -> None:
        if maximum < 1:
            raise ValueError("maximum must be >= 1")
        self.maximum = maximum
        self.configured = False  # whether `maximum` came from the model's own max_concurrency
        self.policy = policy
        self.limit = float(maximum)
        self.in_flight = 0
        # What tests and benchmarks read: the most requests ever in flight, the lowest limit reached,
        # how many decreases happened.
        self.peak_in_flight = 0
        self.lowest = float(maximum)
        self.decreases = 0
        self._epoch = 0  # bumped by every decrease; a request remembers the epoch it was sent in
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._paused_until = 0.0  # loop time before which no new request starts (Retry-After)
        self._sleep = sleep
        self._pause_cap = pause_cap

    @property
    def slots(self) -> int:
        return max(1, min(self.maximum, int(self.limit)))

    def set_maximum(self, maximum: int, *, configured: bool) -> None:
        """Lower (or, for an explicitly configured value over the default, set) the maximum: the
        smallest explicit value among the endpoint's models wins, an explicit value wins over the
        default."""
        if configured and not self.configured:
            self.maximum, self.configured, self.limit = maximum, True, float(maximum)
        elif configured and maximum < self.maximum:
            self.maximum = maximum
            self.limit = min(self.limit, float(maximum))
        self.lowest = min(self.lowest, self.limit)
        self._wake()

    async def acquire(self, *, waited_until: float | None = None) -> int:
        """Wait for a slot, then for the endpoint's ``Retry-After`` pause (holding the slot, so the
        callers queued behind it spend no attempt on a certain 429); returns the epoch the request is
        sent in (for :meth:`rate_limited`). ``waited_until``: the loop time up to which the caller has
        already waited (its own ``Retry-After``), which counts towards the pause."""
        if not self._waiters and self.in_flight < self.slots:
            self.in_flight += 1
        else:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut  # whoever sets the result has counted this request in flight already
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self.release()  # granted, then cancelled before it ran: hand the slot on
                else:
                    self._waiters.remove(fut)
                raise
        try:
            # A few rounds at most: another 429 may extend the pause while this one sleeps, but an
            # injected sleep that does not advance the clock (tests) must not spin.
            for _ in range(4):
                now = asyncio.get_running_loop().time()
                delay = self._paused_until - max(now, waited_until or now)
                if delay <= 0:
                    break
                await self._sleep(delay)
                waited_until = now + delay
        except BaseException:
            self.release()
            raise
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return self._epoch

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.slots:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    def succeeded(self) -> None:
        """A call succeeded: additive increase, up to the maximum."""
        if self.limit < self.maximum and self.policy.increase > 0:
            self.limit = min(float(self.maximum), self.limit + self.policy.increase / self.limit)
            self._wake()

    def rate_limited(self, epoch: int, retry_after: float | None) -> None:
        """A 429 on a request sent in ``epoch``: multiplicative decrease (once per round) and a pause
        of the endpoint until the server's ``Retry-After``."""
        if epoch == self._epoch and self.policy.decrease < 1.0:
            self.limit = max(1.0, self.limit * self.policy.decrease)
            self.lowest = min(self.lowest, self.limit)
            self.decreases += 1
            self._epoch += 1
        if retry_after is not None and retry_after > 0:
            until = asyncio.get_running_loop().time() + min(retry_after, self._pause_cap)
            self._paused_until = max(self._paused_until, until)


class EndpointLimits:
    """The :class:`AdaptiveLimit` of every endpoint a client calls, made per event loop: asyncio
    primitives bind to the loop that first waits on them, and a client may be reused across separate
    ``asyncio.run()`` calls (what a limit learnt is then forgotten, as with a fresh semaphore)."""

    def __init__(
        self,
        default: int,
        policy: AimdPolicy,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        pause_cap: float = 30.0,
    ) -> None:
        self.default, self.policy, self._sleep, self._pause_cap = default, policy, sleep, pause_cap
        self._limits: dict[EndpointKey, AdaptiveLimit] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self, url: httpx.URL, model_id: str, maximum: int | None) -> AdaptiveLimit:
        """The limit of (``url``'s origin, ``model_id``); ``maximum`` is the model's own
        ``max_concurrency`` (None: the default)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._limits, self._loop = {}, loop
        key = (url.scheme, url.host, url.port, model_id)
        lim = self._limits.get(key)
        if lim is None:
            lim = self._limits[key] = AdaptiveLimit(
                self.default, self.policy, sleep=self._sleep, pause_cap=self._pause_cap
            )
        if maximum is not None and (not lim.configured or maximum < lim.maximum):
            lim.set_maximum(maximum, configured=True)
        return lim

    def current(self) -> dict[EndpointKey, AdaptiveLimit]:
        return dict(self._limits)
