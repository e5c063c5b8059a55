"""``resume RUN_ID --retry-errors``: only the samples that errored are evaluated again, into the same run,
whose metrics, table, samples and results are replaced."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

from mlflow_nemo_judge.cli import main
from mlflow_nemo_judge.engine import RunOptions
from mlflow_nemo_judge.pipeline import evaluate, resume
from mlflow_nemo_judge.tracking import load_samples_frame
from tests.fixtures.paths import SEED_DATA

pytestmark = pytest.mark.usefixtures("judge_cache")

KEY = "consult_summary_eval/completeness/completeness"
BROKEN_ROWS = (5, 8)  # late rows: the endpoint-health check must not see a dead endpoint


class _BrokenJudgeForSomeRows(httpx.AsyncBaseTransport):
    """The real loopback transport, except that the judge answers 400 for the consults of BROKEN_ROWS
    while ``broken`` (a persistent, non-retryable failure of those samples only)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        rows = [
            json.loads(line) for line in SEED_DATA.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
        self.markers = [rows[i]["content"][:60] for i in BROKEN_ROWS]
        self.broken = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        text = " ".join(str(m.get("content")) for m in body.get("messages") or [])
        if self.broken and body.get("model") == "mock/judge" and any(m in text for m in self.markers):
            return httpx.Response(400, json={"error": {"message": "judge refused this sample"}})
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _client(transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, timeout=30)


def _errored(frame: Any) -> int:
    cols = [c for c in frame.columns if c.endswith("error")]
    return int(frame[cols].notna().any(axis=1).sum())


@pytest.mark.timeout(60)
def test_retry_errors_reruns_only_the_errored_samples_into_the_same_run(seed_eval, mlflow_uri, capsys):
    server = seed_eval["server"]
    transport = _BrokenJudgeForSomeRows()
    ev = evaluate(
        seed_eval["config"],
        seed_eval["faithful"],
        experiment="retry",
        limit=10,
        progress_bar=False,
        http_client=_client(transport),
    )
    (run_id,) = ev.run_ids
    cl = MlflowClient(mlflow_uri)
    first = cl.get_run(run_id)
    assert first.info.status == "FINISHED"
    assert first.data.metrics[f"{KEY}/nan_count"] == len(BROKEN_ROWS)
    assert _errored(load_samples_frame(run_id)) == len(BROKEN_ROWS)

    transport = _BrokenJudgeForSomeRows()  # a fresh connection pool for the new event loop
    transport.broken = False  # the judge is fixed
    server.clear_log()
    again = resume(
        run_id,
        config=seed_eval["config"],  # it holds a literal (fake) key, redacted in the run's config.json
        options=RunOptions(http_client=_client(transport), progress_bar=False),
        retry_errors=True,
    )
    assert again.run_ids == [run_id] and again.reused == [False]
    # only the broken rows' judge calls were made again (their target outputs come from the cache)
    judged = [r for r in server.requests if r.model == "mock/judge"]
    assert len(judged) == 2 * len(BROKEN_ROWS)
    assert server.request_count == len(judged)

    done = cl.get_run(run_id)
    assert done.info.status == "FINISHED"
    assert done.data.metrics[f"{KEY}/nan_count"] == 0 and done.data.metrics[f"{KEY}/count"] == 10
    assert done.data.metrics[KEY] == pytest.approx(
        again.result.tasks["consult_summary_eval"]["completeness"]["completeness"].value
    )
    frame = load_samples_frame(run_id)
    assert len(frame) == 10 and _errored(frame) == 0  # the table was replaced, not appended to
    exp = cl.get_experiment_by_name("retry")
    assert len(cl.search_runs([exp.experiment_id])) == 1

    # nothing errored any more: a second --retry-errors is a no-op that reuses the run (CLI path)
    server.clear_log()
    capsys.readouterr()
    assert main(["resume", run_id, "--retry-errors", "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["reused"] is True
    assert server.request_count == 0
