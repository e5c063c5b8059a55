"""Tracking faults, handled at the tracking boundary: a quick pre-flight of the tracking URI before any
model call, bounded MLflow HTTP retries, one-line errors naming the (redacted) URI, and cross-process
locks (first-time sqlite initialisation, one run per identical evaluation).

Why: MLflow's defaults retry an unreachable server for ~4 minutes per request (7 retries, backoff 2,
timeout 120 s) and then raise a traceback; a run's many requests multiply that. For our process the
retries are bounded (``BOUNDED_HTTP``) unless the user set MLflow's variables, and the pre-flight asks
once with no retries and a short timeout, so a dead server costs seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlflow_nemo_judge import settings
from mlflow_nemo_judge.config.secrets import redact_text, redact_url, url_secrets
from mlflow_nemo_judge.errors import TrackingConfigError, TrackingError, TrackingUnavailable

logger = logging.getLogger(__package__)

#: MLflow HTTP settings for our process when the user set none: 3 retries with backoff 1 s (sleeps of
#: 1, 2, 4 s plus ≤1 s jitter each) and a 30 s request timeout: a dead server fails a request in ≤ ~10 s
#: (connection refused), a hung one in ≤ ~2 min, instead of MLflow's ~4 min / ~8 min.
BOUNDED_HTTP: Mapping[str, str] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
# MLflow's column limits that PostgreSQL enforces (experiments.name varchar(256), runs.name varchar(250));
# MLflow's own validation allows 500 for an experiment name, which then fails on PostgreSQL only.
MAX_EXPERIMENT_NAME = 256
MAX_RUN_NAME = 250
_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_KNOWN_SCHEMES = ("", "file", "http", "https", "databricks", "databricks-uc", "uc", *_DB_SCHEMES)
_FIRST_LINE_MAX = 300
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"]+", re.I)
_LOCK_POLL = 0.25  # seconds between tries of a busy identity lock


def shown(uri: str) -> str:
    """The URI as it may appear in a message: userinfo and query values masked."""
    return redact_url(uri)


@contextlib.contextmanager
def bounded_http(overrides: Mapping[str, str] | None = None) -> Iterator[None]:
    """MLflow's HTTP retry variables set to bounded values for the duration, where the user set none
    (``overrides`` win over both). MLflow reads them per request, so this applies at once."""
    wanted = {k: v for k, v in BOUNDED_HTTP.items() if k not in os.environ}
    wanted.update(overrides or {})
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def _is_connectivity(exc: BaseException) -> bool:
    """A request that never got an answer (refused, reset, timed out, DNS), as opposed to an answer."""
    import requests

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
            return True
        text = str(cur)
        if "Max retries exceeded" in text or "Failed to establish a new connection" in text:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    line = str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__
    return line if len(line) <= _FIRST_LINE_MAX else line[: _FIRST_LINE_MAX - 1] + "…"


def tracking_error(exc: BaseException, uri: str, run_id: str | None = None) -> TrackingError:
    """The one-line error for an MLflow/SQLAlchemy/requests failure against ``uri``; a run left RUNNING
    by an unreachable server says how to finish it."""
    where = f"MLflow tracking at {shown(uri)}"
    if _is_connectivity(exc):
        msg = f"{where} is unreachable ({type(exc).__name__})"
        if run_id:
            msg += (
                f"; the answers so far are kept in the response cache: once the server is back, "
                f"finish MLflow run {run_id} with `mlflow-nemo-judge resume {run_id}`"
            )
        return TrackingUnavailable(msg)
    # MLflow quotes the request URL, userinfo included: mask the URI's own secrets and any URL's.
    detail = redact_text(_first_line(exc), url_secrets(uri))
    detail = _URL.sub(lambda m: redact_url(m.group(0)), detail)
    msg = f"{where} failed: {detail}"
    if run_id:
        msg += f" (MLflow run {run_id}; `mlflow-nemo-judge resume {run_id}` continues it)"
    return TrackingError(msg)


def tracking_exceptions() -> tuple[type[BaseException], ...]:
    """What MLflow's stores raise when the store, not our code, is at fault."""
    import requests
    from mlflow.exceptions import MlflowException

    out: list[type[BaseException]] = [MlflowException, requests.RequestException]
    try:
        from sqlalchemy.exc import SQLAlchemyError

        out.append(SQLAlchemyError)
    except ImportError:  # pragma: no cover - sqlalchemy comes with mlflow
        pass
    return tuple(out)


@contextlib.contextmanager
def translated(uri: str, run_id: str | None = None) -> Iterator[None]:
    """MLflow's store errors leaving the block become one-line ``TrackingError``s; our own errors and
    bugs pass unchanged (this is the tracking boundary, not a catch-all)."""
    try:
        yield
    except TrackingError:
        raise
    except tracking_exceptions() as exc:
        raise tracking_error(exc, uri, run_id) from exc


# ------------------------------------------------------------------------------------ input checks


def check_uri(uri: str) -> None:
    """Reject a malformed or unsupported tracking URI before anything is created (exit 2)."""
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise TrackingConfigError(f"tracking URI {shown(uri)!r} is malformed: {exc}") from None
    scheme = parts.scheme.lower().split("+", 1)[0]
    if len(scheme) == 1 and uri[1:3] in (":\\", ":/"):
        return  # a Windows drive path
    if scheme not in _KNOWN_SCHEMES:
        raise TrackingConfigError(
            f"tracking URI {shown(uri)!r} has an unsupported scheme {parts.scheme!r}; use http(s)://HOST, "
            "sqlite:///PATH, postgresql://…, a databricks URI or a local folder"
        )
    if scheme in ("http", "https") and not parts.hostname:
        raise TrackingConfigError(f"tracking URI {shown(uri)!r} has no host")


def check_names(experiment: str | None, run_name: str | None) -> None:
    """An experiment or run name beyond MLflow's limits is bad input, refused before any call."""
    if experiment is not None and len(experiment) > MAX_EXPERIMENT_NAME:
        raise TrackingConfigError(
            f"experiment name is {len(experiment)} characters; MLflow allows at most {MAX_EXPERIMENT_NAME}"
        )
    if experiment is not None and not experiment.strip():
        raise TrackingConfigError("experiment name is empty")
    if run_name is not None and len(run_name) > MAX_RUN_NAME:
        raise TrackingConfigError(
            f"run name is {len(run_name)} characters; MLflow allows at most {MAX_RUN_NAME}"
        )


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI (None for in-memory or other stores)."""
    if not uri.lower().startswith("sqlite:"):
        return None
    rest = uri.split(":", 1)[1]
    if not rest.startswith("///"):
        return None
    path = rest[3:].split("?", 1)[0]  # sqlite:///rel.db → rel.db, sqlite:////abs.db → /abs.db
    return Path(path) if path and path != ":memory:" else None


def _check_writable(db: Path, uri: str) -> None:
    folder = db.parent if str(db.parent) else Path(".")
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # MLflow creates missing folders; the nearest existing one must be writable
    target = db if db.exists() else probe
    if not os.access(target, os.W_OK):
        raise TrackingError(f"MLflow tracking store {shown(uri)}: {target} is not writable")


@contextlib.contextmanager
def sqlite_init_lock(uri: str) -> Iterator[None]:
    """Held while this process opens (and, on a new file, migrates) a sqlite store: MLflow's schema
    migration is not safe against a second process migrating the same new file (3 of 4 crash)."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock", timeout=_timeout("NEMO_JUDGE_TRACKING_LOCK_TIMEOUT")):
        yield


def open_client(uri: str) -> Any:
    """``MlflowClient(uri)`` with the URI checked first; opening a sqlite store (which migrates a new
    file) happens under the init lock. Store errors become one-line ``TrackingError``s."""
    from filelock import Timeout
    from mlflow.tracking import MlflowClient

    check_uri(uri)
    db = sqlite_path(uri)
    if db is not None:
        _check_writable(db, uri)
    try:
        with sqlite_init_lock(uri), translated(uri):
            return MlflowClient(tracking_uri=uri)
    except Timeout:
        raise TrackingUnavailable(
            f"MLflow tracking store {shown(uri)} stayed locked by another process initialising it"
        ) from None


def preflight(cl: Any, uri: str) -> None:
    """Ask the store once, quickly, before any run or model call: an HTTP server with no retry and a
    short timeout (``NEMO_JUDGE_TRACKING_CHECK_TIMEOUT``). Raises a one-line ``TrackingError``."""
    timeout = str(max(1, int(_timeout("NEMO_JUDGE_TRACKING_CHECK_TIMEOUT"))))
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": timeout}
    with bounded_http(quick), translated(uri):
        cl.search_experiments(max_results=1)


def _timeout(name: str) -> float:
    raw = settings.get(name)
    try:
        return float(raw) if raw is not None else 10.0
    except ValueError:
        raise TrackingConfigError(f"environment variable {name} must be a number, got {raw!r}") from None


# ------------------------------------------------------------------------------ one run per identity


def identity_key(uri: str, experiment_id: str, tags: Mapping[str, str]) -> str:
    blob = json.dumps({"uri": uri, "exp": experiment_id, "tags": dict(sorted(tags.items()))})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


@contextlib.asynccontextmanager
async def identity_lock(
    lock_dir: Path, key: str, what: str, on_wait: Callable[[], Awaitable[None]] | None = None
) -> AsyncIterator[None]:
    """Held from the "is there a finished run?" check until the run ends, so identical evaluations started
    at once make one run: the others wait here (saying so once), then find it FINISHED and reuse it.
    ``on_wait`` runs once when this process has to wait (an early-started evaluation stops its calls:
    it will most likely reuse the other's run).

    The wait polls without blocking the event loop, so Ctrl-C/SIGTERM still cancel a waiting process.
    """
    from filelock import FileLock, Timeout

    lock_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_dir / f"{key}.lock"))
    said = False
    while True:
        try:
            lock.acquire(timeout=0)
            break
        except Timeout:
            if not said:
                logger.warning(
                    "an identical evaluation (%s) is running in another process; waiting for it to end", what
                )
                said = True
                if on_wait is not None:
                    await on_wait()
            await asyncio.sleep(_LOCK_POLL)
    try:
        yield
    finally:
        lock.release()
