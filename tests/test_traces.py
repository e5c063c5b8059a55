"""Per-sample traces: what an opened trace shows (measured spans, token usage, the judge request,
Feedback and Expectations on the root, a named service), names that never collide with MLflow's
built-in scorers, traces written while the evaluation runs (bounded, with back pressure), a loud
trace-write failure, and backfilling the traces a finished run is missing."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlflow_nemo_judge.errors import TrackingError
from mlflow_nemo_judge.pipeline import evaluate, evaluate_async
from mlflow_nemo_judge.results import MetricOutcome, SampleRecord
from mlflow_nemo_judge.tracking import trace_names as tn
from mlflow_nemo_judge.tracking import trace_samples as tsm
from mlflow_nemo_judge.tracking import trace_stream as ts
from mlflow_nemo_judge.tracking import traces as tr
from mlflow_nemo_judge.tracking.trace_outcome import backfill_traces
from tests.fixtures.paths import SEED_DATA

pytestmark = pytest.mark.usefixtures("judge_cache")

TASK = "consult_summary_eval"
TARGET_URL = "http://target.test:8000/v1/chat/completions"
JUDGE_URL = "http://judge.test:8000/v1/chat/completions"


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _traces(uri: str, experiment_id: str, run_id: str) -> list[Any]:
    return list(_client(uri).search_traces(locations=[experiment_id], run_id=run_id))


# ------------------------------------------------------------------------------------------ names


def test_assessment_names_never_collide_with_mlflows_builtin_scorers():
    from mlflow.genai.scorers.builtin_scorers import get_all_scorers

    builtin = {s.name for s in get_all_scorers()} | {"correctness", "completeness", "safety", "guidelines"}
    names = [tn.feedback_name(m, m) for m in builtin] + [tn.expectation_name(m) for m in builtin]
    assert not builtin & set(names)
    assert tn.feedback_name("correctness", "correctness") == "correctness/correctness"  # recognisable
    a, b = tn.feedback_name("m" * 300, "x"), tn.feedback_name("m" * 300, "y")
    assert len(a) <= 250 and len(b) <= 250 and a != b


def test_previews_fit_mlflows_column():
    assert len(tr._preview("x" * 5000)) == 1000 and tr._preview("short") == "short"


# ----------------------------------------------------------------------------- what a trace shows


def _record() -> SampleRecord:
    rec = SampleRecord(
        task="t",
        index=0,
        item_id="r0",
        item={"question": "q?", "answer": "the reference"},
        output_text="an answer",
        request={"messages": [{"role": "user", "content": "q?"}]},
        metrics={"correctness": MetricOutcome(scores={"correctness": 4.0}, raw="RATING: 4")},
    )
    t0 = 1_700_000_000_000_000_000
    # The engine's measured timings and per-call usage: the target's on the record, a judge's on its
    # outcome (see the traces module docstring).
    rec.timings = {"target": (t0, t0 + 200_000_000)}
    rec.usage = {"target": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
    judged = rec.metrics["correctness"]
    judged.timing = (t0 + 210_000_000, t0 + 500_000_000)
    judged.usage = {"prompt_tokens": 30, "completion_tokens": 3, "total_tokens": 33}
    return rec


@pytest.mark.timeout(60)
def test_a_written_trace_shows_measured_spans_usage_and_root_assessments(mlflow_uri):
    cl = _client(mlflow_uri)
    exp = cl.create_experiment("t")
    run = cl.create_run(exp)
    sample = tsm._trace_sample(
        _record(),
        {("t", "correctness"): "judge-model"},
        [],
        references={"t": ["answer"]},
        render_judge=lambda rec, m: {"messages": [{"role": "user", "content": f"judge {rec.output_text}"}]},
    )
    tr._BatchTraceWriter(mlflow_uri, exp).write([sample], run.info.run_id, None)

    (trace,) = _traces(mlflow_uri, exp, run.info.run_id)
    spans = {s.name: s for s in trace.data.spans}
    root = spans["t/r0"]
    t0 = 1_700_000_000_000_000_000
    assert (spans["target"].start_time_ns, spans["target"].end_time_ns) == (t0, t0 + 200_000_000)
    assert spans["judge/correctness"].end_time_ns - spans["judge/correctness"].start_time_ns == 290_000_000
    assert (root.start_time_ns, root.end_time_ns) == (t0, t0 + 500_000_000)
    assert trace.info.execution_duration == 500
    assert spans["target"].attributes["mlflow.chat.tokenUsage"]["total_tokens"] == 15
    assert json.loads(trace.info.trace_metadata["mlflow.trace.tokenUsage"])["total_tokens"] == 48
    judge_in = spans["judge/correctness"].inputs
    assert judge_in["model"] == "judge-model" and judge_in["messages"][0]["content"] == "judge an answer"
    by_name = {a.name: a for a in trace.info.assessments}
    assert by_name["correctness/correctness"].value == 4.0
    assert by_name["item/answer"].value == "the reference"  # a reference field as an Expectation
    assert {a.span_id for a in trace.info.assessments} == {root.span_id}  # the Assessments panel's
    # the tracer names its service (MLflow stores resource attributes as trace tags): no
    # "unknown_service:python3" from a private tracer provider
    assert trace.info.tags["service.name"] == "mlflow-nemo-judge"


def test_records_without_timings_get_spans_at_their_write_time_marked_unmeasured():
    rec = _record()
    rec.timings, rec.metrics["correctness"].timing = {}, None
    sample = tsm._trace_sample(rec, {}, [], written_ns=123)
    assert all(s.start_ns == s.end_ns == 123 for s in sample.spans)
    assert all(s.attributes["nemo_judge.timing"] == "unmeasured" for s in sample.spans)


def test_reference_fields_are_what_metrics_read_and_the_target_prompt_does_not():
    from mlflow_nemo_judge.config import load_config
    from tests.fixtures.seed_config import seed_config

    cfg = seed_config(files_url=str(SEED_DATA))
    assert ts.reference_fields(load_config(cfg)) == {TASK: []}  # judges read the consult the target saw
    cfg["tasks"][TASK]["metrics"]["correctness"]["params"]["template"]["messages"][1]["content"] += (
        "Reference: {{ item.expected_summary }}"
    )
    assert ts.reference_fields(load_config(cfg)) == {TASK: ["expected_summary"]}


def test_an_evaluated_trace_shows_the_rendered_judge_request(seed_eval, mlflow_uri):
    ev = evaluate(
        seed_eval["config"],
        seed_eval["faithful"],
        experiment="judge-request",
        tracking_uri=mlflow_uri,
        limit=1,
        progress_bar=False,
        trace_samples=1,
    )
    (trace,) = _traces(mlflow_uri, ev.experiment_id, ev.run_ids[0])
    judge = next(s for s in trace.data.spans if s.name == "judge/correctness")
    messages = judge.inputs["messages"]
    assert messages[0]["role"] == "system" and "correctness" in messages[0]["content"]
    assert "Full Consult:" in messages[-1]["content"] and "Summary:" in messages[-1]["content"]
    # spans measured by the engine, not synthetic: each call's own start and end, inside the trace's
    spans = {s.name: s for s in trace.data.spans}
    calls = [spans["target"], spans["judge/completeness"], judge]
    assert all("nemo_judge.timing" not in s.attributes for s in calls)
    assert all(s.end_time_ns > s.start_time_ns for s in calls)
    assert spans["target"].end_time_ns <= judge.start_time_ns  # the judges read the target's output
    assert spans["target"].attributes["mlflow.chat.tokenUsage"]["total_tokens"] > 0


# --------------------------------------------------------------------------- written while running


def _chat(text: str) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]
    }


def _seed_with(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from tests.fixtures.seed_config import seed_config

    cfg = seed_config(judge_url=url.replace("target", "judge"), judge_model="j", files_url=str(SEED_DATA))
    cfg["params"] = {"parallelism": 4}
    target = {"type": "model", "model": {"api_endpoint": {"url": url, "model_id": "m"}}}
    return cfg, target


@pytest.mark.timeout(60)
def test_traces_are_written_while_the_model_calls_go_on(mlflow_uri):
    """Before the last model call is answered, traces of earlier samples are already in the store."""
    db = Path(mlflow_uri.removeprefix("sqlite:///"))
    seen_in_store: list[int] = []
    calls = 0

    async def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        # Long enough for the run's setup (written beside the first calls) to land well before the end.
        await asyncio.sleep(0.1)
        if calls >= 60:  # the last of 20 samples × 3 calls
            with sqlite3.connect(db) as con:
                seen_in_store.append(con.execute("select count(*) from trace_info").fetchone()[0])
        if req.url.host == "judge.test":
            return httpx.Response(200, json=_chat("RATING: 4"))
        return httpx.Response(200, json=_chat("a summary"))

    cfg, target = _seed_with(TARGET_URL)

    async def go() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            return await evaluate_async(
                cfg,
                target,
                experiment="streamed",
                tracking_uri=mlflow_uri,
                limit=20,
                cache=False,
                progress_bar=False,
                trace_samples=20,
                http_client=http,
            )

    ev = asyncio.run(go())
    assert seen_in_store and max(seen_in_store) > 0  # some traces landed before the run ended
    assert len(_traces(mlflow_uri, ev.experiment_id, ev.run_ids[0])) == 20


class _SlowStream(ts.TraceStream):
    """A stream whose store takes ``delay`` per batch and records the biggest queue it saw."""

    def __init__(self, delay: float, **kw: Any) -> None:
        super().__init__(None, "0", "run", None, judge_models={}, secrets=[], **kw)
        self.delay, self.batches, self.release = delay, [], threading.Event()

    def _writer(self) -> None:
        return None

    def _write(self, writer: Any, samples: list[Any]) -> None:
        self.release.wait(self.delay)
        self.batches.append(len(samples))


@pytest.mark.timeout(20)
def test_a_slow_store_applies_back_pressure_instead_of_growing_memory():
    stream = _SlowStream(10.0, queue_max=3, batch_max=2, batch_wait=0.01)
    produced = 0

    def producer() -> None:
        nonlocal produced
        for i in range(20):
            stream.put(SampleRecord(task="t", index=i, item_id=str(i), item={}))
            produced += 1

    t = threading.Thread(target=producer, daemon=True)
    t.start()
    time.sleep(0.5)
    # the writer holds one batch (2), the queue 3 more: the producer waits for the store
    assert produced <= 2 + 3 + 1 and t.is_alive()
    stream.release.set()
    t.join(10)
    report = stream.close(timeout=10)
    assert produced == 20 and report.written == 20 and report.failed == 0 and max(stream.batches) <= 2


# ---------------------------------------------------------------------------------- loud failures


def _failing_writes(monkeypatch: pytest.MonkeyPatch, after: int = 0) -> dict[str, Any]:
    """The store rejects trace batches after the first ``after`` (as PostgreSQL did with 1001-character
    previews) while ``state["fail"]``."""
    real = tr._BatchTraceWriter.write
    state = {"n": 0, "fail": True}

    def write(self: Any, samples: Any, run_id: str, model_id: Any) -> int:
        state["n"] += 1
        if state["fail"] and state["n"] > after:
            raise RuntimeError('value too long for type character varying(1000) at "http://u:pw@db/x"')
        return real(self, samples, run_id, model_id)

    monkeypatch.setattr(tr._BatchTraceWriter, "write", write)
    return state


@pytest.mark.timeout(60)
def test_a_trace_write_failure_fails_the_run(seed_eval, mlflow_uri, monkeypatch):
    _failing_writes(monkeypatch)
    with pytest.raises(TrackingError) as err:
        evaluate(
            seed_eval["config"],
            seed_eval["faithful"],
            experiment="loud",
            tracking_uri=mlflow_uri,
            limit=3,
            progress_bar=False,
            trace_samples=3,
        )
    msg = str(err.value)
    assert "\n" not in msg and "3 of 3 could not be written" in msg and "--allow-partial-tracking" in msg
    (run,) = _client(mlflow_uri).search_runs(
        [_client(mlflow_uri).get_experiment_by_name("loud").experiment_id]
    )
    assert run.info.status == "FAILED" and err.value.exit_code == 1
    assert run.data.tags["nemo_judge.traces"] == "failed"
    assert run.data.tags["nemo_judge.traces_written"] == "0/3"
    assert "Traces: 3 of 3 could not be written" in run.data.tags["mlflow.note.content"]
    assert "pw@" not in json.dumps(run.data.tags)  # the store's error line is redacted


@pytest.mark.timeout(90)
def test_partial_tracking_finishes_and_a_rerun_backfills_the_missing_traces(
    seed_eval, mlflow_uri, monkeypatch
):
    store = _failing_writes(monkeypatch, after=1)  # the first batch lands, the rest are rejected
    monkeypatch.setattr(ts, "BATCH_MAX", 2)
    monkeypatch.setattr(ts, "BATCH_WAIT", 30.0)  # batches of exactly 2, however slowly records come
    ev = evaluate(
        seed_eval["config"],
        seed_eval["faithful"],
        experiment="partial",
        tracking_uri=mlflow_uri,
        limit=6,
        progress_bar=False,
        trace_samples=6,
        allow_partial_tracking=True,
    )
    cl = _client(mlflow_uri)
    run = cl.get_run(ev.run_ids[0])
    assert run.info.status == "FINISHED" and run.data.tags["nemo_judge.traces"] == "partial"
    assert run.data.tags["nemo_judge.traces_written"] == "2/6"
    assert "Traces: 4 of 6 could not be written" in run.data.tags["mlflow.note.content"]
    assert len(_traces(mlflow_uri, ev.experiment_id, run.info.run_id)) == 2

    store["fail"] = False  # the store accepts traces again
    assert backfill_traces(cl, cl.get_run(run.info.run_id), trace_samples=6) == 4
    after = cl.get_run(run.info.run_id)
    assert after.data.tags["nemo_judge.traces"] == "6"
    traces = _traces(mlflow_uri, ev.experiment_id, run.info.run_id)
    assert len(traces) == 6 and len({t.info.tags["mlflow.traceName"] for t in traces}) == 6
    assert all({a.name for a in t.info.assessments} >= {"correctness/correctness"} for t in traces)
    assert backfill_traces(cl, after, trace_samples=6) == 0  # complete: nothing written twice


def _resuming_stream(cl: Any, exp: str, run_id: str) -> ts.TraceStream:
    """A trace stream of a resumed attempt: it skips the traces an earlier attempt wrote."""
    return ts.TraceStream(cl, exp, run_id, None, judge_models={}, secrets=[], skip_existing=True)


def _rec(i: int) -> SampleRecord:
    return SampleRecord(task="t", index=i, item_id=f"r{i}", item={"q": i}, output_text="a")


@pytest.mark.timeout(60)
def test_a_resumed_run_does_not_write_the_traces_of_its_first_attempt_again(mlflow_uri):
    cl = _client(mlflow_uri)
    exp = cl.create_experiment("resumed")
    run_id = cl.create_run(exp).info.run_id

    first = _resuming_stream(cl, exp, run_id)
    for i in range(2):  # the first attempt streamed two traces, then was killed
        first.put(_rec(i))
    assert first.close().written == 2
    again = _resuming_stream(cl, exp, run_id)
    for i in range(3):
        again.put(_rec(i))
    report = again.close()
    assert (report.written, report.existing, report.failed) == (3, 2, 0) and report.complete
    names = sorted(t.info.tags["mlflow.traceName"] for t in _traces(mlflow_uri, exp, run_id))
    assert names == ["t/r0", "t/r1", "t/r2"]


def test_a_trace_killed_between_its_record_and_its_spans_is_written_again(mlflow_uri, monkeypatch):
    # A process killed after a batch's trace records reached the store but before its spans did leaves
    # traces MLflow cannot show; a resumed run must replace them, keeping one trace per sample.
    cl = _client(mlflow_uri)
    exp = cl.create_experiment("half-written")
    run_id = cl.create_run(exp).info.run_id

    first = _resuming_stream(cl, exp, run_id)
    first.put(_rec(0))
    assert first.close().written == 1
    with monkeypatch.context() as m:  # the kill: r1's trace record is written, its spans never are
        m.setattr("mlflow.tracing.client.TracingClient.log_spans", lambda *a, **k: None)
        half = _resuming_stream(cl, exp, run_id)
        half.put(_rec(1))
        half.close()
    infos = cl.search_traces(locations=[exp], run_id=run_id, include_spans=False)
    assert sorted(t.info.tags["mlflow.traceName"] for t in infos) == ["t/r0", "t/r1"]  # r1 without spans

    again = _resuming_stream(cl, exp, run_id)
    for i in range(3):
        again.put(_rec(i))
    report = again.close()
    assert (report.existing, report.failed) == (1, 0) and report.complete
    traces = _traces(mlflow_uri, exp, run_id)
    assert sorted(t.info.tags["mlflow.traceName"] for t in traces) == ["t/r0", "t/r1", "t/r2"]
    assert all(t.data.spans for t in traces)
