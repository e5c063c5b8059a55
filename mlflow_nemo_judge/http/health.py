"""Per-endpoint health: stop a run whose endpoint keeps failing instead of finishing it with NaNs.

One :class:`EndpointHealth` per (URL, model id), fed by :class:`~.openai.OpenAIClient` in O(1) per
attempt and per call. An endpoint is condemned, and every later call to it raises
:class:`EndpointUnhealthy` (which the engine turns into a FAILED run with one line), when:

1. **it never worked**: ``fail_first`` attempts (default 8) failed hard and none ever succeeded. A hard
   failure is a connection error or timeout, a dropped connection, a 5xx, a malformed 200 or a
   non-retryable 4xx (400, 422, …); a 429 is the endpoint speaking (rate limiting), not failing, and is
   not counted. Attempts, not calls, are counted, so a dead endpoint stops after its first round or two
   of retries (well under a second with the default backoff and a parallelism of 4 or more), not after
   every call has waited out all its retries. At 40 % transient faults (2/3 of them hard) the chance
   that the first 8 outcomes are all hard failures is ~1e-4; at 20 %, ~1e-8.
2. **it stopped working**: among the last ``min_calls`` finished calls (default 20) more than
   ``fail_share`` (default 0.5) failed. A call counts once, after all its retries *and* its second
   round (see ``OpenAIClient``), so transient faults that the retries absorb never count.
3. **it refuses us**: 401, 403 or 404 (a wrong key, URL or model id fails every call the same way).

The thresholds are ``NEMO_JUDGE_FAIL_FIRST``, ``NEMO_JUDGE_FAIL_MIN_CALLS`` and
``NEMO_JUDGE_FAIL_SHARE`` (:mod:`mlflow_nemo_judge.settings`); ``NEMO_JUDGE_FAIL_SHARE=1`` turns rule 2
off. Rows that fail on their own (one prompt too long, a content filter) stay per-row NaNs with the
reason, as long as most calls succeed.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from mlflow_nemo_judge.errors import EndpointUnhealthy

__all__ = ["FATAL_STATUSES", "EndpointHealth", "EndpointUnhealthy", "HealthPolicy"]

FATAL_STATUSES = frozenset({401, 403, 404})


@dataclass(frozen=True)
class HealthPolicy:
    fail_first: int = 8
    min_calls: int = 20
    fail_share: float = 0.5

    @classmethod
    def from_settings(cls) -> HealthPolicy:
        from mlflow_nemo_judge import settings

        return cls(
            fail_first=settings.get_int("NEMO_JUDGE_FAIL_FIRST", minimum=1),
            min_calls=settings.get_int("NEMO_JUDGE_FAIL_MIN_CALLS", minimum=1),
            fail_share=_share(settings.get("NEMO_JUDGE_FAIL_SHARE")),
        )


def _share(raw: str | None) -> float:
    """``NEMO_JUDGE_FAIL_SHARE`` as a number in [0, 1]; anything else is a one-line config error."""
    from mlflow_nemo_judge.errors import ConfigError

    try:
        value = float(raw) if raw is not None else 0.5
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise ConfigError(
            "NEMO_JUDGE_FAIL_SHARE",
            f"environment variable NEMO_JUDGE_FAIL_SHARE must be a number from 0 to 1, got {raw!r}",
        )
    return value


class EndpointHealth:
    """Counters of one endpoint; ``url`` is already redacted (it goes into the error line)."""

    def __init__(self, url: str, model_id: str, policy: HealthPolicy) -> None:
        self.url, self.model_id, self.policy = url, model_id, policy
        self.ok_calls = 0
        self.failed_calls = 0
        self.hard_attempts = 0  # failed attempts before the first success (rule 1)
        self.recent: deque[bool] = deque(maxlen=policy.min_calls)  # True = the call failed
        self.recent_failed = 0
        self.condemned: tuple[str, int | None] | None = None  # (message, status) once condemned

    def _error(self) -> EndpointUnhealthy:
        assert self.condemned is not None
        # A fresh exception per raise: several calls re-raise it, each with its own traceback.
        return EndpointUnhealthy(self.url, *self.condemned)

    def check(self) -> None:
        """Raise if the endpoint was condemned (by this call or another one)."""
        if self.condemned is not None:
            raise self._error()

    def condemn(self, message: str, status: int | None = None) -> EndpointUnhealthy:
        """Condemn the endpoint (the first reason wins) and return the error to raise."""
        if self.condemned is None:
            self.condemned = (f"model {self.model_id!r}: {message}", status)
        return self._error()

    def refused(self, status: int, failure: str) -> EndpointUnhealthy:
        """Rule 3: a 401/403/404 condemns at once."""
        return self.condemn(f"the endpoint refuses the request ({failure})", status)

    def attempt_failed(self, failure: str, status: int | None, hard: bool) -> None:
        """One attempt failed; raises when rule 1 condemns the endpoint."""
        if not hard or self.ok_calls:
            return
        self.hard_attempts += 1
        if self.hard_attempts >= self.policy.fail_first:
            raise self.condemn(
                f"{self.hard_attempts} of {self.hard_attempts} attempts failed (100%) and none has "
                f"succeeded; last failure: {failure}",
                status,
            )

    def call_done(self, failed: bool, failure: str = "", status: int | None = None) -> None:
        """One call finished for good (after retries and its second round); raises on rule 2."""
        if failed:
            self.failed_calls += 1
        else:
            self.ok_calls += 1
        recent = self.recent
        if len(recent) == recent.maxlen and recent[0]:
            self.recent_failed -= 1
        recent.append(failed)
        self.recent_failed += failed
        n = len(recent)
        if failed and n >= self.policy.min_calls and self.recent_failed > self.policy.fail_share * n:
            total = self.ok_calls + self.failed_calls
            raise self.condemn(
                f"{self.recent_failed} of the last {n} calls failed "
                f"({self.recent_failed / n:.0%}; {self.failed_calls} of {total} in this run); "
                f"last failure: {failure}",
                status,
            )
