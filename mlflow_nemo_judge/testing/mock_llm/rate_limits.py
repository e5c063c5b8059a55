"""Per-model rate limits for the mock LLM server (a test double of a provider's requests-per-second cap).

``RateLimitConfig`` says how many requests per second each model admits; a request above that is
answered at once with a 429 carrying ``Retry-After`` (seconds, as ``%g``) and ``retry-after-ms``: the
time until the model admits a request again, as OpenAI-style providers do. Admitted requests are then
served as usual (latency, faults). ``RateLimiter`` also counts each model's requests in flight and their
peak, so tests can check what a client really sent at once.

Each model is a token bucket: ``rate`` tokens per second, holding at most ``max(1, rate × burst)``
(default burst 0.25 s), full at start; an admitted request takes one token, a refused one takes none.
Written by hand (15 lines of arithmetic): the well-kept asyncio limiter, aiolimiter, *waits* for
capacity and does not say when it returns, while a provider double must refuse at once and name the
wait in ``Retry-After``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mlflow_nemo_judge.testing.mock_llm.shapes import Reply, json_reply

__all__ = ["RateLimitConfig", "RateLimiter", "rate_limited_reply"]


@dataclass(frozen=True)
class RateLimitConfig:
    """Requests per second per model id (as requested, or the mock id it is an alias of)."""

    models: dict[str, float] = field(default_factory=dict)
    burst: float = 0.25  # seconds of the rate a model's bucket holds (at least one request)

    def __post_init__(self) -> None:
        if not isinstance(self.models, Mapping):
            raise ValueError("RateLimitConfig.models must map model ids to requests per second")
        for model, rate in self.models.items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
                raise ValueError(f"rate limit of {model!r} must be requests per second > 0, got {rate!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, (int, float)) or not self.burst >= 0:
            raise ValueError(f"RateLimitConfig.burst must be seconds >= 0, got {self.burst!r}")
        object.__setattr__(self, "models", {str(m): float(r) for m, r in self.models.items()})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RateLimitConfig:
        """From ``{"models": {id: rps}, "burst": s}`` (``/mock/config``); unknown keys are an error."""
        unknown = sorted(set(data) - {"models", "burst"})
        if unknown:
            raise ValueError(f"unknown rate limit field(s) {unknown}; known: ['burst', 'models']")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RateLimiter:
    """The buckets and in-flight counters of the configured models; safe to reconfigure from any thread."""

    def __init__(self, config: RateLimitConfig | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._config = config
        self._buckets: dict[str, tuple[float, float]] = {}  # model -> (tokens, at)
        self.in_flight: dict[str, int] = {}
        self.peak_in_flight: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.admitted: dict[str, int] = {}

    @property
    def config(self) -> RateLimitConfig | None:
        return self._config

    def set(self, config: RateLimitConfig | None) -> None:
        """Replace the limits; buckets start full and the counters from zero."""
        with self._lock:
            self._config = config
            self._buckets = {}
            self.in_flight, self.peak_in_flight, self.refused, self.admitted = {}, {}, {}, {}

    def admit(self, model: str, resolved: str) -> tuple[str | None, float | None]:
        """-> (the limited model id or None, None if admitted else seconds until it admits again).
        An admitted request of a limited model is in flight until :meth:`done`."""
        config = self._config
        if config is None:
            return None, None
        name = model if model in config.models else resolved if resolved in config.models else None
        if name is None:
            return None, None
        rate = config.models[name]
        capacity = max(1.0, rate * config.burst)
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(name, (capacity, now))
            tokens = min(capacity, tokens + (now - at) * rate)
            if tokens < 1.0:
                self._buckets[name] = (tokens, now)
                self.refused[name] = self.refused.get(name, 0) + 1
                return name, (1.0 - tokens) / rate
            self._buckets[name] = (tokens - 1.0, now)
            self.admitted[name] = self.admitted.get(name, 0) + 1
            n = self.in_flight[name] = self.in_flight.get(name, 0) + 1
            self.peak_in_flight[name] = max(self.peak_in_flight.get(name, 0), n)
        return name, None

    def done(self, name: str) -> None:
        with self._lock:
            self.in_flight[name] = self.in_flight.get(name, 1) - 1

    def stats(self) -> dict[str, Any]:
        """Counters per limited model (``/mock/config`` shows them)."""
        with self._lock:
            return {
                "admitted": dict(self.admitted),
                "refused": dict(self.refused),
                "in_flight": dict(self.in_flight),
                "peak_in_flight": dict(self.peak_in_flight),
            }


def rate_limited_reply(model: str, wait: float, why: str) -> Reply:
    """An OpenAI-shaped 429 asking the client to wait ``wait`` seconds."""
    return json_reply(
        429,
        {
            "error": {
                "message": f"Rate limit reached for {model} ({why}); retry after {wait:g}s.",
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        },
        headers=(("Retry-After", f"{wait:g}"), ("retry-after-ms", str(round(wait * 1000)))),
    )
