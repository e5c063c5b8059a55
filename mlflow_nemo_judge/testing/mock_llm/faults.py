"""Seeded, per-request fault injection for the mock LLM server (a test double).

``FaultConfig`` says how often each fault happens; ``FaultInjector`` draws them from a seeded RNG so
a run is reproducible. Faults are transient (a retried request draws again), except ``status``, which
answers every request with one HTTP error (a dead or rejecting deployment).
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["CONTENT_FAULTS", "ERROR_FAULTS", "THINK_TEXT", "FaultConfig", "FaultInjector"]

# Faults that replace the response; they are mutually exclusive, so their probabilities share one draw.
ERROR_FAULTS: tuple[str, ...] = ("rate_limit", "server_error", "drop", "timeout", "malformed")
# Faults that change a 200's content, drawn (one draw) for requests that got no error fault.
CONTENT_FAULTS: tuple[str, ...] = ("think", "null_content", "empty_content")
#: What the ``think`` fault wraps in ``<think>...</think>`` before the answer.
THINK_TEXT = "some reasoning"


@dataclass(frozen=True)
class FaultConfig:
    """Per-request fault probabilities (0..1), drawn from a seeded RNG so a run is reproducible.

    ``rate_limit``, ``server_error``, ``drop``, ``timeout`` and ``malformed`` exclude one another (one
    draw decides among them, so their sum must be <= 1); ``think`` is drawn separately for requests that
    got no error fault. Faults are transient: a retried request draws again.
    """

    rate_limit: float = 0.0
    server_error: float = 0.0
    drop: float = 0.0
    timeout: float = 0.0
    malformed: float = 0.0
    think: float = 0.0
    null_content: float = 0.0  # a 200 whose content is null (finish_reason "length")
    empty_content: float = 0.0  # a 200 whose content is ""
    retry_after: float = 0.05
    timeout_seconds: float = 30.0
    only_models: list[str] | None = None
    # Draw each request's fault from (seed, its body, how many times it was sent) instead of one RNG in
    # arrival order: concurrent runs with the same seed then see the same faults on the same calls.
    per_request: bool = False
    status: int | None = None  # every request answers this HTTP error status (persistent, not drawn)
    echo_request: bool = False  # error bodies quote the request's headers and URL (a careless provider)

    def __post_init__(self) -> None:
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(
                f"FaultConfig.status must be an HTTP error status (400-599), got {self.status!r}"
            )
        if self.think + self.null_content + self.empty_content > 1.0 + 1e-9:
            raise ValueError("FaultConfig think, null_content and empty_content probabilities sum to > 1")
        for name in (*ERROR_FAULTS, *CONTENT_FAULTS):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"FaultConfig.{name} must be a probability in [0, 1], got {value!r}")
        total = self.error_rate
        if total > 1.0 + 1e-9:
            raise ValueError(f"FaultConfig error-fault probabilities sum to {total:g} > 1")
        if self.retry_after < 0 or self.timeout_seconds < 0:
            raise ValueError("FaultConfig.retry_after and timeout_seconds must be >= 0")
        if self.only_models is not None:
            if isinstance(self.only_models, str) or not all(isinstance(m, str) for m in self.only_models):
                raise ValueError("FaultConfig.only_models must be a list of model ids")
            # A private copy, so a caller mutating its list cannot change a running server's faults.
            object.__setattr__(self, "only_models", list(self.only_models))

    @classmethod
    def transient(cls, rate: float, **kwargs: Any) -> FaultConfig:
        """Split ``rate`` evenly across the retryable faults: rate_limit, server_error and drop."""
        share = rate / 3.0
        return cls(rate_limit=share, server_error=share, drop=share, **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultConfig:
        """Build from a JSON-ish mapping (``/mock/config``, CLI); unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))

    @property
    def error_rate(self) -> float:
        return float(sum(getattr(self, name) for name in ERROR_FAULTS))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_NO_FAULTS = FaultConfig()


class FaultInjector:
    """The current ``FaultConfig`` and its seeded RNG; safe to reconfigure from any thread."""

    def __init__(self, faults: FaultConfig | None, seed: int) -> None:
        self.seed = seed
        # (config, rng) swapped as one tuple so a request never sees a config with another config's RNG.
        self._state: tuple[FaultConfig | None, random.Random] = (faults, random.Random(seed))
        self._seen: dict[str, int] = {}  # request body -> times drawn (the per-request draws)
        self._lock = threading.Lock()

    @property
    def config(self) -> FaultConfig | None:
        return self._state[0]

    def set(self, faults: FaultConfig | None) -> None:
        """Replace the config; the RNG is reseeded so the same config gives the same faults."""
        self._state = (faults, random.Random(self.seed))
        with self._lock:
            self._seen = {}

    def draw(self, model: str, resolved: str, key: str | None = None) -> tuple[str | None, FaultConfig]:
        """-> (fault name or None, the config it was drawn from, whose retry/timeout settings apply).

        With ``FaultConfig.per_request`` and ``key`` (the request body) the draw depends only on the seed, the body and how many times
        this body was asked before (a retry draws again), not on the order in which concurrent requests
        arrive: a seeded run then gets the same faults on the same calls every time."""
        faults, rng = self._state
        if faults is not None and faults.per_request and key is not None:
            with self._lock:
                n = self._seen.get(key, 0)
                self._seen[key] = n + 1
            digest = hashlib.sha256(f"{self.seed}:{n}:{key}".encode()).digest()
            rng = random.Random(int.from_bytes(digest[:8], "big"))
        if faults is None:
            return None, _NO_FAULTS
        if (
            faults.only_models is not None
            and model not in faults.only_models
            and resolved not in faults.only_models
        ):
            return None, faults
        if faults.status is not None:
            return "status", faults
        for names in (ERROR_FAULTS, CONTENT_FAULTS):
            total = sum(getattr(faults, name) for name in names)
            if total > 0:
                draw, threshold = rng.random(), 0.0
                for name in names:
                    threshold += getattr(faults, name)
                    if draw < threshold:
                        return name, faults
        return None, faults
