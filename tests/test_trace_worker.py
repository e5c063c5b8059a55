"""The trace worker (issue 15): a helper process with MLflow imported writes a run's traces, and every
way it can be unusable falls back to, or fails, the way an in-process write would."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlflow_nemo_judge import evaluate
from mlflow_nemo_judge.data.scan import DatasetInfo
from mlflow_nemo_judge.errors import TrackingError, TrackingUnavailable
from mlflow_nemo_judge.tracking import trace_worker, traces
from mlflow_nemo_judge.tracking.trace_samples import _TraceFeedback, _TraceSample, _TraceSpan

TASK = "consult_summary_eval"


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[trace_worker.TraceWorker]:
    """A fresh shared worker for every run of the test, ready (MLflow imported), closed afterwards."""
    monkeypatch.setenv("NEMO_JUDGE_TRACE_WORKER", "1")
    monkeypatch.setattr(trace_worker, "_SHARED", None)
    trace_worker.start("sqlite:///unused.db")
    w = trace_worker.current()
    assert w is not None
    deadline = time.monotonic() + 60
    while not (w._helper is not None and w._is_ready(w._helper)):
        assert w.running and time.monotonic() < deadline, "the trace worker did not become ready"
        time.sleep(0.05)
    yield w
    w.close()


def _sample(name: str) -> _TraceSample:
    now = time.time_ns()
    span = _TraceSpan(
        "target", "LLM", {"messages": [{"role": "user", "content": "hi"}]}, "hello", None, now, now + 1000
    )
    feedback = _TraceFeedback("m/rating", 4.0, None, "RATING: 4", "mock/judge", {})
    return _TraceSample(name, {"prompt": "hi"}, "hello", [span], [feedback], {"nemo_judge.item": name})


def test_a_runs_traces_are_written_by_the_worker_with_their_spans_and_scores(
    worker: trace_worker.TraceWorker,
    seed_eval: dict[str, Any],
    mlflow_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writing in this process is made to fail: every trace still arrives, so the worker wrote them,
    and each has the target span and both judges' scores as the in-process writer would give."""
    from mlflow.tracking import MlflowClient

    def not_here(*a: Any, **kw: Any) -> int:
        raise AssertionError("written in the evaluating process")

    monkeypatch.setattr(traces._BatchTraceWriter, "write", not_here)
    ev = evaluate(
        seed_eval["config"],
        seed_eval["faithful"],
        experiment="worker",
        tracking_uri=mlflow_uri,
        limit=12,
        trace_samples=12,
        cache=False,
        progress_bar=False,
    )
    cl = MlflowClient(tracking_uri=mlflow_uri)
    (run_id,) = ev.run_ids
    run = cl.get_run(run_id)
    assert run.info.status == "FINISHED", run.data.tags.get("nemo_judge.error")
    found = cl.search_traces(locations=[run.info.experiment_id], run_id=run_id)
    assert len(found) == 12
    for t in found:
        assert {s.name for s in t.data.spans} >= {"target"}
        names = {a.name for a in t.info.assessments}
        assert any(n.startswith("correctness") for n in names) and any(
            n.startswith("completeness") for n in names
        )
    assert worker.running  # kept for the next run


def test_a_store_error_in_the_worker_is_the_batchs_failure_and_says_no_secret(
    worker: trace_worker.TraceWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that refuses connections, behind a URI with a password: the worker answers the error,
    it is raised here as the unreachable-store error, masked, and the worker stays usable."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    # The worker takes this process's MLflow settings with the batch: one quick try.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = f"http://alice:hunter2-secret@127.0.0.1:{port}"
    with pytest.raises(TrackingUnavailable) as err:
        worker.write(uri, "1", "run", None, [_sample("s0")])
    assert "hunter2-secret" not in str(err.value) and "unreachable" in str(err.value)
    assert worker.running


def test_a_worker_that_exits_with_a_batch_fails_that_batch(
    worker: trace_worker.TraceWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker cannot enter the folder the batch names and exits: the batch may or may not have been
    written, so it is not written again here; it fails, and later batches are written here."""
    monkeypatch.setattr(trace_worker.os, "getcwd", lambda: str(tmp_path / "gone"))
    with pytest.raises(TrackingError, match="trace writer process exited"):
        worker.write(f"sqlite:///{tmp_path}/m.db", "1", "run", None, [_sample("s0")])
    assert not worker.running
    assert worker.write(f"sqlite:///{tmp_path}/m.db", "1", "run", None, [_sample("s1")]) is False


def test_a_worker_that_is_gone_or_busy_is_not_asked(worker: trace_worker.TraceWorker, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    with worker._lock:  # another run's batch is being written
        assert worker.write(uri, "1", "run", None, [_sample("s0")]) is False
    assert worker._helper is not None
    worker._helper.proc.kill()
    worker._helper.proc.wait()
    assert worker.write(uri, "1", "run", None, [_sample("s0")]) is False
    assert trace_worker.current() is None


def test_which_runs_use_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    def ds(num_rows: int | None, limit: int | None) -> DatasetInfo:
        return DatasetInfo("t", "d", None, None, "x", num_rows, limit)

    assert trace_worker.planned([ds(100, None)], 200) == 100
    assert trace_worker.planned([ds(100, 10), ds(None, 5)], 200) == 15
    assert trace_worker.planned([ds(100, None)], 30) == 30
    assert trace_worker.planned([ds(None, None)], 200) is None
    monkeypatch.setenv("NEMO_JUDGE_TRACE_WORKER", "20")
    assert not trace_worker.wanted(19) and trace_worker.wanted(20) and trace_worker.wanted(None)
    monkeypatch.setenv("NEMO_JUDGE_TRACE_WORKER", "0")
    assert not trace_worker.wanted(None) and not trace_worker.wanted(10**6)
    assert trace_worker.store_kind("sqlite:////tmp/x.db") == "sql"
    assert trace_worker.store_kind("postgresql+psycopg2://u:p@h/db") == "sql"
    assert trace_worker.store_kind("http://u:p@h") == "other" and trace_worker.store_kind(None) == "other"
