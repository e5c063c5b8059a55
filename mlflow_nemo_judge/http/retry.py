"""Retry timing shared by every HTTP caller: jittered exponential backoff and server-given delays.

Backoff before retry ``n`` (``n`` = 0 for the first retry)::

    delay = min(cap, base * 2**n) * uniform(0.5, 1.0)

i.e. exponential growth capped at ``cap`` with "equal jitter" over the upper half of the window: the
jitter de-synchronises many workers that hit a rate limit together, while the 0.5 floor keeps the
backoff meaningfully exponential (full jitter over ``[0, cap]`` can retry almost at once). When the
server says how long to wait (``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP-date), that
delay is used as given, capped at ``cap``.

Written by hand rather than with tenacity/stamina/httpx-retries (all installable): those own the retry
*loop*, while our callers' loops do per-attempt bookkeeping (usage counters, the response cache, error
messages with the provider's text, "was this POST sent?" decisions) and take an injected ``sleep`` for
tests. What is left to share is a formula and a header parser, which a dependency would not shorten;
httpx-retries also retries inside the transport, where the attempts would be invisible to the caller.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping

# OpenAI-compatible endpoints: 408 timeout, 409 conflict (some gateways use it for transient lock
# contention), 429 rate limit; every 5xx is retried as well (see is_retryable_status).
RETRYABLE_STATUSES = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    """Whether an OpenAI-compatible endpoint's status is worth another try."""
    return status in RETRYABLE_STATUSES or status >= 500


def backoff_delay(
    retry_index: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``retry_index`` (0-based); see the module docstring.

    ``rng`` makes the jitter reproducible (tests, seeded runs); ``None`` uses the module-level generator.
    """
    if retry_after is not None:
        return min(cap, max(0.0, retry_after))
    # Exponent capped so a huge retry count cannot overflow the float.
    window = min(cap, base * 2.0 ** min(max(retry_index, 0), 60))
    return window * (rng.uniform(0.5, 1.0) if rng is not None else random.uniform(0.5, 1.0))


def _finite(value: float) -> float | None:
    return max(0.0, value) if math.isfinite(value) else None


def retry_after_seconds(headers: Mapping[str, str], *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``Retry-After``; ``None`` if
    absent or unparseable. ``headers`` must look names up case-insensitively (``httpx.Headers`` does);
    ``now`` is the wall clock an HTTP-date is measured against (injectable for tests)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = _finite(float(ms) / 1000.0)
        except ValueError:
            value = None
        if value is not None:
            return value
    ra = headers.get("retry-after")
    if ra is None:
        return None
    ra = ra.strip()
    try:
        return _finite(float(ra))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:  # older Pythons return None instead of raising
        return None
    if when.tzinfo is None:
        # HTTP-dates are GMT by definition; a naive result would otherwise be read as local time.
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - now())
