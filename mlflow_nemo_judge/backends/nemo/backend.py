"""The ``nemo`` backend: run a config as a NeMo Evaluator job and return the same ``EvalResult`` as local.

Steps of ``run``: stage local datasets (upload to the Data Store, register in the Entity Store, point the
task at ``hf://datasets/<ns>/<name>``) in a *copy* of the config; resolve ``api_key_env`` into ``api_key``
just before submission (NeMo does not know ``api_key_env``); create the job; call ``on_job`` so tracking
can record the job id before the wait; poll with a growing interval (``polling``); fetch the aggregate
results and the per-sample ZIP and map them (``finish``, ``results``). ``attach`` does the last three for
an existing job. With ``live=True`` a small run is one synchronous live evaluation instead (``live``).

Secrets resolved here live only in the request body sent to NeMo: they are never logged, and the job
record handed to callers is redacted (NeMo itself echoes keys back as ``"******"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from mlflow_nemo_judge import settings
from mlflow_nemo_judge.backends.base import Prepared, ProgressCallback, RunEvents
from mlflow_nemo_judge.backends.nemo.client import NemoClient
from mlflow_nemo_judge.backends.nemo.divergence import warn_divergences
from mlflow_nemo_judge.backends.nemo.finish import finish_job
from mlflow_nemo_judge.backends.nemo.jobapi import job_api
from mlflow_nemo_judge.backends.nemo.live import live_body, live_result, submit_live
from mlflow_nemo_judge.backends.nemo.polling import wait_for_job
from mlflow_nemo_judge.backends.nemo.references import by_reference
from mlflow_nemo_judge.backends.nemo.staging import dataset_files, local_datasets, stage
from mlflow_nemo_judge.config import EvalConfig, Target, source_path
from mlflow_nemo_judge.config.extension import BLOCK
from mlflow_nemo_judge.config.keys import resolve_env
from mlflow_nemo_judge.config.reliability_settings import local_only
from mlflow_nemo_judge.config.secrets import redact
from mlflow_nemo_judge.data.scan import describe_remote
from mlflow_nemo_judge.errors import ConfigError
from mlflow_nemo_judge.results import EvalResult

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "default"

JobCallback = Callable[[dict[str, Any]], None]


def nemo_config(config: EvalConfig) -> dict[str, Any]:
    """The config as NeMo gets it: as written, minus this package's ``mlflow_nemo_judge`` block."""
    cfg = config.to_dict()
    cfg.pop(BLOCK, None)
    return cfg


class NemoBackend:
    """Runs evaluations on a NeMo Evaluator deployment (see the module docstring).

    ``poll_interval`` is the first wait between polls; it grows by half each poll without news up to
    ``max_poll_interval``. ``timeout`` (seconds; None = ``NEMO_JUDGE_JOB_TIMEOUT``) bounds the whole wait. ``limit`` caps the
    samples of every task in the submitted copy of the config. ``http`` injects an ``httpx.Client``.
    ``api`` picks the Evaluator job API (``"v1"``, or ``"v2"``: ``/v2/evaluation/jobs``, see ``v2``);
    ``live=True`` answers small runs (at most 10 rows, data-source targets) with one synchronous live
    evaluation instead of a job (see ``live``). A job whose status this client does not know is an
    error once it has kept that status for ``unknown_status_timeout`` seconds.
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
        api: str = "v1",
        live: bool = False,
        unknown_status_timeout: float = 60.0,
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
        self.jobs = job_api(self.client, api)
        self.api = api
        self.live = live
        if unknown_status_timeout < 0:
            raise ConfigError("nemo.unknown_status_timeout", "must be zero or positive")
        self.unknown_status_timeout = unknown_status_timeout
        if poll_interval <= 0 or max_poll_interval <= 0:
            raise ConfigError("nemo.poll_interval", "poll intervals must be positive")
        if limit is not None and limit <= 0:
            raise ConfigError("--limit", f"must be a positive number, got {limit!r}")
        self.poll_interval = poll_interval
        self.max_poll_interval = max(max_poll_interval, poll_interval)
        # No timeout given: NEMO_JUDGE_JOB_TIMEOUT (default 4 h), so a stuck job is never polled forever.
        self.timeout = timeout if timeout is not None else settings.job_timeout_default()
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
        warn_divergences(nemo_config(config), target.to_dict())  # package-only extensions: warned, sent
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
        which cancels the remote job (``finish.finish_job``) before the cancellation propagates."""
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

    def submission(
        self, config: EvalConfig, target: Target
    ) -> tuple[dict[str, Any] | str, dict[str, Any] | str]:
        """The config and target bodies to submit: staged, limited, secrets resolved. Contains keys.
        A config or target loaded from a NeMo reference is submitted as that reference when unchanged."""
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
        return (
            by_reference(config, "config", nemo_config(config), resolve_env(cfg)),
            by_reference(target, "target", target.to_dict(), resolve_env(tgt, "target")),
        )

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
        if self.live:
            return self._run_live(config, target, start)
        cfg, tgt = self.submission(config, target)
        job = self.jobs.create(cfg, tgt, self.namespace)
        job_id = str(job.get("id"))
        log.info("created NeMo evaluation job %s (%s API) at %s", job_id, self.api, self.client.evaluator_url)
        if on_job is not None:
            on_job(redact(job))
        return self._finish(job_id, job, progress, start, server_time=False)

    def attach_blocking(self, job_id: str, progress: ProgressCallback | None = None) -> EvalResult:
        """Wait for an existing job (running or finished) and return its results."""
        start = time.monotonic()
        job = self.jobs.get(job_id)
        return self._finish(job_id, job, progress, start, server_time=True)

    def logs(self, job_id: str) -> str:
        return self.jobs.logs(job_id)

    # ------------------------------------------------------------------------------------------ live

    def _live_submission(
        self, config: EvalConfig, target: Target, *, dry_run: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        cfg, tgt = self.submission(config, target)
        if not isinstance(cfg, dict) or not isinstance(tgt, dict):
            # Stored entities come back with their keys masked, so they cannot be re-sent inline.
            raise ConfigError(
                "config" if not isinstance(cfg, dict) else "target",
                "live evaluation needs the config and target inline (the service creates nothing "
                "live); give the file, not a stored NeMo reference",
            )
        return live_body(cfg, tgt, dry_run=dry_run, limit=self.limit)

    def live_check(self, config: EvalConfig, target: Target) -> dict[str, Any]:
        """A real dry run: the first rows (at most 10) evaluated live by the service; its (redacted)
        ``LiveEvaluation``. The service's refusal is raised as ``NemoServiceError``/``NemoJobError``."""
        cfg, tgt = self._live_submission(config, target, dry_run=True)
        return submit_live(self.client, cfg, tgt, self.namespace)

    def _run_live(self, config: EvalConfig, target: Target, start: float) -> EvalResult:
        cfg, tgt = self._live_submission(config, target, dry_run=False)
        answer = submit_live(self.client, cfg, tgt, self.namespace)
        return live_result(answer, cfg, wall_seconds=time.monotonic() - start)

    # ------------------------------------------------------------------------------ wait and fetch

    def _finish(
        self,
        job_id: str,
        job: dict[str, Any],
        progress: ProgressCallback | None,
        start: float,
        server_time: bool,
    ) -> EvalResult:
        return finish_job(
            self.jobs,
            job_id,
            job,
            lambda jid, j: self._wait(jid, j, progress),
            start=start,
            server_time=server_time,
            work_dir=self.work_dir,
        )

    def _wait(self, job_id: str, job: dict[str, Any], progress: ProgressCallback | None) -> dict[str, Any]:
        # self._sleep is looked up per sleep, not bound once: ``_in_thread`` swaps it for a cancellable one.
        return wait_for_job(
            self.jobs,
            job_id,
            job,
            progress,
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            timeout=self.timeout,
            unknown_status_timeout=self.unknown_status_timeout,
            sleep=lambda seconds: self._sleep(seconds),
        )


def _stream_records(result: EvalResult, events: RunEvents) -> None:
    """The service returns per-sample rows only with the finished job: hand them on in item order."""
    if events.on_record is not None:
        for rec in result.iter_samples():
            events.on_record(rec)
