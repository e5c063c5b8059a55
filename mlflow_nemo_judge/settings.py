"""Every environment knob of mlflow-nemo-judge, declared once: name, type, default, what it does.

Modules read a knob through :func:`get` (or the typed helpers below), never ``os.environ`` directly,
so this table is the whole list, and the README's table is checked against it by a test.
MLflow's own variables (``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``, …) and Hugging Face's
(``HF_TOKEN``, ``HF_ENDPOINT``) keep their own meaning and are not repeated here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mlflow_nemo_judge.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: str | None
    doc: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "NEMO_JUDGE_CACHE_DIR",
        str,
        None,
        "folder of the persistent response cache (default: the user cache folder, "
        "e.g. ~/.cache/mlflow-nemo-judge)",
    ),
    Setting(
        "NEMO_JUDGE_TRACE_SAMPLES",
        int,
        "200",
        "per-sample MLflow traces logged per run (0 = none); the table and samples.jsonl hold every sample",
    ),
    Setting(
        "NEMO_JUDGE_HTTP_CLIENT",
        str,
        "aiohttp",
        "the engine's httpx transport: 'aiohttp' (httpx-aiohttp, for throughput) or 'httpx' (httpx's own)",
    ),
    Setting("NEMO_EVALUATOR_URL", str, None, "NeMo Evaluator base URL for --backend nemo"),
    Setting("NEMO_ENTITY_STORE_URL", str, None, "NeMo Entity Store base URL (default: the Evaluator URL)"),
    Setting("NEMO_DATASTORE_URL", str, None, "NeMo Data Store base URL (default: the Evaluator URL)"),
    Setting("NEMO_API_TOKEN", str, None, "bearer token sent to the NeMo services (never logged)"),
    Setting(
        "NEMO_JUDGE_TRACKING_CHECK_TIMEOUT",
        float,
        "5",
        "seconds the pre-flight request to an HTTP tracking server may take (one try) before the run "
        "is refused",
    ),
    Setting(
        "NEMO_JUDGE_TRACKING_LOCK_TIMEOUT",
        float,
        "120",
        "seconds to wait for another process initialising the same new sqlite tracking store",
    ),
    Setting(
        "NEMO_JUDGE_FAIL_FIRST",
        int,
        "8",
        "an endpoint whose first N attempts all fail (connection errors, 5xx, 4xx other than 429) with "
        "no success stops the run",
    ),
    Setting(
        "NEMO_JUDGE_FAIL_MIN_CALLS",
        int,
        "20",
        "the window of finished calls per endpoint over which NEMO_JUDGE_FAIL_SHARE is measured",
    ),
    Setting(
        "NEMO_JUDGE_FAIL_SHARE",
        float,
        "0.5",
        "an endpoint whose share of failed calls (after retries and the second round) among its last "
        "NEMO_JUDGE_FAIL_MIN_CALLS calls exceeds this stops the run (1 = never)",
    ),
)
SETTINGS += (
    Setting(
        "NEMO_JUDGE_JOB_TIMEOUT",
        float,
        "14400",
        "seconds --backend nemo waits for a job before giving up (the job keeps running; attach later); "
        "0 = no limit",
    ),
)
# Adaptive per-endpoint concurrency (mlflow_nemo_judge.http.limits): each endpoint (origin + model id)
# starts at its maximum (api_endpoint.max_concurrency, else parallelism) and moves by AIMD on 429s.
SETTINGS += (
    Setting(
        "NEMO_JUDGE_EARLY_START",
        str,
        "1",
        "1: a tracked single-target local run starts its model calls while MLflow is opened (when the "
        "store is a writable sqlite file or a server whose /health answers); 0: only after its run exists",
    ),
    Setting(
        "NEMO_JUDGE_AIMD_DECREASE",
        float,
        "0.75",
        "on a 429 an endpoint's concurrency limit is multiplied by this (once per round of calls, never "
        "below 1; 1 = fixed limits), and no request to it starts before its Retry-After",
    ),
    Setting(
        "NEMO_JUDGE_AIMD_INCREASE",
        float,
        "1",
        "slots an endpoint's limit grows back by per limit's worth of successful calls (about one per "
        "round trip), never above its maximum",
    ),
)
_BY_NAME = {s.name: s for s in SETTINGS}


def get(name: str) -> str | None:
    """The knob's value from the environment, else its default (an undeclared name is a bug)."""
    setting = _BY_NAME[name]
    value = os.environ.get(name)
    return value if value not in (None, "") else setting.default


def get_int(name: str, minimum: int = 0) -> int:
    """An integer knob; a malformed value is a clear error naming the variable."""
    raw = get(name)
    try:
        value = int(raw) if raw is not None else minimum
    except ValueError:
        raise ConfigError(name, f"environment variable {name} must be an integer, got {raw!r}") from None
    return max(minimum, value)


def trace_samples_default() -> int:
    return get_int("NEMO_JUDGE_TRACE_SAMPLES")


def get_seconds(name: str) -> float:
    """A non-negative number of seconds; a malformed or negative value is a clear error naming it."""
    raw = get(name)
    try:
        value = float(raw) if raw is not None else 0.0
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigError(name, f"environment variable {name} must be a number of seconds >= 0, got {raw!r}")
    return value


def job_timeout_default() -> float | None:
    """``NEMO_JUDGE_JOB_TIMEOUT`` in seconds, None for 0 (no limit): how long a NeMo job is waited for
    when the caller gave no timeout, so a job that never ends is not polled forever."""
    value = get_seconds("NEMO_JUDGE_JOB_TIMEOUT")
    return value if value > 0 else None
