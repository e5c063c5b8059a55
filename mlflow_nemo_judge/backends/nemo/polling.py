"""The nemo backend's wait for a job: poll its status until it ends, reporting progress on the way.

The interval starts at ``poll_interval`` and grows by half each poll without news, up to
``max_poll_interval``, so a busy job is followed closely and an idle one is not hammered. ``timeout``
bounds the whole wait (the job is left on the service: it can be attached to later). A status this
client does not know (the enums have grown before) is polled through with one warning, but only for
``unknown_status_timeout`` seconds in a row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from mlflow_nemo_judge.backends.base import ProgressCallback
from mlflow_nemo_judge.backends.nemo.jobapi import JobApi
from mlflow_nemo_judge.config.secrets import redact
from mlflow_nemo_judge.errors import NemoJobError, NemoJobTimeout

__all__ = ["ACTIVE", "TERMINAL", "job_progress", "wait_for_job"]

# The normalised (v1) statuses, see ``jobapi``; anything else is unknown to the poll loop.
ACTIVE = frozenset({"created", "pending", "running", "cancelling"})
TERMINAL = frozenset({"completed", "failed", "cancelled"})

log = logging.getLogger(__name__)


def job_progress(job: Mapping[str, Any], status: str) -> tuple[int, int | None] | None:
    """``(done, total)`` from the job's ``status_details``: samples when counted, else percent."""
    sd = job.get("status_details") or {}
    pct, done = sd.get("progress"), sd.get("samples_processed")
    if isinstance(done, int):
        total = round(done * 100.0 / pct) if isinstance(pct, (int, float)) and pct > 0 else None
        return done, total
    if isinstance(pct, (int, float)):
        return int(round(pct)), 100
    if status == "completed":
        return 100, 100
    return None


def wait_for_job(
    jobs: JobApi,
    job_id: str,
    job: dict[str, Any],
    progress: ProgressCallback | None,
    *,
    poll_interval: float,
    max_poll_interval: float,
    timeout: float | None,
    unknown_status_timeout: float,
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    """Poll until a terminal status and return that job record (see the module docstring).

    ``sleep`` is the only way this waits, so the caller's sleep can raise ``KeyboardInterrupt`` to
    stop the wait (the backend then cancels the job)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    interval = poll_interval
    tasks = (job.get("config") or {}).get("tasks") if isinstance(job.get("config"), Mapping) else None
    label = next(iter(tasks)) if isinstance(tasks, Mapping) and len(tasks) == 1 else "job"
    warned: set[str] = set()
    unknown_since: float | None = None
    last: tuple[int, int | None] | None = None
    last_status = None
    while True:
        status = str(job.get("status"))
        if status != last_status:
            log.info("NeMo job %s: %s", job_id, status)
        report = job_progress(job, status)
        moved = report is not None and report != last
        changed = moved or status != last_status
        if moved and progress is not None and report is not None:
            progress(label, report[0], report[1])
        last = report if report is not None else last
        last_status = status
        if status in TERMINAL:
            return job
        now = time.monotonic()
        if status in ACTIVE:
            unknown_since = None
        else:
            unknown_since = now if unknown_since is None else unknown_since
            if status not in warned:
                warned.add(status)
                log.warning(
                    "NeMo job %s reports status %r, which this client does not know; polling for "
                    "up to %gs more",
                    job_id,
                    job.get("api_status", status),
                    unknown_status_timeout,
                )
            if now - unknown_since >= unknown_status_timeout:
                raise NemoJobError(
                    f"NeMo job {job_id} has reported the unknown status "
                    f"{job.get('api_status', status)!r} for {now - unknown_since:.0f}s "
                    f"(limit {unknown_status_timeout:g}s); it is left on the service: check "
                    "it there, or attach to it later with its id",
                    job_id=job_id,
                    job=redact(job),
                )
        if deadline is not None and now >= deadline:
            raise NemoJobTimeout(
                f"NeMo job {job_id} did not finish within {timeout:g}s (status {status}); "
                f"it is still on the service: attach to it later with its id",
                job_id=job_id,
                job=redact(job),
            )
        wait = interval if deadline is None else max(0.0, min(interval, deadline - now))
        if unknown_since is not None:
            wait = max(0.0, min(wait, unknown_since + unknown_status_timeout - now))
        sleep(wait)
        # Grow the interval only while nothing moves, so a busy job is followed closely.
        interval = interval if changed else min(interval * 1.5, max_poll_interval)
        job = jobs.get(job_id)
