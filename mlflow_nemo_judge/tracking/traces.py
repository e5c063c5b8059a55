"""Per-sample MLflow traces: the inputs, the target call and each judge call as spans, Feedback per score
and Expectations for the reference fields the metrics read, all on the root span so an opened trace
shows them in its Assessments panel (as ``mlflow.genai.evaluate`` does).

``_TraceSample`` is what a trace shows (already redacted and within every column limit of MLflow's
stores); ``_BatchTraceWriter`` and ``_write_traces_with_spans`` are how it gets stored.

**Assessment names.** A Feedback is named ``<metric>/<score>`` (the tail of the run's metric key
``<task>/<metric>/<score>``), e.g. ``correctness/correctness``; an Expectation is named
``item/<field>``, and a human label of a score (``human_labels`` in the config's ``mlflow_nemo_judge``
block) ``human/<score>``. MLflow's built-in scorer and judge names (``correctness``, ``completeness``,
``safety``, ``guidelines``, ``relevance_to_query``, … from ``mlflow.genai.scorers``) never contain a
``/``, so the names never collide with them: a collision makes the evaluation view type the score as a
built-in PASS/FAIL judge (no average, no delta) instead of a number.

**Repeats and panels.** A metric judged more than once (``MetricOutcome.judgments``) gets one span per
judgment, ``judge/<metric>/<judge label>/r<repeat>`` (1-based), each with its own raw text, scores,
seed, temperature, timing and usage, so a person can tell the judges and the repeats apart; the
metric's Feedback holds the headline score (the reducer's), as the run's metric does.

**Timings.** Spans carry the start and end of each call as the engine measured them: the target's in
``SampleRecord.timings["target"]`` (epoch nanoseconds), each judge's in its ``MetricOutcome.timing``;
token usage likewise (``SampleRecord.usage["target"]``, ``MetricOutcome.usage``). The judge request is
rendered again from the plan (templating is deterministic; the spill file does not carry every prompt).
Records without timings (older runs, the nemo backend, kept rows) get spans at the time the record was
written, marked ``nemo_judge.timing = unmeasured``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlflow_nemo_judge.config.secrets import redact_strings, redact_text
from mlflow_nemo_judge.results import Judgment, MetricOutcome, SampleRecord
from mlflow_nemo_judge.tracking.trace_names import (  # noqa: F401  # re-exported: the names' home
    MAX_ASSESSMENT_NAME,
    MAX_EXPECTATION,
    MAX_PREVIEW,
    MAX_SOURCE_ID,
    MAX_TRACE_KEY,
    MAX_TRACE_TAG,
    SERVICE_NAME,
    expectation_name,
    feedback_name,
    fit,
    fit_name,
    token_usage,
)

JudgeRenderer = Callable[[SampleRecord, str], "dict[str, Any] | None"]


# ------------------------------------------------------------------------------------------ traces


@dataclass
class _TraceSpan:
    name: str
    span_type: str
    inputs: Any
    outputs: Any
    error: str | None = None
    start_ns: int = 0
    end_ns: int = 0
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class _TraceFeedback:
    name: str
    value: float | None
    error: str | None
    rationale: str | None
    judge: str | None  # the judge model id (LLM_JUDGE source); None for code metrics
    metadata: dict[str, str]


@dataclass
class _TraceExpectation:
    name: str
    value: Any


@dataclass
class _TraceSample:
    name: str
    inputs: dict[str, Any]
    outputs: Any
    spans: list[_TraceSpan]
    feedbacks: list[_TraceFeedback]
    tags: dict[str, str]
    expectations: list[_TraceExpectation] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)  # the trace's total token usage

    @property
    def start_ns(self) -> int:
        return min((s.start_ns for s in self.spans), default=time.time_ns())

    @property
    def end_ns(self) -> int:
        return max((s.end_ns for s in self.spans), default=self.start_ns)


def _timed_span(
    span: _TraceSpan, rec: SampleRecord, written_ns: int, outcome: MetricOutcome | Judgment | None = None
) -> _TraceSpan:
    """The span with its measured times and token usage: from the record (by span name) or from the
    metric's own outcome (``MetricOutcome.timing`` / ``.usage``), whichever the engine fills."""
    t = rec.timings.get(span.name) or (outcome.timing if outcome is not None else None)
    if t is not None:
        span.start_ns, span.end_ns = t[0], max(t)
    else:
        span.start_ns = span.end_ns = written_ns
        span.attributes["nemo_judge.timing"] = "unmeasured"
    tokens = token_usage(rec.usage.get(span.name) or (outcome.usage if outcome is not None else None))
    if tokens:
        span.attributes["mlflow.chat.tokenUsage"] = tokens
    return span


def _trace_sample(
    rec: SampleRecord,
    judge_models: Mapping[tuple[str, str], str],
    secrets: Sequence[str],
    *,
    references: Mapping[str, Sequence[str]] | None = None,
    render_judge: JudgeRenderer | None = None,
    written_ns: int | None = None,
) -> _TraceSample:
    """What one sample's trace shows, independent of how it is written (already redacted).

    ``references``: per task, the row fields the metrics read that the target prompt does not (the
    reference answers), shown as Expectations. ``render_judge`` renders a judge request again when the
    record does not carry it. ``written_ns``: when the record was written (the fallback span time)."""
    now = written_ns if written_ns is not None else time.time_ns()
    spans: list[_TraceSpan] = []
    feedbacks: list[_TraceFeedback] = []
    outcomes: dict[str, Any] = {}  # span name -> the metric outcome it shows
    if rec.request is not None or rec.output_text is not None or rec.target_error:
        spans.append(
            _TraceSpan(
                "target",
                "CHAT_MODEL",
                redact_strings(rec.request or {}, secrets),
                redact_strings(rec.output_text, secrets),
                redact_text(rec.target_error, secrets) if rec.target_error else None,
            )
        )
    for mname, outcome in rec.metrics.items():
        judge = judge_models.get((rec.task, mname))
        inputs: Any = {"metric": mname}
        if judge:
            # Rendered again from the plan (deterministic): the spill file does not carry every prompt.
            request = (
                render_judge(rec, mname) if render_judge is not None and rec.target_error is None else None
            )
            inputs = (
                {"model": judge, **request} if isinstance(request, Mapping) else {**inputs, "model": judge}
            )
        if len(outcome.judgments) > 1:
            first = len(spans)
            for j in outcome.judgments:
                spans.append(_judgment_span(mname, j, inputs, secrets))
                outcomes[spans[-1].name] = j
            feedback_span = spans[first].name
            panel = list(dict.fromkeys(j.judge for j in outcome.judgments))
            if len(panel) > 1:  # the headline is the panel's, not params.model's
                judge = "panel: " + ", ".join(panel)
        else:
            spans.append(
                _TraceSpan(
                    f"judge/{mname}" if judge else f"metric/{mname}",
                    "LLM" if judge else "EVALUATOR",
                    redact_strings(inputs, secrets),
                    redact_strings(
                        {
                            "raw": outcome.raw,
                            "scores": {k: None if math.isnan(v) else v for k, v in outcome.scores.items()},
                        },
                        secrets,
                    ),
                    redact_text(outcome.error, secrets) if outcome.error else None,
                )
            )
            outcomes[spans[-1].name] = outcome
            feedback_span = spans[-1].name
        rationale = redact_text(outcome.raw, secrets) if outcome.raw else None
        for sname, value in outcome.scores.items():
            nan = math.isnan(value)
            feedbacks.append(
                _TraceFeedback(
                    name=feedback_name(mname, sname),
                    value=None if nan else value,
                    error=redact_text(outcome.error or "no score", secrets) if nan else None,
                    rationale=rationale,
                    judge=fit(judge, MAX_SOURCE_ID) if judge else None,
                    metadata={"task": rec.task, "metric": mname, "score": sname, "span": feedback_span},
                )
            )
    spans = [_timed_span(s, rec, now, outcomes.get(s.name)) for s in spans]
    usage: dict[str, int] = {}
    for s in spans:
        for k, v in s.attributes.get("mlflow.chat.tokenUsage", {}).items():
            usage[k] = usage.get(k, 0) + v
    expectations = []
    for fname in (references or {}).get(rec.task, ()):
        if fname in rec.item and rec.item[fname] is not None:
            ref: Any = redact_strings(rec.item[fname], secrets)
            if isinstance(ref, str):
                ref = fit(ref, MAX_EXPECTATION)
            expectations.append(_TraceExpectation(expectation_name(fname), ref))
    expectations += _human_expectations(rec)
    name = f"{rec.task}/{rec.item_id}"
    return _TraceSample(
        name=fit(name, MAX_TRACE_TAG),
        inputs=redact_strings({"task": rec.task, "item_id": rec.item_id, "item": rec.item}, secrets),
        outputs=redact_strings(rec.output_text, secrets),
        spans=spans,
        feedbacks=feedbacks,
        tags={
            "nemo_judge.task": fit(rec.task, MAX_TRACE_TAG),
            "nemo_judge.item_id": fit(rec.item_id, MAX_TRACE_TAG),
        },
        expectations=expectations,
        usage=usage,
    )


def _judgment_span(mname: str, j: Judgment, inputs: Any, secrets: Sequence[str]) -> _TraceSpan:
    """One judgment of a repeated or panel-judged metric: which judge, which repeat, what it said."""
    # The judge is named by its label: with a panel, the config's params.model (the "model" the
    # rendered request would name) is not the model that answered.
    request = {k: v for k, v in inputs.items() if k != "model"} if isinstance(inputs, Mapping) else {}
    request = {"judge": j.judge, "repeat": j.repeat + 1, **request}
    if j.seed is not None:
        request["seed"] = j.seed
    if j.temperature is not None:
        request["temperature"] = j.temperature
    span = _TraceSpan(
        fit(f"judge/{mname}/{j.judge}/r{j.repeat + 1}", MAX_TRACE_KEY),
        "LLM",
        redact_strings(request, secrets),
        redact_strings(
            {"raw": j.raw, "scores": {k: None if math.isnan(v) else v for k, v in j.scores.items()}},
            secrets,
        ),
        redact_text(j.error, secrets) if j.error else None,
    )
    span.attributes.update({"nemo_judge.judge": j.judge, "nemo_judge.repeat": j.repeat + 1})
    return span


def human_expectation_name(score: str) -> str:
    """``human/<score>``: a person's label of the score, beside the judge's ``<metric>/<score>``."""
    return fit_name(f"human/{score}", MAX_ASSESSMENT_NAME)


def _human_expectations(rec: SampleRecord) -> list[_TraceExpectation]:
    """The row's human labels (``MetricOutcome.human``; empty or non-numeric cells are NaN: omitted).
    Two metrics labelling a score of the same name keep apart as ``human/<metric>/<score>``."""
    out: list[_TraceExpectation] = []
    seen: set[str] = set()
    for mname, outcome in rec.metrics.items():
        for sname, value in outcome.human.items():
            if value is None or math.isnan(value):
                continue
            name = human_expectation_name(sname)
            if name in seen:
                name = human_expectation_name(f"{mname}/{sname}")
            seen.add(name)
            out.append(_TraceExpectation(name, value))
    return out


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
