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

import copy
import datetime
import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx

from mlflow_nemo_judge.backends.nemo.client import NemoClient
from mlflow_nemo_judge.backends.nemo.results import build_result, read_results_zip
from mlflow_nemo_judge.config import EvalConfig, Target, source_path
from mlflow_nemo_judge.config.secrets import redact, resolve_env
from mlflow_nemo_judge.data import DatasetSource, file_digest, resolve_files
from mlflow_nemo_judge.engine import ProgressCallback
from mlflow_nemo_judge.errors import ConfigError, DatasetError, EvaluationError, NemoServiceError
from mlflow_nemo_judge.results import EvalResult

log = logging.getLogger(__name__)

ACTIVE = frozenset({"created", "pending", "running", "cancelling"})
TERMINAL = frozenset({"completed", "failed", "cancelled"})
DEFAULT_NAMESPACE = "default"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")

JobCallback = Callable[[dict[str, Any]], None]


class NemoJobError(EvaluationError):
    """A NeMo job failed, was cancelled or did not finish in time.

    ``job`` is the (redacted) job record and ``logs`` the job's logs when they could be fetched, so the
    tracking layer can keep both as artifacts of the failed run.
    """

    def __init__(
        self, message: str, *, job_id: str, job: dict[str, Any] | None = None, logs: str | None = None
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.job = job
        self.logs = logs


class NemoJobTimeout(NemoJobError):
    """The job was still running when the timeout passed; it keeps running and can be attached to."""


def _is_local(url: str) -> bool:
    m = _SCHEME.match(url.strip())
    return m is None or m.group(1).lower() == "file"


def _local_root(url: str, base_dir: Path | None) -> Path:
    raw = url.strip()
    if raw.lower().startswith("file://"):
        # Same reading as datasets.py: what follows file:// is a path (NeMo's own "file://fiqa/" is relative).
        raw = unquote(raw[len("file://") :].split("?", 1)[0].split("#", 1)[0])
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    return Path(os.path.abspath(path))


def _repo_name(root: Path, files: list[tuple[Path, str]]) -> str:
    """A Data Store repo name derived from the content: same data → same repo (re-runs upload nothing
    new), changed data → a new repo (a job can never read a stale copy under the old name)."""
    digest = hashlib.sha256()
    for src, dest in files:
        digest.update(f"{dest}\0{file_digest(src)}\n".encode())
    stem = re.sub(r"[^a-z0-9]+", "-", (root.stem if root.is_file() else root.name).lower()).strip("-")[:48]
    return f"{stem or 'dataset'}-{digest.hexdigest()[:12]}"


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

    def _local_datasets(self, cfg: dict[str, Any], tgt: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """``(config path, dataset dict)`` of every dataset that lives on this machine."""
        found: list[tuple[str, dict[str, Any]]] = []
        for tname, task in (cfg.get("tasks") or {}).items():
            ds = (task or {}).get("dataset")
            if isinstance(ds, dict) and isinstance(ds.get("files_url"), str) and _is_local(ds["files_url"]):
                found.append((f"tasks.{tname}.dataset", ds))
        for key in ("dataset", "cached_outputs"):
            ds = tgt.get(key)
            if isinstance(ds, dict) and isinstance(ds.get("files_url"), str) and _is_local(ds["files_url"]):
                found.append((f"target.{key}", ds))
        return found

    def _files(
        self, path: str, ds: Mapping[str, Any], base: Path | None
    ) -> tuple[Path, list[tuple[Path, str]]]:
        root = _local_root(ds["files_url"], base)
        try:
            found = resolve_files(DatasetSource(url=ds["files_url"], format=ds.get("format"), base_dir=base))
        except DatasetError as exc:
            raise ConfigError(f"{path}.files_url", str(exc)) from None
        files = [(p, p.relative_to(root).as_posix() if root.is_dir() else p.name) for _, p in found]
        return root, files

    def validate(self, config: EvalConfig, target: Target) -> None:
        """Check what can be checked without the service: local datasets exist, secrets resolve.

        NeMo runs config types, metrics and fields this package does not know, so nothing else is refused.
        """
        cfg, tgt = config.to_dict(), target.to_dict()
        if config.type == "custom" and not cfg.get("tasks"):
            raise ConfigError("tasks", "required: at least one task")
        cbase, tbase = source_path(config), source_path(target)
        for path, ds in self._local_datasets(cfg, tgt):
            src = tbase if path.startswith("target.") else cbase
            self._files(path, ds, src.parent if src else None)
        resolve_env(cfg)
        resolve_env(tgt, "target")

    # ----------------------------------------------------------------------------------------- stage

    def _namespace(self, config: EvalConfig) -> str:
        return self.namespace or config.namespace or DEFAULT_NAMESPACE

    def _stage(self, config: EvalConfig, target: Target, cfg: dict[str, Any], tgt: dict[str, Any]) -> None:
        """Upload and register local datasets, rewriting their ``files_url`` in ``cfg``/``tgt`` (copies)."""
        local = self._local_datasets(cfg, tgt)
        if not local:
            return
        ns = self._namespace(config)
        self.client.ensure_namespace(ns)
        cbase, tbase = source_path(config), source_path(target)
        staged: dict[Path, str] = {}
        for path, ds in local:
            src = tbase if path.startswith("target.") else cbase
            root, files = self._files(path, ds, src.parent if src else None)
            if root not in staged:
                name = _repo_name(root, files)
                files_url = self.client.upload_files(ns, name, files)
                self.client.create_dataset(
                    name, ns, files_url, description=f"staged by mlflow-nemo-judge from {root.name}"
                )
                log.info("staged %s as %s (%d file(s))", root.name, files_url, len(files))
                staged[root] = files_url
            ds["files_url"] = staged[root]
            # The data now lives on the Data Store, which is the default endpoint for hf:// URLs.
            ds.pop("hf_endpoint", None)

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

    def prepare(self, config: EvalConfig, target: Target) -> tuple[dict[str, Any], dict[str, Any]]:
        """The config and target bodies to submit: staged, limited, secrets resolved. Contains keys."""
        self.validate(config, target)
        cfg, tgt = copy.deepcopy(config.to_dict()), copy.deepcopy(target.to_dict())
        self._stage(config, target, cfg, tgt)
        self._apply_limit(cfg)
        return resolve_env(cfg), resolve_env(tgt, "target")

    # ------------------------------------------------------------------------------------------- run

    def run(
        self,
        config: EvalConfig,
        target: Target,
        *,
        progress: ProgressCallback | None = None,
        on_job: JobCallback | None = None,
    ) -> EvalResult:
        start = time.monotonic()
        cfg, tgt = self.prepare(config, target)
        job = self.client.create_job(cfg, tgt, namespace=self.namespace)
        job_id = str(job.get("id"))
        log.info("created NeMo evaluation job %s at %s", job_id, self.client.evaluator_url)
        if on_job is not None:
            on_job(redact(job))
        return self._finish(job_id, job, progress, start, server_time=False)

    def attach(self, job_id: str, progress: ProgressCallback | None = None) -> EvalResult:
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
        work_dir = (
            (self.work_dir / job_id)
            if self.work_dir
            else Path(tempfile.mkdtemp(prefix=f"nemo-judge-{job_id}-"))
        )
        # Group scores are pooled from their tasks' samples, as locally; the job's config names the members.
        config = job.get("config")
        config = config if isinstance(config, Mapping) else {}
        groups = {g: list((v or {}).get("tasks") or []) for g, v in (config.get("groups") or {}).items()}
        sd = job.get("status_details") or {}
        return build_result(
            results,
            samples,
            work_dir=work_dir,
            job=redact(job),
            group_tasks=groups,
            samples_processed=sd.get("samples_processed"),
            wall_seconds=wall,
        )

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
