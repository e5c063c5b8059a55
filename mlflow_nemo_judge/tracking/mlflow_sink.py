"""The MLflow sink: one evaluation as one MLflow run, fed by the pipeline as samples finish.

``start`` logs everything known before the first model call (config, target, prompts, params, dataset
inputs, the LoggedModel); ``sample`` collects, in bounded memory, what the run shows per sample (the
UI table up to ``table_max_rows`` rows, plot values) and hands the first ``trace_samples`` records to
the background trace writer (``trace_stream.py``), so traces are written while the models work;
``finish`` flushes the traces, logs metrics (with the reliability report's), artifacts (the report's
under ``nemo_judge/reliability/``) and the table, and ends the run FINISHED — or
FAILED with a ``TrackingError`` when traces are missing, unless ``allow_partial_tracking``
(``trace_outcome.py``); ``fail``/``kill`` end it FAILED/KILLED. The record of every sample is the
redacted ``samples.jsonl`` artifact.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.backends.base import Prepared
from mlflow_nemo_judge.config import EvalConfig
from mlflow_nemo_judge.config.secrets import redact_text
from mlflow_nemo_judge.results import EvalResult, SampleRecord
from mlflow_nemo_judge.tracking.names import DEFAULT_TABLE_MAX_ROWS, DEFAULT_TRACE_SAMPLES
from mlflow_nemo_judge.tracking.params import build_params, model_spec, table_row, template_fields
from mlflow_nemo_judge.tracking.runs import RunTracker
from mlflow_nemo_judge.tracking.trace_stream import TraceReport, TraceStream, judge_renderer, reference_fields

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.reliability.report import ReliabilityReport


@dataclass
class Collected:
    """What the run shows per sample, gathered as records stream in (the table bounded by its cap)."""

    table_max_rows: int
    fields: dict[str, set[str] | None]
    secrets: Sequence[str]
    count: int = 0
    rows: list[dict[str, Any]] | None = field(default_factory=list)
    values: dict[tuple[str, str], dict[str, list[float | None]]] = field(default_factory=dict)

    def add(self, rec: SampleRecord) -> None:
        self.count += 1
        for mname, outcome in rec.metrics.items():
            per = self.values.setdefault((rec.task, mname), {})
            for sname, v in outcome.scores.items():
                per.setdefault(sname, []).append(v)
        if self.rows is not None:
            row = table_row(rec, self.fields.get(rec.task))
            if self.secrets:  # an error message may quote a key back
                row = {k: redact_text(v, self.secrets) if isinstance(v, str) else v for k, v in row.items()}
            self.rows.append(row)
            if len(self.rows) > self.table_max_rows:
                self.rows = None  # too big for a UI table: the JSONL file is the per-sample record


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
    ) -> None:
        self.tracker, self.config, self.backend, self.limit = tracker, config, backend, limit
        self.existing_params, self.setup_done = existing_params, setup_done
        self.trace_samples, self.allow_partial_tracking = max(0, trace_samples), allow_partial_tracking
        self.collected = Collected(table_max_rows, template_fields(config), tracker.secrets)
        self._prepared: Prepared | None = None
        self._traces: TraceStream | None = None
        self.trace_report: TraceReport | None = None  # after finish: how the traces went (benchmarks)
        self.reliability: ReliabilityReport | None = None  # after finish: the report logged with it

    @property
    def run_id(self) -> str:
        return self.tracker.run_id

    def start(self, prepared: Prepared) -> None:
        self._prepared = prepared
        params = build_params(
            prepared.config,
            prepared.target,
            backend=self.backend,
            limit=self.limit,
            parallelism=prepared.parallelism,
            datasets=prepared.datasets,
        )
        self.tracker.log_setup(
            config=prepared.config,
            target=prepared.target,
            params=params,
            datasets=prepared.datasets,
            model=model_spec(prepared.target),
            existing_params=self.existing_params,
            setup_done=self.setup_done,
        )
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
            )

    def sample(self, record: SampleRecord) -> None:
        self.collected.add(record)
        if self._traces is not None and self._traces.report.wanted < self.trace_samples:
            self._traces.put(record)  # blocks only while the writer's bounded queue is full

    def progress(self, task: str, done: int, total: int | None) -> None:
        self.tracker.progress_callback()(task, done, total)

    def job(self, job: Mapping[str, Any]) -> None:
        self.tracker.on_job(job)

    def finish(self, result: EvalResult, reliability: ReliabilityReport | None = None) -> None:
        assert self._prepared is not None, "finish() before start()"
        self.reliability = reliability
        report = None
        if self._traces is not None:
            engine_end = time.perf_counter()
            report = self._traces.close()
            report.overlap(engine_end)
            self.trace_report, self._traces = report, None
        self.tracker.finish(
            result,
            self.collected,
            datasets=self._prepared.datasets,
            model=self._prepared.target.display_name,
            traces=report,
            allow_partial_tracking=self.allow_partial_tracking,
            reliability=reliability,
        )

    def _drop_traces(self) -> None:
        """A failed or killed run: stop the writer without waiting for what is queued (``resume``
        writes the traces still missing)."""
        if self._traces is not None:
            self.trace_report = self._traces.close(abandon=True, timeout=5.0)
            self._traces = None

    def fail(self, exc: BaseException) -> None:
        self._drop_traces()
        self.tracker.fail(exc)

    def kill(self) -> None:
        self._drop_traces()
        self.tracker.kill()
