"""The MLflow sink: one evaluation as one MLflow run, fed by the pipeline as samples finish.

Tracking is overlapped with the evaluation (issue 15), so what is left after the last model call is a
short flush:

- ``start`` hands the run's setup (config and target files, the LoggedModel, the caller's ``pre_setup``
  steps such as sources and prompts, then params and dataset inputs) to a background thread and returns: the
  first model calls go out while it is written. When it is done, that thread starts the chart worker
  (``compare/plot_worker.py``) if the run has not, which imports matplotlib on the other core. A
  failed setup fails the run at the next record (or at ``finish``), as any sink error does.
- ``sample`` collects, in bounded memory, what the run shows per sample (the UI table spooled to a temp
  file, ``table_spool.py``, and the plot values as float arrays) and hands the first ``trace_samples``
  records to the background trace writer (``trace_stream.py``), which waits for the setup's LoggedModel
  and then writes traces while the models work.
- ``finish`` asks the trace writer to flush, and while it does, logs metrics and tags in one batch and
  (at the same time) uploads the result files, charts (drawn by the worker meanwhile) and table; then it takes the traces' outcome and ends
  the run FINISHED — or FAILED with a ``TrackingError`` when traces are missing, unless
  ``allow_partial_tracking`` (``trace_outcome.py``). ``fail``/``kill`` end it FAILED/KILLED. The record
  of every sample is the redacted ``samples.jsonl`` artifact.
"""

from __future__ import annotations

import logging
import math
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.backends.base import Prepared
from mlflow_nemo_judge.config import EvalConfig
from mlflow_nemo_judge.config.secrets import redact_text
from mlflow_nemo_judge.results import EvalResult, SampleRecord
from mlflow_nemo_judge.tracking.background import in_thread
from mlflow_nemo_judge.tracking.inputs import logged_model
from mlflow_nemo_judge.tracking.names import DEFAULT_TABLE_MAX_ROWS, DEFAULT_TRACE_SAMPLES
from mlflow_nemo_judge.tracking.params import build_params, model_spec, table_row, template_fields
from mlflow_nemo_judge.tracking.runs import RunTracker
from mlflow_nemo_judge.tracking.table_spool import TableSpool
from mlflow_nemo_judge.tracking.trace_stream import (
    QUEUE_MAX,
    TraceReport,
    TraceStream,
    judge_renderer,
    reference_fields,
)

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.reliability.report import ReliabilityReport

logger = logging.getLogger(__package__)


@dataclass
class Collected:
    """What the run shows per sample, gathered as records stream in, in memory that does not grow with
    the texts: the table rows go to a temp file (dropped past ``table_max_rows``), the plots' values to
    float arrays (NaN for an unparsed score, 8 bytes each)."""

    table_max_rows: int
    fields: dict[str, set[str] | None]
    secrets: Sequence[str]
    count: int = 0
    table: TableSpool = field(init=False)
    values: dict[tuple[str, str], dict[str, array[float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.table = TableSpool(self.table_max_rows)

    def add(self, rec: SampleRecord) -> None:
        self.count += 1
        for mname, outcome in rec.metrics.items():
            per = self.values.setdefault((rec.task, mname), {})
            for sname, v in outcome.scores.items():
                per.setdefault(sname, array("d")).append(math.nan if v is None else float(v))
        if not self.table.overflowed:
            row = table_row(rec, self.fields.get(rec.task))
            if self.secrets:  # an error message may quote a key back
                row = {k: redact_text(v, self.secrets) if isinstance(v, str) else v for k, v in row.items()}
            self.table.add(row)

    def close(self) -> None:
        self.table.close()


class MlflowSink:
    """A :class:`~mlflow_nemo_judge.tracking.sink.RunSink` writing one MLflow run through ``RunTracker``."""

    def __init__(
        self,
        tracker: RunTracker,
        config: EvalConfig,
        *,
        backend: str,
        limit: int | None,
        table_max_rows: int = DEFAULT_TABLE_MAX_ROWS,
        trace_samples: int = DEFAULT_TRACE_SAMPLES,
        existing_params: Mapping[str, str] | None = None,
        setup_done: bool = False,
        allow_partial_tracking: bool = False,
        pre_setup: Sequence[Callable[[], None]] = (),
        collected: Collected | None = None,
    ) -> None:
        self.tracker, self.config, self.backend, self.limit = tracker, config, backend, limit
        self.existing_params, self.setup_done = existing_params, setup_done
        self.trace_samples, self.allow_partial_tracking = max(0, trace_samples), allow_partial_tracking
        self.pre_setup = list(pre_setup)  # setup steps of the caller's (sources, prompts), written first
        # Given when the records began before the run existed (``early.py``): gathered the same way.
        self.collected = collected or Collected(table_max_rows, template_fields(config), tracker.secrets)
        self._prepared: Prepared | None = None
        self._setup: Future[str | None] | None = None
        self._model: Future[str | None] = Future()  # the LoggedModel id, the first thing the setup makes
        self._traces: TraceStream | None = None
        self.trace_report: TraceReport | None = None  # after finish: how the traces went (benchmarks)
        self.reliability: ReliabilityReport | None = None  # after finish: the report logged with it

    @property
    def run_id(self) -> str:
        return self.tracker.run_id

    def start(self, prepared: Prepared, backlog: Sequence[SampleRecord] = ()) -> None:
        """``backlog``: records that came before this sink existed (already in ``collected``), for the
        traces."""
        self._prepared = prepared
        self._setup = in_thread(lambda: self._write_setup(prepared), "nemo-judge-setup")
        if self.trace_samples:
            tr = self.tracker
            self._traces = TraceStream(
                tr.cl,
                tr.experiment_id,
                tr.run_id,
                tr.model_id,
                judge_models=prepared.config.judge_models(),
                secrets=tr.secrets,
                references=reference_fields(prepared.config),
                render_judge=judge_renderer(prepared.payload),
                # A resumed run may hold the traces its first attempt streamed: not written twice.
                skip_existing=self.existing_params is not None,
                ready=self._model.result,
                # The backlog is already in memory: queued whole, it never blocks the event loop.
                queue_max=QUEUE_MAX + len(backlog),
            )
            for rec in backlog[: self.trace_samples]:
                self._traces.put(rec)

    def _write_setup(self, prepared: Prepared) -> str | None:
        """The setup thread: the files first (``config.json`` is what ``resume`` needs of a run killed
        early), then the LoggedModel (the traces wait for its id, and with an early start have records
        waiting), then the caller's steps and the rest of the setup, then the chart worker. Returns the
        LoggedModel id."""
        try:
            params = build_params(
                prepared.config,
                prepared.target,
                backend=self.backend,
                limit=self.limit,
                parallelism=prepared.parallelism,
                datasets=prepared.datasets,
            )
            if not self.setup_done:
                self.tracker.log_setup_files(config=prepared.config, target=prepared.target, params=params)
            spec = model_spec(prepared.target)
            if not self.setup_done and spec is not None and self.tracker.model_id is None:
                self.tracker.model_id = logged_model(
                    self.tracker.cl, self.tracker.experiment_id, self.tracker.run_id, spec
                )
            self._model.set_result(self.tracker.model_id)
        except BaseException as exc:
            self._model.set_exception(exc)
            raise
        for step in self.pre_setup:
            step()
        self.tracker.log_setup(
            config=prepared.config,
            target=prepared.target,
            params=params,
            datasets=prepared.datasets,
            model=model_spec(prepared.target),
            existing_params=self.existing_params,
            setup_done=self.setup_done,
            files_done=True,
        )
        self._start_charts()
        return self.tracker.model_id

    @staticmethod
    def _start_charts() -> None:
        """The chart worker starts (it imports matplotlib on the other core) while the models work; an
        optimisation, never a failure. This process does not import matplotlib unless it must draw."""
        from mlflow_nemo_judge.compare import plot_worker

        try:
            plot_worker.shared()
        except Exception as exc:
            logger.debug("chart worker not started: %s", exc)

    def _raise_if_setup_failed(self) -> None:
        if self._setup is not None and self._setup.done() and self._setup.exception() is not None:
            self._setup.result()  # raises it: the engine stops at a failing sink

    def sample(self, record: SampleRecord) -> None:
        self._raise_if_setup_failed()
        self.collected.add(record)
        if self._traces is not None and self._traces.report.wanted < self.trace_samples:
            self._traces.put(record)  # blocks only while the writer's bounded queue is full

    def progress(self, task: str, done: int, total: int | None) -> None:
        self.tracker.progress_callback()(task, done, total)

    def job(self, job: Mapping[str, Any]) -> None:
        """The remote job exists: the run's setup must be complete before its id is on the run, since
        ``attach`` after a dead submitter rebuilds the evaluation from the run's ``config.json``."""
        assert self._setup is not None, "job() before start()"
        self._setup.result()
        self.tracker.on_job(job)

    def finish(self, result: EvalResult, reliability: ReliabilityReport | None = None) -> None:
        assert self._prepared is not None and self._setup is not None, "finish() before start()"
        self.reliability = reliability
        self._setup.result()  # its error fails the run
        engine_end = time.perf_counter()
        traces = self._traces
        if traces is not None:
            traces.stop()  # the last traces are written while the files and metrics are uploaded

        def traces_done() -> TraceReport | None:
            if traces is None:
                return None
            report = traces.close()
            report.overlap(engine_end)
            self.trace_report, self._traces = report, None
            return report

        try:
            self.tracker.finish(
                result,
                self.collected,
                datasets=self._prepared.datasets,
                model=self._prepared.target.display_name,
                traces=traces_done,
                allow_partial_tracking=self.allow_partial_tracking,
                reliability=reliability,
            )
        finally:
            self.collected.close()

    def _drop_traces(self) -> None:
        """A failed or killed run: stop the writer without waiting for what is queued (``resume``
        writes the traces still missing)."""
        self.collected.close()
        if self._traces is not None:
            self.trace_report = self._traces.close(abandon=True, timeout=5.0)
            self._traces = None

    def fail(self, exc: BaseException) -> None:
        self._drop_traces()
        self.tracker.fail(exc)

    def kill(self) -> None:
        self._drop_traces()
        self.tracker.kill()
