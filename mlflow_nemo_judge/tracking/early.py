"""Early start: a tracked single-target evaluation's model calls begin while MLflow is still being opened.

From process start to a tracked run's first model call took 4.2 s on sqlite and 3.4 s on a local
server, against 0.8 s untracked (issue 15, ``bench/RESULTS.md``): nearly all of it importing MLflow
and opening its store, CPU work a background thread cannot hide under the GIL while the plan is
built. It can hide beside model calls, which wait on the network. So the engine starts as soon as the
plan exists, streaming into a ``DeferredSink``; a thread imports MLflow, opens the store, resolves the
experiment; then the identity check, the run and its sink are made as before (``runner.track_one``)
and the sink takes over, the records so far replayed into it.

What this keeps, and what it changes:

- Only when the store is known to answer before any call: a ``sqlite:///`` file that is writable, or
  an ``http(s)://`` server whose ``/health`` answers OK at once (no MLflow needed). Any other store,
  or a check that fails, takes the sequential path, where a dead server fails before any model call.
- A FINISHED identical run is still reused (its result, its run), but the calls made meanwhile are
  cancelled rather than never made: with the response cache on (the default) a rerun's calls are
  cache hits, so the endpoints still see none; with ``cache=False`` a few are sent.
- Memory stays bounded: the table and plot values are collected as records come (the sink's own
  ``Collected``); only the records the traces need (``trace_samples``) wait for the run.
- ``NEMO_JUDGE_EARLY_START=0`` turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge import settings
from mlflow_nemo_judge.backends.base import Prepared
from mlflow_nemo_judge.config.secrets import collect
from mlflow_nemo_judge.results import EvalResult, SampleRecord
from mlflow_nemo_judge.tracking.params import template_fields

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.reliability.report import ReliabilityReport
    from mlflow_nemo_judge.tracking.identity import Outcome
    from mlflow_nemo_judge.tracking.mlflow_sink import Collected, MlflowSink
    from mlflow_nemo_judge.tracking.runner import Settings

logger = logging.getLogger(__package__)


# --------------------------------------------------------------------------------- when it applies


def known_uri(tracking_uri: str | None) -> str | None:
    """The tracking URI without importing MLflow: given, or ``MLFLOW_TRACKING_URI``, or (when MLflow is
    already imported, as in a notebook that set one) MLflow's own; else unknown."""
    if tracking_uri:
        return tracking_uri
    if "mlflow" in sys.modules:
        from mlflow_nemo_judge.tracking.store import current_tracking_uri

        return current_tracking_uri(None)
    return os.environ.get("MLFLOW_TRACKING_URI") or None


def store_answers(uri: str) -> bool:
    """True when the store will take the run: a writable sqlite file, or a server whose ``/health``
    answers OK within the pre-flight timeout. Never raises: False means "take the sequential path"."""
    from mlflow_nemo_judge.tracking import health

    try:
        health.check_uri(uri)
    except Exception:
        return False
    db = health.sqlite_path(uri)
    if db is not None:
        try:
            health._check_writable(db, uri)
        except Exception:
            return False
        return True
    if not uri.lower().startswith(("http://", "https://")):
        return False
    import httpx

    timeout = settings.get_seconds("NEMO_JUDGE_TRACKING_CHECK_TIMEOUT")
    try:
        r = httpx.get(uri.rstrip("/") + "/health", timeout=timeout, follow_redirects=False)
    except Exception:
        return False
    return r.status_code == 200


def applies(backend: str, n_targets: int, tracking_uri: str | None) -> str | None:
    """The URI to start early against, or None for the sequential path."""
    if settings.get("NEMO_JUDGE_EARLY_START") == "0" or backend != "local" or n_targets != 1:
        return None
    uri = known_uri(tracking_uri)
    return uri if uri is not None and store_answers(uri) else None


# ---------------------------------------------------------------------------------- the session


@dataclass
class Session:
    """The opened store: the client, the experiment, and the scopes to close at the end."""

    cl: Any
    experiment_id: str
    stack: contextlib.ExitStack

    def close(self) -> None:
        self.stack.close()


def open_session(tracking_uri: str | None, experiment: str | None) -> Session:
    """What ``pipeline._tracking`` opens, plus the experiment; run on a thread (it imports MLflow)."""
    from mlflow_nemo_judge import tracking as trk
    from mlflow_nemo_judge.tracking import health

    uri = trk.current_tracking_uri(tracking_uri)
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(trk.tracking_scope(tracking_uri))
        stack.enter_context(health.bounded_http())
        with health.translated(uri):
            cl = trk.client(uri)
            health.preflight(cl, uri)
            exp_id = trk.resolve_experiment(cl, experiment)
    except BaseException:
        stack.close()
        raise
    return Session(cl, exp_id, stack)


# -------------------------------------------------------------------------------- deferred sink


@dataclass
class DeferredSink:
    """A ``RunSink`` for the time before the run exists: it collects what the run's sink would (same
    ``Collected``), keeps the records the traces will need and the last progress, and remembers how
    the evaluation ended; ``attach`` hands all of it to the real sink, which then gets every call."""

    prepared: Prepared
    table_max_rows: int
    trace_samples: int
    collected: Collected = field(init=False)
    backlog: list[SampleRecord] = field(default_factory=list)
    last_progress: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    jobs: list[Mapping[str, Any]] = field(default_factory=list)
    ended: tuple[str, Any, Any] | None = (
        None  # ("finish", result, report) | ("fail", exc, None) | ("kill", …)
    )
    real: MlflowSink | None = None

    def __post_init__(self) -> None:
        from mlflow_nemo_judge.tracking.mlflow_sink import Collected

        cfg = self.prepared.config
        self.collected = Collected(
            self.table_max_rows, template_fields(cfg), collect(cfg, self.prepared.target)
        )

    @property
    def run_id(self) -> str | None:
        return self.real.run_id if self.real is not None else None

    def start(self, prepared: Prepared) -> None:
        if self.real is not None:
            self.real.start(prepared)

    def sample(self, record: SampleRecord) -> None:
        if self.real is not None:
            self.real.sample(record)
            return
        self.collected.add(record)
        if len(self.backlog) < self.trace_samples:
            self.backlog.append(record)

    def progress(self, task: str, done: int, total: int | None) -> None:
        if self.real is not None:
            self.real.progress(task, done, total)
        else:
            self.last_progress[task] = (done, total)

    def job(self, job: Mapping[str, Any]) -> None:
        if self.real is not None:
            self.real.job(job)
        else:
            self.jobs.append(job)

    def finish(self, result: EvalResult, reliability: ReliabilityReport | None = None) -> None:
        if self.real is not None:
            self.real.finish(result, reliability)
        else:
            self.ended = ("finish", result, reliability)

    def fail(self, exc: BaseException) -> None:
        if self.real is not None:
            self.real.fail(exc)
        else:
            self.ended = ("fail", exc, None)

    def kill(self) -> None:
        if self.real is not None:
            self.real.kill()
        else:
            self.ended = ("kill", None, None)

    def attach(self, sink: MlflowSink) -> None:
        """From now on ``sink`` gets every call; it first gets what happened so far, in order."""
        sink.start(self.prepared, backlog=self.backlog)
        self.backlog = []
        for task, (done, total) in self.last_progress.items():
            sink.progress(task, done, total)
        for job in self.jobs:
            sink.job(job)
        self.real = sink
        if self.ended is None:
            return
        how, a, b = self.ended
        if how == "finish":
            try:
                sink.finish(a, b)
            except BaseException as exc:  # as ``pipeline._ending`` would: the run ends FAILED
                sink.fail(exc)
                raise
        elif how == "fail":
            sink.fail(a)
        else:
            sink.kill()


# ------------------------------------------------------------------------------------ the start


class EarlyStart:
    """The engine running into a ``DeferredSink`` before the run exists (see the module docstring)."""

    def __init__(self, engine: asyncio.Future[EvalResult], sink: DeferredSink) -> None:
        self.engine, self.sink = engine, sink
        self.stopped = False

    @property
    def collected(self) -> Collected:
        return self.sink.collected

    async def cancel(self) -> None:
        """An identical FINISHED run is reused (or another process is making it), or the store failed:
        the calls stop."""
        self.stopped = True
        self.engine.cancel()
        await asyncio.gather(self.engine, return_exceptions=True)

    async def attach(self, sink: MlflowSink) -> EvalResult:
        """The run's sink takes over; returns the evaluation's result once it ends."""
        try:
            self.sink.attach(sink)
        except BaseException:
            await self.cancel()
            raise
        return await self.engine


def begin(
    prepared: Prepared, *, execute: Any, backend: Any, table_max_rows: int, trace_samples: int
) -> EarlyStart:
    """Start the evaluation now, into a deferred sink (``execute`` is ``pipeline.execute``)."""
    sink = DeferredSink(prepared, table_max_rows, max(0, trace_samples))
    start = EarlyStart(asyncio.ensure_future(execute(backend, prepared, sink)), sink)
    start_chart_worker()
    return start


def start_chart_worker() -> None:
    """The chart process starts now, on the other core, so it is ready when a short run finishes."""
    try:
        from mlflow_nemo_judge.compare.plot_worker import shared

        shared()
    except Exception as exc:  # an optimisation: the charts are then drawn in this process
        logger.debug("chart worker not started: %s", exc)


async def opened(tracking_uri: str | None, experiment: str | None, start: EarlyStart) -> Session:
    """The session, opened on a thread while the engine runs; on failure or cancellation the engine
    is stopped (and a session opened after all is closed)."""
    fut = asyncio.ensure_future(asyncio.to_thread(open_session, tracking_uri, experiment))
    try:
        return await asyncio.shield(fut)
    except BaseException:
        await start.cancel()
        if not fut.done():
            fut.add_done_callback(_close_when_open)
        raise


def _close_when_open(fut: asyncio.Future[Session]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()


async def track_single(
    tracking_uri: str | None,
    experiment: str | None,
    s: Settings,
    p: Prepared,
    *,
    run_name: str | None,
    force: bool,
    register: Callable[[Any, list[Outcome]], None] | None = None,
) -> tuple[Outcome, str]:
    """``evaluate``'s tracked single-target path, started early; returns the outcome and experiment id.
    ``register`` (the ``register_model`` step) runs with the client while the session is open."""
    from mlflow_nemo_judge import tracking as trk
    from mlflow_nemo_judge.pipeline import execute
    from mlflow_nemo_judge.tracking import health, runner

    start = begin(
        p, execute=execute, backend=s.backend, table_max_rows=s.table_max_rows, trace_samples=s.trace_samples
    )
    session = await opened(tracking_uri, experiment, start)
    try:
        with health.translated(trk.current_tracking_uri(tracking_uri)):
            try:
                outcome = await runner.track_one(
                    session.cl,
                    session.experiment_id,
                    s,
                    p,
                    role="single",
                    run_name=run_name,
                    force=force,
                    early=start,
                )
            finally:
                if not start.engine.done():  # the run could not be made: its calls stop
                    await start.cancel()
            if register is not None:
                register(session.cl, [outcome])
    finally:
        session.close()
    return outcome, session.experiment_id
