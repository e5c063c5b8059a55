"""The end of a NeMo job as the backend sees it: wait for it, then its failure or its results.

``finish_job`` waits (``polling``); an interrupt cancels the remote job before propagating; a job that
did not complete raises ``NemoJobError`` with the service's message and logs; a completed one has its
aggregate results and per-sample ZIP fetched and mapped (``results.build_result``) into an
``EvalResult``. Job records handed on are redacted.
"""

from __future__ import annotations

import datetime
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from mlflow_nemo_judge.backends.nemo.jobapi import JobApi
from mlflow_nemo_judge.backends.nemo.results import build_result, read_results_zip
from mlflow_nemo_judge.config.groups import top_level_members
from mlflow_nemo_judge.config.secrets import redact
from mlflow_nemo_judge.errors import NemoJobError, NemoServiceError
from mlflow_nemo_judge.results import EvalResult

__all__ = ["finish_job"]

log = logging.getLogger(__name__)

# The poll loop, bound to one job: (job_id, job) -> the job record in a terminal status.
Wait = Callable[[str, dict[str, Any]], dict[str, Any]]


def _parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)


def finish_job(
    jobs: JobApi,
    job_id: str,
    job: dict[str, Any],
    wait: Wait,
    *,
    start: float,
    server_time: bool,
    work_dir: Path | None,
) -> EvalResult:
    """Wait for ``job`` and return its results (see the module docstring).

    ``server_time``: the wall time is the job's own ``created_at``..``updated_at`` (an attached job
    started before ``start``). ``work_dir`` None: the result gets a temp folder it owns and removes."""
    try:
        job = wait(job_id, job)
    except KeyboardInterrupt:
        _cancel_quietly(jobs, job_id)
        raise
    status = job.get("status")
    if status != "completed":
        message = jobs.failure(job) or "no message from the service"
        logs = _logs_quietly(jobs, job_id)
        what = "was cancelled" if status == "cancelled" else "failed"
        raise NemoJobError(f"NeMo job {job_id} {what}: {message}", job_id=job_id, job=redact(job), logs=logs)
    results = jobs.results(job_id)
    samples = None
    try:
        samples, _ = read_results_zip(jobs.samples_zip(job_id))
    except (NemoServiceError, ValueError) as exc:  # ValueError: zipfile.BadZipFile
        log.warning(
            "per-sample results of job %s are unavailable (%s); statistics come from the "
            "service's aggregates",
            job_id,
            exc,
        )
    wall = time.monotonic() - start
    if server_time:
        t0, t1 = _parse_time(job.get("created_at")), _parse_time(job.get("updated_at"))
        if t0 is not None and t1 is not None and t1 >= t0:
            wall = (t1 - t0).total_seconds()
    own_dir = work_dir is None
    job_dir = (
        Path(tempfile.mkdtemp(prefix=f"nemo-judge-{job_id}-")) if work_dir is None else work_dir / job_id
    )
    # Group scores are pooled from their tasks' samples, as locally; the job's config names the members.
    config = job.get("config")
    config = config if isinstance(config, Mapping) else {}
    groups = top_level_members(config.get("groups"))  # nested groups' tasks included
    sd = job.get("status_details") or {}
    result = build_result(
        results,
        samples,
        work_dir=job_dir,
        job=redact(job),
        group_tasks=groups,
        samples_processed=sd.get("samples_processed"),
        wall_seconds=wall,
    )
    if own_dir:
        result.own(job_dir)  # removed with the result, so no run leaves a temp folder behind
    return result


def _cancel_quietly(jobs: JobApi, job_id: str) -> None:
    try:
        jobs.cancel(job_id, timeout=5.0)
        log.warning("interrupted: asked NeMo to cancel job %s", job_id)
    except (NemoServiceError, httpx.HTTPError) as exc:
        # Cancel is unimplemented on some versions (reference §4.5); the interrupt still wins.
        log.warning("interrupted: could not cancel NeMo job %s (%s); it may still be running", job_id, exc)


def _logs_quietly(jobs: JobApi, job_id: str) -> str | None:
    try:
        return jobs.logs(job_id)
    except NemoServiceError as exc:
        log.warning("could not fetch the logs of job %s: %s", job_id, exc)
        return None
