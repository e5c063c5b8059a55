"""Traces written while the evaluation runs: a background thread fed by the sink as records stream in.

The engine hands every record to the sink from its event loop; a synchronous MLflow write there (25 ms
per trace on sqlite, a round trip per trace on a server) would stall every request in flight. So
``sample`` only queues the record and the ``nemo-judge-traces`` thread builds the trace (redaction,
judge request, limits) and writes it in batches, while the model calls go on. The queue is bounded
(``QUEUE_MAX`` records): when the store is slower than the models, ``put`` blocks the producer (back
pressure) rather than letting memory grow. ``close`` flushes what is queued, within ``FLUSH_TIMEOUT``.

A failed batch is kept as a count and the first error line (redacted); after ``MAX_FAILED_BATCHES``
consecutive failures the writer stops trying (each try can cost MLflow's bounded retries) and counts
every remaining trace as failed. What the run does with that is ``RunTracker.finish``'s decision.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlflow_nemo_judge.results import SampleRecord
from mlflow_nemo_judge.tracking.trace_samples import JudgeRenderer, _trace_sample, _TraceSample
from mlflow_nemo_judge.tracking.traces import _BatchTraceWriter, _write_traces_with_spans

logger = logging.getLogger(__package__)

QUEUE_MAX = 64  # records waiting for the writer (each holds one sample's texts)
BATCH_MAX = 8  # traces per write: one log_spans for all their spans
BATCH_WAIT = 0.2  # seconds a partial batch waits for more records before it is written
MAX_FAILED_BATCHES = 2  # consecutive failed writes before the writer gives up
FLUSH_TIMEOUT = 300.0  # seconds ``close`` waits for the queue to drain

_STOP = object()


@dataclass
class TraceReport:
    """How the run's traces went: counts, the first error, and when the writes happened."""

    wanted: int = 0  # records offered for tracing
    written: int = 0  # traces now in the store (including ones an earlier attempt wrote)
    existing: int = 0  # of which an earlier attempt wrote
    failed: int = 0
    error: str | None = None  # the first failure, one redacted line
    write_seconds: float = 0.0  # wall time spent in store writes
    overlapped_seconds: float = 0.0  # of which while the evaluation was still running
    intervals: list[tuple[float, float]] = field(default_factory=list, repr=False)  # perf_counter

    @property
    def complete(self) -> bool:
        return self.failed == 0 and self.written >= self.wanted

    def overlap(self, engine_end: float) -> None:
        """Split the write time into before/after ``engine_end`` (a ``perf_counter`` instant)."""
        self.write_seconds = sum(b - a for a, b in self.intervals)
        self.overlapped_seconds = sum(max(0.0, min(b, engine_end) - a) for a, b in self.intervals)


class TraceStream:
    """The background trace writer of one run (see the module docstring)."""

    def __init__(
        self,
        cl: Any,
        experiment_id: str,
        run_id: str,
        model_id: str | None,
        *,
        judge_models: Mapping[tuple[str, str], str],
        secrets: Sequence[str],
        references: Mapping[str, Sequence[str]] | None = None,
        render_judge: JudgeRenderer | None = None,
        skip_existing: bool = False,
        queue_max: int | None = None,
        batch_max: int | None = None,
        batch_wait: float | None = None,
        ready: Callable[[], str | None] | None = None,
    ) -> None:
        self.cl, self.experiment_id, self.run_id, self.model_id = cl, experiment_id, run_id, model_id
        # The run's setup, written beside the first model calls: traces link its LoggedModel, so the
        # writer waits for it (and takes its id) before the first write.
        self._ready = ready
        self.judge_models, self.secrets = judge_models, list(secrets)
        self.references, self.render_judge = references, render_judge
        self.skip_existing = skip_existing
        # The module's figures unless given, read at construction so tests can change them.
        self.batch_max = batch_max or BATCH_MAX
        self.batch_wait = BATCH_WAIT if batch_wait is None else batch_wait
        self.report = TraceReport()
        self._q: queue.Queue[Any] = queue.Queue(maxsize=queue_max or QUEUE_MAX)
        self._thread: threading.Thread | None = None
        self._abandon = threading.Event()  # kill: drop what is queued
        self._gave_up = False
        self._failures = 0
        self._lock = threading.Lock()  # ``report.failed`` is counted from both threads
        self._existing: set[str] | None = None
        self._stopped = False

    # -- producer side (the engine's event loop) -----------------------------------------------------

    def put(self, record: SampleRecord) -> None:
        """Queue one record; blocks while the queue is full (back pressure on the producer)."""
        self.report.wanted += 1
        if self._gave_up:
            self._count_failed(1)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="nemo-judge-traces", daemon=True)
            self._thread.start()
        self._q.put((record, time.time_ns()))

    def stop(self, *, abandon: bool = False) -> None:
        """Ask the writer to flush (or, with ``abandon``, drop) what is queued and end, without waiting:
        a finishing run does its other uploads while the last traces are written."""
        if self._thread is None or self._stopped:
            return
        if abandon:
            self._abandon.set()
        self._stopped = True
        self._q.put(_STOP)

    def close(self, *, abandon: bool = False, timeout: float = FLUSH_TIMEOUT) -> TraceReport:
        """Flush (or, with ``abandon``, drop) what is queued and stop the thread; the final report."""
        if self._thread is None:
            return self.report
        if abandon:
            self._abandon.set()
        self.stop(abandon=abandon)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._count_failed(max(0, self.report.wanted - self.report.written - self.report.failed))
            self.report.error = self.report.error or f"trace writes did not finish within {timeout:g} s"
            self._abandon.set()
        self._thread = None
        return self.report

    # -- the writer thread ---------------------------------------------------------------------------

    def _batches(self) -> Iterator[list[tuple[SampleRecord, int]]]:
        """Records grouped into batches of up to ``batch_max``, a partial one after ``batch_wait``."""
        batch: list[tuple[SampleRecord, int]] = []
        deadline = 0.0
        while True:
            try:
                timeout = max(0.0, deadline - time.monotonic()) if batch else None
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                yield batch
                batch = []
                continue
            if item is _STOP:
                if batch:
                    yield batch
                return
            if not batch:
                deadline = time.monotonic() + self.batch_wait
            batch.append(item)
            if len(batch) >= self.batch_max:
                yield batch
                batch = []

    def _loop(self) -> None:
        writer: _BatchTraceWriter | None | bool = False  # False: not made yet; None: use the span API
        for batch in self._batches():
            if self._abandon.is_set():
                continue  # a killed run: nothing more is written
            if self._gave_up:
                self._count_failed(len(batch))
                continue
            if writer is False:
                if not self._take_setup(len(batch)):
                    continue
                writer = self._writer()
            t0 = time.perf_counter()
            try:
                samples = self._samples(batch)
                if samples:
                    self._write(writer, samples)
                self.report.written += len(samples)
                self._failures = 0
            except Exception as exc:
                self._failed(exc, len(batch))
            finally:
                self.report.intervals.append((t0, time.perf_counter()))

    def _take_setup(self, n: int) -> bool:
        """Wait for the run's setup (its LoggedModel id); a failed setup fails the run, so then the
        writer writes nothing more."""
        if self._ready is None:
            return True
        try:
            self.model_id = self._ready()
            self._ready = None
            return True
        except BaseException as exc:
            self._count_failed(n)
            self.report.error = self.report.error or f"the run's setup failed: {type(exc).__name__}"
            self._gave_up = True
            return False

    def _writer(self) -> _BatchTraceWriter | None:
        try:
            return _BatchTraceWriter(self.cl.tracking_uri, self.experiment_id)
        except Exception as exc:  # internals moved in another MLflow version: use the public span API
            logger.debug("batched trace writer unavailable (%s); using the span API", exc)
            return None

    def _write(self, writer: _BatchTraceWriter | None | bool, samples: list[_TraceSample]) -> None:
        if isinstance(writer, _BatchTraceWriter):
            writer.write(samples, self.run_id, self.model_id)
        else:
            _write_traces_with_spans(samples, self.experiment_id, self.run_id, self.model_id)

    def _samples(self, batch: list[tuple[SampleRecord, int]]) -> list[_TraceSample]:
        """The batch's traces, without the ones an earlier attempt of this run already wrote."""
        if self.skip_existing and self._existing is None:
            self._existing = existing_trace_names(self.cl, self.experiment_id, self.run_id)
        out = []
        for rec, written_ns in batch:
            sample = _trace_sample(
                rec,
                self.judge_models,
                self.secrets,
                references=self.references,
                render_judge=self.render_judge,
                written_ns=written_ns,
            )
            if self._existing is not None and sample.name in self._existing:
                self.report.written += 1  # already in the store
                self.report.existing += 1
                continue
            out.append(sample)
        return out

    def _count_failed(self, n: int) -> None:
        with self._lock:
            self.report.failed += n

    def _failed(self, exc: BaseException, n: int) -> None:
        from mlflow_nemo_judge.tracking.health import tracking_error

        self._count_failed(n)
        self._failures += 1
        # MLflow's message can quote the request URL, userinfo included: say it the redacted way.
        why = str(tracking_error(exc, str(getattr(self.cl, "tracking_uri", "") or "")))
        self.report.error = self.report.error or why
        logger.warning("could not write %d trace(s) to MLflow run %s: %s", n, self.run_id, why)
        if self._failures >= MAX_FAILED_BATCHES:
            self._gave_up = True


def existing_trace_names(cl: Any, experiment_id: str, run_id: str) -> set[str]:
    """The names of the traces already linked to ``run_id`` (one per sample: ``<task>/<item id>``).

    A trace counts only if its spans reached the store (MLflow tags it ``mlflow.trace.spansLocation``
    when they do). A process killed between a batch's trace records and its spans leaves traces
    without spans, which MLflow cannot show: they are deleted here, so the sample is written again and
    the run keeps one trace per sample."""
    names: set[str] = set()
    broken: list[str] = []
    token = None
    while True:
        page = cl.search_traces(
            locations=[experiment_id],
            run_id=run_id,
            max_results=500,
            page_token=token,
            include_spans=False,
        )
        for t in page:
            name = t.info.tags.get("mlflow.traceName")
            if not name:
                continue
            if t.info.tags.get("mlflow.trace.spansLocation"):
                names.add(name)
            else:
                broken.append(t.info.trace_id)
        token = page.token
        if not token:
            break
    if broken:
        cl.delete_traces(experiment_id, trace_ids=broken)
    return names


# ------------------------------------------------------------------------------ what traces need


def reference_fields(config: Any) -> dict[str, list[str]]:
    """Per task, the row fields the metrics' templates read that the task's own (target) template does
    not: the reference answers a trace shows as Expectations. Templates that do not parse give none."""
    from jinja2 import nodes

    from mlflow_nemo_judge.scoring.templating import environment

    env = environment()

    def fields(obj: Any) -> set[str]:
        out: set[str] = set()
        for s in _strings(obj):
            if "{" not in s:
                continue
            try:
                ast = env.parse(s)
            except Exception:
                continue
            for node in ast.find_all(nodes.Getattr):
                if isinstance(node.node, nodes.Name) and node.node.name == "item":
                    out.add(node.attr)
        return out

    refs: dict[str, list[str]] = {}
    for tname, task in (config.tasks or {}).items():
        used = set().union(*(fields(m.params_dict()) for m in (task.metrics or {}).values()))
        refs[tname] = sorted(used - fields(task.params_dict()))
    return refs


def _strings(o: Any) -> Iterator[str]:
    if isinstance(o, str):
        yield o
    elif isinstance(o, Mapping):
        for k, v in o.items():
            if str(k) != "model":
                yield from _strings(v)
    elif isinstance(o, list):
        for v in o:
            yield from _strings(v)


def judge_renderer(plan: Any) -> JudgeRenderer | None:
    """Renders a judge's request for a record again from the local plan (None without one): what the
    judge saw, for its span, when the record does not carry it. ``sample.response`` is not kept in
    records, so a template reading it renders without it (a row error → no request shown)."""
    from mlflow_nemo_judge.plan import Plan

    if not isinstance(plan, Plan):
        return None
    metrics = {(t.name, m.name): m for t in plan.tasks for m in t.metrics if m.judge is not None}

    def render(rec: SampleRecord, metric: str) -> dict[str, Any] | None:
        from mlflow_nemo_judge.scoring.judge import judge_request
        from mlflow_nemo_judge.scoring.templating import build_context

        m = metrics.get((rec.task, metric))
        if m is None:
            return None
        try:
            ctx = build_context(rec.item, {"output_text": rec.output_text or "", "response": {}})
            return judge_request(m, ctx)
        except Exception:  # the engine already recorded this row's template error
            return None

    return render
