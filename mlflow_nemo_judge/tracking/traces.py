"""Per-sample MLflow traces, written: each ``trace_samples._TraceSample`` (what a trace shows) as a trace
with its spans, and its Feedback and Expectations on the root span so an opened trace shows them in its
Assessments panel (as ``mlflow.genai.evaluate`` does). ``_BatchTraceWriter`` writes many traces in bulk;
``_write_traces_with_spans`` is the slower public-API path when it is unavailable.

**Assessment names.** A Feedback is named ``<metric>/<score>`` (the tail of the run's metric key
``<task>/<metric>/<score>``), e.g. ``correctness/correctness``; an Expectation is named
``item/<field>``, and a human label of a score (``human_labels`` in the config's ``mlflow_nemo_judge``
block) ``human/<score>``. MLflow's built-in scorer and judge names (``correctness``, ``completeness``,
``safety``, ``guidelines``, ``relevance_to_query``, … from ``mlflow.genai.scorers``) never contain a
``/``, so the names never collide with them: a collision makes the evaluation view type the score as a
built-in PASS/FAIL judge (no average, no delta) instead of a number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mlflow_nemo_judge.tracking.trace_names import MAX_PREVIEW, SERVICE_NAME, fit
from mlflow_nemo_judge.tracking.trace_samples import _TraceSample


def trace_metadata(run_id: str, model_id: str | None, sample: _TraceSample | None = None) -> dict[str, str]:
    metadata = {"mlflow.sourceRun": run_id, "mlflow.trace_schema.version": "3"}
    if model_id:
        metadata["mlflow.modelId"] = model_id
    if sample is not None and sample.usage:
        metadata["mlflow.trace.tokenUsage"] = json.dumps(sample.usage)
    return metadata


def _assessments(sample: _TraceSample, trace_id: str | None, span_id: str | None) -> list[Any]:
    """Feedback per score and the Expectations, all on the root span (the Assessments panel's)."""
    from mlflow.entities import AssessmentSource, AssessmentSourceType, Expectation, Feedback

    out: list[Any] = []
    for fb in sample.feedbacks:
        source = (
            AssessmentSource(source_type=AssessmentSourceType.LLM_JUDGE, source_id=fb.judge)
            if fb.judge
            else AssessmentSource(source_type=AssessmentSourceType.CODE, source_id=SERVICE_NAME)
        )
        value: dict[str, Any] = {"error": fb.error} if fb.value is None else {"value": fb.value}
        out.append(
            Feedback(
                name=fb.name,
                rationale=fb.rationale,
                source=source,
                trace_id=trace_id,
                metadata=fb.metadata,
                span_id=span_id,
                **value,
            )
        )
    for ex in sample.expectations:
        out.append(
            Expectation(
                name=ex.name,
                value=ex.value,
                source=AssessmentSource(source_type=AssessmentSourceType.CODE, source_id=SERVICE_NAME),
                trace_id=trace_id,
                span_id=span_id,
            )
        )
    return out


def _preview(obj: Any, limit: int = MAX_PREVIEW) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, default=str)
    return fit(text, limit)


class _BatchTraceWriter:
    """Writes finished traces in bulk: one ``start_trace`` per trace (its info, metadata, Feedbacks and
    Expectations in one write) and one ``log_spans`` for the spans of many traces.

    MLflow's span API exports every span as it ends and then merges the trace info into the trace those
    spans created (~170 ms per 4-span trace on sqlite, measured); writing the info first and the spans
    in bulk costs ~25 ms per trace. It builds spans with an OpenTelemetry tracer that has no exporter
    (its resource names the service, so spans do not say ``unknown_service``) and uses MLflow's tracing
    client, which are not public API; when they are missing, the constructor raises and the caller uses
    the span API instead.
    """

    SPAN_CHUNK = 500

    def __init__(self, tracking_uri: str, experiment_id: str) -> None:
        from mlflow.entities import TraceInfo, TraceLocation, TraceState
        from mlflow.entities.span import LiveSpan
        from mlflow.tracing.client import TracingClient
        from mlflow.tracing.constant import TRACE_REQUEST_ID_PREFIX
        from mlflow.tracing.utils import encode_trace_id
        from opentelemetry import trace as otel_trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        self._live, self._info, self._location, self._state = LiveSpan, TraceInfo, TraceLocation, TraceState
        self._otel = otel_trace
        self._trace_id = lambda otel_id: TRACE_REQUEST_ID_PREFIX + encode_trace_id(otel_id)
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        self._tracer = provider.get_tracer(SERVICE_NAME)  # no processor: nothing auto-exported
        self._client = TracingClient(tracking_uri)
        self.experiment_id = experiment_id
        self.remote = tracking_uri.startswith(("http://", "https://"))

    def write(self, samples: Sequence[_TraceSample], run_id: str, model_id: str | None) -> int:
        infos: list[Any] = []
        spans: list[Any] = []
        for sample in samples:
            start, end = sample.start_ns, sample.end_ns
            root = self._tracer.start_span(sample.name, start_time=start)
            trace_id = self._trace_id(root.get_span_context().trace_id)  # type: ignore[no-untyped-call]  # an untyped OpenTelemetry tracer
            live_root = self._live(root, trace_id, "EVALUATOR")
            live_root.set_inputs(sample.inputs)
            for sp in sample.spans:
                otel = self._tracer.start_span(
                    sp.name, context=self._otel.set_span_in_context(root), start_time=sp.start_ns
                )
                live = self._live(otel, trace_id, sp.span_type)
                live.set_inputs(sp.inputs)
                live.set_outputs(sp.outputs)
                for k, v in sp.attributes.items():
                    live.set_attribute(k, v)
                if sp.error:
                    live.set_attribute("error", sp.error)
                    live.set_status("ERROR")
                otel.end(end_time=sp.end_ns)
                spans.append(live.to_immutable_span())
            live_root.set_outputs(sample.outputs)
            if sample.usage:
                live_root.set_attribute("mlflow.chat.tokenUsage", sample.usage)
            root.end(end_time=end)
            spans.append(live_root.to_immutable_span())
            infos.append(
                self._info(
                    trace_id=trace_id,
                    trace_location=self._location.from_experiment_id(self.experiment_id),
                    request_time=start // 1_000_000,
                    state=self._state.OK,
                    execution_duration=max(0, (end - start) // 1_000_000),
                    request_preview=_preview(sample.inputs),
                    response_preview=_preview(sample.outputs),
                    trace_metadata=trace_metadata(run_id, model_id, sample),
                    tags={"mlflow.traceName": sample.name, **sample.tags},
                    assessments=_assessments(sample, trace_id, live_root.span_id),
                )
            )
        # Trace infos first: then the spans attach to existing traces, MLflow's cheap path. A server
        # takes them concurrently (one round trip each, ~50 ms); a sqlite file serialises writes anyway.
        if self.remote and len(infos) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="nemo-judge-traces") as pool:
                list(pool.map(self._client.start_trace, infos))
        else:
            for info in infos:
                self._client.start_trace(info)
        for i in range(0, len(spans), self.SPAN_CHUNK):
            self._client.log_spans(self.experiment_id, spans[i : i + self.SPAN_CHUNK])
        return len(infos)


def _write_traces_with_spans(
    samples: Sequence[_TraceSample], experiment_id: str, run_id: str, model_id: str | None
) -> int:
    """The same traces through MLflow's public span API (slower; used when the batch writer is not)."""
    import mlflow

    written: list[tuple[str, list[Any]]] = []
    for sample in samples:
        root = mlflow.start_span_no_context(
            name=sample.name,
            span_type="EVALUATOR",
            inputs=sample.inputs,
            experiment_id=experiment_id,
            metadata=trace_metadata(run_id, model_id, sample),
            tags=sample.tags,
            start_time_ns=sample.start_ns,
        )
        for sp in sample.spans:
            span = mlflow.start_span_no_context(
                name=sp.name,
                span_type=sp.span_type,
                parent_span=root,
                inputs=sp.inputs,
                attributes=sp.attributes,
                start_time_ns=sp.start_ns,
            )
            if sp.error:
                span.set_attribute("error", sp.error)
                span.set_status("ERROR")
            span.end(outputs=sp.outputs, end_time_ns=sp.end_ns)
        root.end(outputs=sample.outputs, end_time_ns=sample.end_ns)
        written.append((root.trace_id, _assessments(sample, None, root.span_id)))
    mlflow.flush_trace_async_logging()
    for trace_id, assessments in written:
        for a in assessments:
            mlflow.log_assessment(trace_id, a)
    return len(written)
