"""Tracking overlapped with the evaluation (issue 15): the streamed per-sample table, the chart worker,
and a run whose setup (written beside the model calls) fails."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from mlflow_nemo_judge import evaluate
from mlflow_nemo_judge.compare.plot_worker import Chart, PlotWorker
from mlflow_nemo_judge.tracking.table_spool import TableSpool, with_table

PNG = b"\x89PNG\r\n\x1a\n"

# ------------------------------------------------------------------------------------------ table


def test_the_streamed_table_reads_back_as_pandas_would_have_written_it(tmp_path: Path) -> None:
    """Rows of different tasks (different columns), NaN and None cells, unicode: the file loads with
    pandas (``orient="split"``, what ``mlflow.load_table`` reads) into the frame of the same rows."""
    import pandas as pd

    rows: list[dict[str, Any]] = [
        {"item_id": "a", "score": 4.0, "text": "héllo", "flag": True},
        {"item_id": "b", "score": None, "text": "x", "flag": False},
        {"item_id": "c", "score": math.nan, "other": 7},
    ]
    spool = TableSpool(max_rows=10)
    for r in rows:
        spool.add(r)
    assert spool.rows == 3 and list(spool.columns) == ["item_id", "score", "text", "flag", "other"]
    out = tmp_path / "t.json"
    assert spool.write(out)
    doc = json.loads(out.read_text(encoding="utf-8"))  # strict JSON: NaN would not parse as a number
    assert doc["columns"] == ["item_id", "score", "text", "flag", "other"]
    assert doc["data"][2] == ["c", None, None, None, 7]
    got = pd.read_json(out, orient="split")
    want = pd.DataFrame(rows)
    assert list(got.columns) == list(want.columns)
    assert got["item_id"].tolist() == ["a", "b", "c"]
    assert got["score"].iloc[0] == 4.0 and got["score"].iloc[1:].isna().all()
    assert got["text"].tolist()[:2] == ["héllo", "x"]
    spool.close()


def test_a_table_past_its_row_cap_is_dropped_with_its_temp_file(tmp_path: Path) -> None:
    spool = TableSpool(max_rows=2)
    spool.add({"a": 1})
    spool.add({"a": 2})
    tmp = spool._path
    assert tmp is not None and tmp.exists()
    spool.add({"a": 3})
    assert spool.overflowed and spool.rows == 0 and not tmp.exists()
    assert not spool.write(tmp_path / "t.json") and not (tmp_path / "t.json").exists()


def test_closing_a_spool_removes_its_rows_from_disk() -> None:
    spool = TableSpool(max_rows=5)
    spool.add({"secretless": "row"})
    tmp = spool._path
    assert tmp is not None and tmp.exists()
    spool.close()
    assert not tmp.exists()


def test_the_logged_tables_tag_keeps_what_it_held() -> None:
    mine = {"path": "nemo_judge/samples.json", "type": "table"}
    other = {"path": "nemo_judge/comparison.json", "type": "table"}
    assert json.loads(with_table(None, mine["path"])) == [mine]
    assert json.loads(with_table(json.dumps([other]), mine["path"])) == [other, mine]
    assert json.loads(with_table(json.dumps([mine]), mine["path"])) == [mine]  # not twice
    assert json.loads(with_table("not json", mine["path"])) == [mine]


# ----------------------------------------------------------------------------------- chart worker


def _charts(tmp_path: Path, n: int) -> list[Chart]:
    scores: dict[str, list[float | None]] = {"s": [1.0, 2.0, 2.0, None, math.nan, 5.0]}
    return [Chart(f"task / m{i}", scores, tmp_path / f"sub{i}" / "c.png", "vendor/model") for i in range(n)]


@pytest.mark.timeout(120)
def test_the_chart_worker_draws_every_chart(tmp_path: Path) -> None:
    worker = PlotWorker()
    worker.start()
    try:
        charts = _charts(tmp_path, 3)
        paths = worker.render(charts)
        assert paths == [c.path for c in charts]
        assert all(p.read_bytes().startswith(PNG) for p in paths)
        assert worker._helper is not None and worker._helper.alive  # kept for the next run
    finally:
        worker.close()
    assert worker._helper is None


@pytest.mark.timeout(120)
def test_charts_are_drawn_here_when_the_worker_died(tmp_path: Path) -> None:
    worker = PlotWorker()
    worker.start()
    assert worker._helper is not None
    worker._helper.proc.kill()
    worker._helper.proc.wait()
    charts = _charts(tmp_path, 4)
    worker.render(charts)
    assert all(c.path.read_bytes().startswith(PNG) for c in charts)
    worker.start()  # a later run gets a new worker
    assert worker._helper is not None and worker._helper.alive
    worker.close()


@pytest.mark.timeout(120)
def test_a_chart_the_worker_cannot_draw_is_drawn_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker answers ``error`` for a job it cannot draw (here it is sent scores that are not
    numbers); the chart is then drawn in this process from the real scores."""
    from mlflow_nemo_judge.compare import plot_worker

    monkeypatch.setattr(plot_worker, "_floats", lambda values: ["not a number"] * len(values))
    worker = PlotWorker()
    worker.start()
    try:
        charts = _charts(tmp_path, 3)
        worker.render(charts)
        assert all(c.path.read_bytes().startswith(PNG) for c in charts)
        assert worker._helper is not None and worker._helper.alive  # an error answer keeps it
    finally:
        worker.close()


@pytest.mark.timeout(120)
def test_a_helpers_line_is_not_lost_to_a_reader_that_stopped_waiting() -> None:
    """The chart worker prints ``ready`` after importing matplotlib: a read that times out first does
    not swallow it, so the next read gets it (before, a timed-out read's thread took the line, and the
    worker was never used again by that process)."""
    from mlflow_nemo_judge.helper_process import Helper

    helper = Helper("mlflow_nemo_judge.compare.plot_worker")
    try:
        with pytest.raises(TimeoutError):
            helper.readline(0.001)
        assert helper.readline(60) == "ready"
    finally:
        helper.stop()
    with pytest.raises(RuntimeError, match="exited"):
        helper.readline(10)


@pytest.mark.timeout(120)
def test_a_ready_worker_draws_every_chart_of_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once it is ready, no chart is drawn in this process (whose GIL the run's finish needs)."""

    worker = PlotWorker()
    worker.start()
    try:
        assert worker._helper is not None and worker._helper.readline(60) == "ready"
        worker._ready = True

        def not_here(*a: Any, **kw: Any) -> Any:
            raise AssertionError("drawn in this process")

        monkeypatch.setattr("mlflow_nemo_judge.compare.plots.score_distribution", not_here)
        charts = _charts(tmp_path, 3)
        worker.render(charts)
        assert all(c.path.read_bytes().startswith(PNG) for c in charts)
    finally:
        worker.close()


# ------------------------------------------------------------------------------- a failing setup


@pytest.mark.timeout(120)
def test_a_setup_write_that_fails_fails_the_run_and_stops_the_calls(
    seed_eval: dict[str, Any], mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The setup is written beside the model calls; when it fails, the evaluation stops at the next
    record (not after every sample), the run ends FAILED with the reason, and the error is raised."""
    from mlflow.tracking import MlflowClient

    from mlflow_nemo_judge.tracking import prompts

    server = seed_eval["server"]
    server.set_latency(0.05)

    def broken(*a: Any, **kw: Any) -> Any:
        deadline = time.monotonic() + 20
        while server.request_count < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        raise RuntimeError("prompt registry refused the write")

    monkeypatch.setattr(prompts, "register_and_link", broken)
    with pytest.raises(Exception, match="prompt registry refused the write"):
        evaluate(
            seed_eval["config"],
            seed_eval["faithful"],
            experiment="setup-fails",
            tracking_uri=mlflow_uri,
            limit=40,
            cache=False,
            progress_bar=False,
        )
    assert 3 <= server.request_count < 40 * 3  # stopped early: not every sample was called
    cl = MlflowClient(tracking_uri=mlflow_uri)
    (run,) = cl.search_runs([cl.get_experiment_by_name("setup-fails").experiment_id])
    assert run.info.status == "FAILED"
    assert "prompt registry refused the write" in run.data.tags["nemo_judge.error"]


@pytest.mark.timeout(120)
def test_the_config_is_on_the_run_before_anything_else_of_its_setup(
    seed_eval: dict[str, Any], mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The setup's first write is its files: when the next step (the LoggedModel) fails, as when the
    process is killed there, the run already holds the ``config.json`` that ``resume`` rebuilds from."""
    from mlflow.tracking import MlflowClient

    from mlflow_nemo_judge.tracking import mlflow_sink

    def broken(*a: Any, **kw: Any) -> Any:
        raise RuntimeError("LoggedModel refused")

    monkeypatch.setattr(mlflow_sink, "logged_model", broken)
    with pytest.raises(Exception, match="LoggedModel refused"):
        evaluate(
            seed_eval["config"],
            seed_eval["faithful"],
            experiment="config-first",
            tracking_uri=mlflow_uri,
            limit=5,
            cache=False,
            progress_bar=False,
        )
    cl = MlflowClient(tracking_uri=mlflow_uri)
    (run,) = cl.search_runs([cl.get_experiment_by_name("config-first").experiment_id])
    assert run.info.status == "FAILED"
    files = {f.path for f in cl.list_artifacts(run.info.run_id, "nemo_judge")}
    assert {"nemo_judge/config.json", "nemo_judge/target.json"} <= files
    local = cl.download_artifacts(run.info.run_id, "nemo_judge/config.json")
    assert json.loads(Path(local).read_text(encoding="utf-8"))["tasks"]


# ------------------------------------------------------------------------------------ early start


def _runs(uri: str, experiment: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    cl = MlflowClient(tracking_uri=uri)
    exp = cl.get_experiment_by_name(experiment)
    return [] if exp is None else cl.search_runs([exp.experiment_id])


@pytest.mark.timeout(120)
def test_early_start_calls_before_the_run_exists_and_loses_nothing(
    seed_eval: dict[str, Any], mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store opens slowly (here: until every sample was already evaluated): the model calls do not
    wait for it, and the run it then gets holds every sample (table, traces, metrics) all the same."""
    from mlflow.tracking import MlflowClient

    from mlflow_nemo_judge.tracking import early

    server = seed_eval["server"]
    real_open = early.open_session
    at_open: list[int] = []

    def slow_open(*a: Any, **kw: Any) -> Any:
        deadline = time.monotonic() + 30
        while server.request_count < 6 * 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        at_open.append(server.request_count)
        return real_open(*a, **kw)

    monkeypatch.setattr(early, "open_session", slow_open)
    ev = evaluate(
        seed_eval["config"],
        seed_eval["faithful"],
        experiment="early",
        tracking_uri=mlflow_uri,
        limit=6,
        cache=False,
        progress_bar=False,
        trace_samples=6,
    )
    assert at_open == [18]  # every call was made before the store was even open
    cl = MlflowClient(tracking_uri=mlflow_uri)
    run = cl.get_run(ev.run_ids[0])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["progress"] == 100.0
    assert run.data.tags["nemo_judge.samples"] == "table"
    table = cl.load_table(run.info.experiment_id, "nemo_judge/samples.json", run_ids=[run.info.run_id])
    assert len(table) == 6
    traces = cl.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id)
    assert len(traces) == 6
    model_id = run.data.tags["nemo_judge.logged_model_id"]  # traces link the LoggedModel made meanwhile
    assert all(t.info.trace_metadata.get("mlflow.modelId") == model_id for t in traces)


@pytest.mark.timeout(120)
def test_early_start_reuses_a_finished_identical_run_without_endpoint_calls(
    seed_eval: dict[str, Any], mlflow_uri: str
) -> None:
    """A rerun starts its calls before it knows the run exists; with the response cache on (the
    default) they are cache hits, so the endpoints see none, and the finished run is reused."""
    server = seed_eval["server"]
    kw: dict[str, Any] = {
        "experiment": "rerun",
        "tracking_uri": mlflow_uri,
        "limit": 4,
        "progress_bar": False,
    }
    first = evaluate(seed_eval["config"], seed_eval["faithful"], **kw)
    calls = server.request_count
    second = evaluate(seed_eval["config"], seed_eval["faithful"], **kw)
    assert second.reused == [True] and second.run_ids == first.run_ids
    assert server.request_count == calls
    assert len(_runs(mlflow_uri, "rerun")) == 1


@pytest.mark.timeout(120)
def test_a_dead_tracking_server_fails_before_any_model_call(seed_eval: dict[str, Any]) -> None:
    """Early start needs the server's ``/health`` first: a server that does not answer takes the
    sequential path, which refuses the run before any call."""
    import socket

    from mlflow_nemo_judge.errors import TrackingError

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    server = seed_eval["server"]
    with pytest.raises(TrackingError):
        evaluate(
            seed_eval["config"],
            seed_eval["faithful"],
            experiment="dead",
            tracking_uri=f"http://127.0.0.1:{port}",
            limit=2,
            progress_bar=False,
        )
    assert server.request_count == 0


@pytest.mark.timeout(120)
def test_ctrl_c_after_an_early_started_run_exists_marks_it_killed(
    seed_eval: dict[str, Any], mlflow_uri: str
) -> None:
    """A real SIGINT while the evaluation runs (its run already made): the run ends KILLED."""
    import os
    import signal
    import threading

    server = seed_eval["server"]
    server.set_latency(0.5)

    def interrupt_once_the_run_exists() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _runs(mlflow_uri, "interrupted"):
                time.sleep(0.3)
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    t = threading.Thread(target=interrupt_once_the_run_exists, daemon=True)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        evaluate(
            seed_eval["config"],
            seed_eval["faithful"],
            experiment="interrupted",
            tracking_uri=mlflow_uri,
            limit=40,
            cache=False,
            progress_bar=False,
        )
    t.join(5)
    (run,) = _runs(mlflow_uri, "interrupted")
    assert run.info.status == "KILLED" and run.data.tags["nemo_judge.state"] == "killed"
    assert server.request_count < 40 * 3
