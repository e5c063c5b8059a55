"""What one sample's MLflow trace shows, independent of how it is written (``traces.py``): the inputs,
the target call and each judge call as spans, a Feedback per score and Expectations for the reference
fields the metrics read and the row's human labels, already redacted and within every column limit of
MLflow's stores. Assessment names follow the rule in ``traces.py``'s docstring. No mlflow import.

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

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlflow_nemo_judge.config.secrets import redact_strings, redact_text
from mlflow_nemo_judge.results import Judgment, MetricOutcome, SampleRecord
from mlflow_nemo_judge.tracking.trace_names import (
    MAX_ASSESSMENT_NAME,
    MAX_EXPECTATION,
    MAX_SOURCE_ID,
    MAX_TRACE_KEY,
    MAX_TRACE_TAG,
    expectation_name,
    feedback_name,
    fit,
    fit_name,
    token_usage,
)

JudgeRenderer = Callable[[SampleRecord, str], "dict[str, Any] | None"]


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
