"""The ``nemo`` backend: run a config as a NeMo Evaluator job and return the same ``EvalResult`` as local.

Steps of ``run``: stage local datasets (upload to the Data Store, register in the Entity Store, point the
task at ``hf://datasets/<ns>/<name>``) in a *copy* of the config; resolve ``api_key_env`` into ``api_key``
just before submission (NeMo does not know ``api_key_env``); create the job; call ``on_job`` so tracking
can record the job id before the wait; poll with a growing interval; fetch the aggregate results and
the per-sample ZIP; map them (``nemo_results``). ``attach`` does the last three for an existing job.

Secrets resolved here live only in the request body sent to NeMo: they are never logged, and the job
record handed to callers is redacted (NeMo itself echoes keys back as ``"******"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from mlflow_nemo_judge.backends.base import Prepared, ProgressCallback, RunEvents
from mlflow_nemo_judge.backends.nemo.client import NemoClient
from mlflow_nemo_judge.backends.nemo.results import build_result, read_results_zip
from mlflow_nemo_judge.backends.nemo.staging import dataset_files, local_datasets, stage
from mlflow_nemo_judge.config import EvalConfig, Target, source_path
from mlflow_nemo_judge.config.extension import BLOCK
from mlflow_nemo_judge.config.keys import resolve_env
from mlflow_nemo_judge.config.reliability_settings import local_only
from mlflow_nemo_judge.config.secrets import redact
from mlflow_nemo_judge.data.scan import describe_remote
from mlflow_nemo_judge.errors import (
    ConfigError,
    NemoJobError,
    NemoJobTimeout,
    NemoServiceError,
)
from mlflow_nemo_judge.results import EvalResult

log = logging.getLogger(__name__)

ACTIVE = frozenset({"created", "pending", "running", "cancelling"})
TERMINAL = frozenset({"completed", "failed", "cancelled"})
DEFAULT_NAMESPACE = "default"

JobCallback = Callable[[dict[str, Any]], None]


def nemo_config(config: EvalConfig) -> dict[str, Any]:
    """The config as NeMo gets it: as written, minus this package's ``mlflow_nemo_judge`` block."""
    cfg = config.to_dict()
    cfg.pop(BLOCK, None)
    return cfg


def _parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)


class NemoBackend:
    """Runs evaluations on a NeMo Evaluator deployment (see the module docstring).

    ``poll_interval`` is the first wait between polls; it grows by half each poll without news up to
    ``max_poll_interval``. ``timeout`` (seconds, None = no limit) bounds the whole wait. ``limit`` caps the
    samples of every task in the submitted copy of the config. ``http`` injects an ``httpx.Client``.
    """

    name = "nemo"

    def __init__(
        self,
        evaluator_url: str | None = None,
        datastore_url: str | None = None,
        entity_store_url: str | None = None,
        namespace: str | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        poll_interval: float = 0.5,
        max_poll_interval: float = 10.0,
        timeout: float | None = None,
        http: httpx.Client | None = None,
        *,
        limit: int | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        max_retries: int = 4,
        client: NemoClient | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client or NemoClient(
            evaluator_url,
            datastore_url,
            entity_store_url,
            token=token,
            headers=headers,
            http=http,
            max_retries=max_retries,
            sleep=sleep,
        )
        self.namespace = namespace
        if poll_interval <= 0 or max_poll_interval <= 0:
            raise ConfigError("nemo.poll_interval", "poll intervals must be positive")
        if limit is not None and limit <= 0:
            raise ConfigError("--limit", f"must be a positive number, got {limit!r}")
        self.poll_interval = poll_interval
        self.max_poll_interval = max(max_poll_interval, poll_interval)
        self.timeout = timeout
        self.limit = limit
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self._sleep = sleep

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------------------------ validate

    def validate(self, config: EvalConfig, target: Target) -> None:
        """Check what can be checked without the service: local datasets exist, secrets resolve.

        NeMo runs config types, metrics and fields this package does not know, so nothing else is refused.
        """
        cfg, tgt = nemo_config(config), target.to_dict()
        if config.type == "custom" and not cfg.get("tasks"):
            raise ConfigError("tasks", "required: at least one task")
        cbase, tbase = source_path(config), source_path(target)
        for path, ds in local_datasets(cfg, tgt):
            src = tbase if path.startswith("target.") else cbase
            dataset_files(path, ds, src.parent if src else None)
        resolve_env(cfg)
        resolve_env(tgt, "target")

    # ----------------------------------------------------------------------------------------- stage

    def _namespace(self, config: EvalConfig) -> str:
        return self.namespace or config.namespace or DEFAULT_NAMESPACE

    def _apply_limit(self, cfg: dict[str, Any]) -> None:
        if self.limit is None:
            return
        params = cfg.setdefault("params", {}) or {}
        cfg["params"] = params
        current = params.get("limit_samples")
        params["limit_samples"] = min(self.limit, current) if isinstance(current, int) else self.limit
        for task in (cfg.get("tasks") or {}).values():
            ds = (task or {}).get("dataset")
            if isinstance(ds, dict):
                ds["limit"] = min(self.limit, ds["limit"]) if isinstance(ds.get("limit"), int) else self.limit

    def prepare(self, config: EvalConfig, target: Target) -> Prepared:
        """Validate without contacting the service and describe the data (their location and limits)."""
        self.validate(config, target)
        return Prepared(config, target, describe_remote(config, target, limit=self.limit), None)

    async def run(self, prepared: Prepared, events: RunEvents) -> EvalResult:
        """Submit, wait and fetch (on a worker thread: the client is synchronous); then stream records."""
        result = await self._in_thread(
            lambda: self.run_blocking(
                prepared.config, prepared.target, progress=events.on_progress, on_job=events.on_job
            )
        )
        _stream_records(result, events)
        return result

    async def attach(self, job_id: str, events: RunEvents) -> EvalResult:
        result = await self._in_thread(lambda: self.attach_blocking(job_id, progress=events.on_progress))
        _stream_records(result, events)
        return result

    async def _in_thread(self, work: Callable[[], EvalResult]) -> EvalResult:
        """Run the blocking job lifecycle off the event loop. Cancelling the awaiting task (Ctrl-C under
        ``asyncio.run``, a cancelled notebook cell, SIGTERM) interrupts the poll loop at its next sleep,
        which cancels the remote job (``_finish``) before the cancellation propagates."""
        cancelled = threading.Event()
        injected = self._sleep

        def sleep(seconds: float) -> None:
            if cancelled.is_set():
                raise KeyboardInterrupt
            if injected is time.sleep:
                if cancelled.wait(seconds):
                    raise KeyboardInterrupt
            else:  # a test's clock
                injected(seconds)

        self._sleep = sleep
        fut = asyncio.get_running_loop().run_in_executor(None, work)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            cancelled.set()
            with contextlib.suppress(BaseException):
                await fut
            raise
        finally:
            self._sleep = injected

    def submission(self, config: EvalConfig, target: Target) -> tuple[dict[str, Any], dict[str, Any]]:
        """The config and target bodies to submit: staged, limited, secrets resolved. Contains keys."""
        self.validate(config, target)
        cfg, tgt = copy.deepcopy(nemo_config(config)), copy.deepcopy(target.to_dict())
        skipped = local_only(config)
        if skipped:
            log.warning(
                "the config's %s block is not submitted to NeMo (NeMo has no such settings); not applied "
                "on this nemo run: %s (run them with --backend local; human-label agreement is still "
                "computed on the fetched results)",
                BLOCK,
                "; ".join(skipped),
            )
        stage(self.client, self._namespace(config), config, target, cfg, tgt)
        self._apply_limit(cfg)
        return resolve_env(cfg), resolve_env(tgt, "target")

    # ------------------------------------------------------------------------------------------- run

    def run_blocking(
        self,
        config: EvalConfig,
        target: Target,
        *,
        progress: ProgressCallback | None = None,
        on_job: JobCallback | None = None,
    ) -> EvalResult:
        start = time.monotonic()
        cfg, tgt = self.submission(config, target)
        job = self.client.create_job(cfg, tgt, namespace=self.namespace)
        job_id = str(job.get("id"))
        log.info("created NeMo evaluation job %s at %s", job_id, self.client.evaluator_url)
        if on_job is not None:
            on_job(redact(job))
        return self._finish(job_id, job, progress, start, server_time=False)

    def attach_blocking(self, job_id: str, progress: ProgressCallback | None = None) -> EvalResult:
        """Wait for an existing job (running or finished) and return its results."""
        start = time.monotonic()
        job = self.client.get_job(job_id)
        return self._finish(job_id, job, progress, start, server_time=True)

    def logs(self, job_id: str) -> str:
        return self.client.job_logs(job_id)

    def _finish(
        self,
        job_id: str,
        job: dict[str, Any],
        progress: ProgressCallback | None,
        start: float,
        server_time: bool,
    ) -> EvalResult:
        try:
            job = self._wait(job_id, job, progress)
        except KeyboardInterrupt:
            self._cancel_quietly(job_id)
            raise
        status = job.get("status")
        if status != "completed":
            message = (job.get("status_details") or {}).get("message") or "no message from the service"
            logs = self._logs_quietly(job_id)
            what = "was cancelled" if status == "cancelled" else "failed"
            raise NemoJobError(
                f"NeMo job {job_id} {what}: {message}", job_id=job_id, job=redact(job), logs=logs
            )
        results = self.client.job_results(job_id)
        samples = None
        try:
            samples, _ = read_results_zip(self.client.download_results(job_id))
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
        own_dir = self.work_dir is None
        work_dir = (
            Path(tempfile.mkdtemp(prefix=f"nemo-judge-{job_id}-"))
            if self.work_dir is None
            else self.work_dir / job_id
        )
        # Group scores are pooled from their tasks' samples, as locally; the job's config names the members.
        config = job.get("config")
        config = config if isinstance(config, Mapping) else {}
        groups = {g: list((v or {}).get("tasks") or []) for g, v in (config.get("groups") or {}).items()}
        sd = job.get("status_details") or {}
        result = build_result(
            results,
            samples,
            work_dir=work_dir,
            job=redact(job),
            group_tasks=groups,
            samples_processed=sd.get("samples_processed"),
            wall_seconds=wall,
        )
        if own_dir:
            result.own(work_dir)  # removed with the result, so no run leaves a temp folder behind
        return result

    def _cancel_quietly(self, job_id: str) -> None:
        try:
            self.client.cancel_job(job_id, timeout=5.0)
            log.warning("interrupted: asked NeMo to cancel job %s", job_id)
        except (NemoServiceError, httpx.HTTPError) as exc:
            # Cancel is unimplemented on some versions (reference §4.5); the interrupt still wins.
            log.warning(
                "interrupted: could not cancel NeMo job %s (%s); it may still be running", job_id, exc
            )

    def _logs_quietly(self, job_id: str) -> str | None:
        try:
            return self.client.job_logs(job_id)
        except NemoServiceError as exc:
            log.warning("could not fetch the logs of job %s: %s", job_id, exc)
            return None

    def _wait(self, job_id: str, job: dict[str, Any], progress: ProgressCallback | None) -> dict[str, Any]:
        """Poll until a terminal status. Unknown statuses are not errors (the enum has grown before):
        they are polled through, with one warning each, up to the timeout."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        interval = self.poll_interval
        tasks = (job.get("config") or {}).get("tasks") if isinstance(job.get("config"), Mapping) else None
        label = next(iter(tasks)) if isinstance(tasks, Mapping) and len(tasks) == 1 else "job"
        warned: set[str] = set()
        last: tuple[int, int | None] | None = None
        last_status = None
        while True:
            status = str(job.get("status"))
            if status != last_status:
                log.info("NeMo job %s: %s", job_id, status)
            report = self._progress(job, status)
            moved = report is not None and report != last
            changed = moved or status != last_status
            if moved and progress is not None and report is not None:
                progress(label, report[0], report[1])
            last = report if report is not None else last
            last_status = status
            if status in TERMINAL:
                return job
            if status not in ACTIVE and status not in warned:
                warned.add(status)
                log.warning(
                    "NeMo job %s reports status %r, which this client does not know; still polling",
                    job_id,
                    status,
                )
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise NemoJobTimeout(
                    f"NeMo job {job_id} did not finish within {self.timeout:g}s (status {status}); "
                    f"it is still on the service: attach to it later with its id",
                    job_id=job_id,
                    job=redact(job),
                )
            self._sleep(interval if deadline is None else max(0.0, min(interval, deadline - now)))
            # Grow the interval only while nothing moves, so a busy job is followed closely.
            interval = interval if changed else min(interval * 1.5, self.max_poll_interval)
            job = self.client.get_job(job_id)

    @staticmethod
    def _progress(job: Mapping[str, Any], status: str) -> tuple[int, int | None] | None:
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


def _stream_records(result: EvalResult, events: RunEvents) -> None:
    """The service returns per-sample rows only with the finished job: hand them on in item order."""
    if events.on_record is not None:
        for rec in result.iter_samples():
            events.on_record(rec)
