"""Endpoint health: a dead, wrong or rejecting endpoint stops the run with one line, in bounded time;
a healthy endpoint with transient faults does not; no endpoint secret reaches an error, a record or the
spill file."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx
import pytest

from mlflow_nemo_judge.config import load_config, load_target
from mlflow_nemo_judge.engine import RunOptions, run_local, run_plan_async
from mlflow_nemo_judge.errors import EvaluationError
from mlflow_nemo_judge.http.health import EndpointHealth, EndpointUnhealthy, HealthPolicy
from mlflow_nemo_judge.plan import build_plan
from mlflow_nemo_judge.testing.mock_llm import FaultConfig, MockLLMServer
from tests.fixtures.paths import shared_data
from tests.fixtures.seed_config import seed_config

FAITHFUL = "mock/faithful-summarizer"
HEADER_SECRET = "hdr-secret-value-7781"
QUERY_SECRET = "query-secret-value-5512"


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/chat/completions"  # nothing listens there any more


def _config(judge_url: str, limit: int = 30, judge_model: str = "mock/judge") -> dict[str, Any]:
    cfg = seed_config(files_url=str(shared_data()), judge_url=judge_url, judge_model=judge_model)
    cfg["tasks"]["consult_summary_eval"]["dataset"]["limit"] = limit
    return cfg


def _target(url: str, model: str = FAITHFUL, **endpoint: Any) -> dict[str, Any]:
    return {"type": "model", "model": {"api_endpoint": {"url": url, "model_id": model, **endpoint}}}


def _stopped(cfg: dict[str, Any], target: dict[str, Any]) -> str:
    with pytest.raises(EvaluationError) as info:
        run_local(cfg, target, cache=False, progress_bar=False)
    line = str(info.value)
    assert "\n" not in line and line.startswith("evaluation stopped: ")
    return line


@pytest.mark.timeout(15)
def test_connection_refused_target_stops_the_run_naming_it() -> None:
    with MockLLMServer() as srv:
        dead = _closed_port_url()
        line = _stopped(_config(f"{srv.base_url}/chat/completions"), _target(dead))
        assert srv.request_count == 0  # the judge was never asked about a missing output
    assert dead in line and repr(FAITHFUL) in line
    assert "none has succeeded" in line and "(100%)" in line and "Connect" in line


@pytest.mark.timeout(15)
@pytest.mark.parametrize("status", [400, 500])
def test_persistent_error_status_stops_the_run(status: int) -> None:
    with MockLLMServer(faults=FaultConfig(status=status)) as srv:
        url = f"{srv.base_url}/chat/completions"
        line = _stopped(_config(url), _target(url))
        calls = srv.request_count
    assert f"HTTP {status}" in line and url in line and "attempts failed (100%)" in line
    assert calls <= 8 + 8  # stopped after about one round of failed attempts, not 30 rows x 6 attempts


@pytest.mark.timeout(15)
def test_a_model_id_the_server_rejects_stops_the_run() -> None:
    with MockLLMServer() as srv:
        url = f"{srv.base_url}/chat/completions"
        line = _stopped(_config(url), _target(url, model="no-such-model"))
    assert "'no-such-model'" in line and "HTTP 404" in line and "refuses" in line


@pytest.mark.timeout(15)
def test_a_dead_judge_stops_the_run_while_the_target_is_fine() -> None:
    with MockLLMServer() as srv:
        dead = _closed_port_url()
        line = _stopped(_config(dead), _target(f"{srv.base_url}/chat/completions"))
    assert dead in line and "'mock/judge'" in line and "none has succeeded" in line


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("rate", "seed"), [(0.1, 1), (0.2, 2)])
def test_a_healthy_endpoint_with_transient_faults_is_not_stopped(rate: float, seed: int) -> None:
    with MockLLMServer(faults=FaultConfig.transient(rate), seed=seed) as srv:
        url = f"{srv.base_url}/chat/completions"
        plan = build_plan(load_config(_config(url)), load_target(_target(url)))
        res = asyncio.run(
            run_plan_async(
                plan, RunOptions(cache=False, progress_bar=False, backoff_base=0.01, backoff_max=0.05)
            )
        )
        faults = [r for r in srv.requests if r.fault]
    assert faults and res.usage.samples == 30
    score = res.tasks["consult_summary_eval"]["completeness"]["completeness"]
    assert score.stats is not None and score.stats.nan_count == 0


def test_failure_share_over_the_last_calls_condemns_an_endpoint_that_stopped_working() -> None:
    health = EndpointHealth("http://x/v1", "m", HealthPolicy(fail_first=8, min_calls=20, fail_share=0.5))
    for _ in range(100):
        health.call_done(failed=False)
    for _ in range(10):  # 10 of the last 20 failed: not more than half
        health.call_done(failed=True, failure="HTTP 400: too long", status=400)
    assert health.condemned is None
    with pytest.raises(EndpointUnhealthy) as info:
        health.call_done(failed=True, failure="HTTP 400: too long", status=400)
    assert "11 of the last 20 calls failed (55%; 11 of 111 in this run)" in str(info.value)
    with pytest.raises(EndpointUnhealthy):
        health.check()  # every later call stops too
    # Retryable attempts that later succeed, and 429s, never condemn a working endpoint.
    fresh = EndpointHealth("http://x/v1", "m", HealthPolicy())
    for _ in range(50):
        fresh.attempt_failed("HTTP 429", 429, hard=False)
    fresh.call_done(failed=False)
    for _ in range(50):
        fresh.attempt_failed("HTTP 500", 500, hard=True)
    assert fresh.condemned is None


def test_rows_that_fail_on_their_own_stay_per_row_errors(tmp_path: Any) -> None:
    """A 400 on a few rows (say, prompts too long for the context) is those rows' NaN, not a stop."""
    judge_url = "http://judge.test/v1/chat/completions"

    def handler(req: httpx.Request) -> httpx.Response:
        body = json.loads(req.content)
        text = json.dumps(body)
        if "judge.test" not in str(req.url) and ("D005" in text or "Consult 5" in text):
            return httpx.Response(400, json={"error": {"message": "context length exceeded"}})
        content = "RATING: 4" if "judge.test" in str(req.url) else "a summary"
        return httpx.Response(200, json={"choices": [{"message": {"content": content}}]})

    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"ID": f"D{i:03d}", "content": f"Consult {i}"}) for i in range(30)))
    cfg = seed_config(files_url=str(rows), judge_url=judge_url)
    res = _mock_run(cfg, _target("http://target.test/v1/chat/completions"), handler)
    samples = list(res.iter_samples())
    bad = [s for s in samples if s.target_error]
    assert len(samples) == 25 and len(bad) == 1 and "context length exceeded" in (bad[0].target_error or "")


def _mock_run(cfg: dict[str, Any], target: dict[str, Any], handler: Any, **kw: Any) -> Any:
    plan = build_plan(load_config(cfg), load_target(target))

    async def go() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            return await run_plan_async(
                plan, RunOptions(cache=False, http_client=http, progress_bar=False, **kw)
            )

    return asyncio.run(go())


@pytest.mark.timeout(15)
def test_no_endpoint_secret_reaches_the_fatal_line() -> None:
    """A provider that echoes the request's headers and URL in its 500s: the stop line is clean."""
    with MockLLMServer(faults=FaultConfig(status=500, echo_request=True)) as srv:
        url = f"{srv.base_url}/chat/completions?subscription-key={QUERY_SECRET}"
        target = _target(url, api_key="sk-target-secret-0001", headers={"X-Tenant-Token": HEADER_SECRET})
        line = _stopped(_config(f"{srv.base_url}/chat/completions"), target)
    assert "request: POST" in line  # the echo did reach the client…
    for secret in (QUERY_SECRET, HEADER_SECRET, "sk-target-secret-0001"):
        assert secret not in line  # …but none of the endpoint's secrets went further


def test_no_endpoint_secret_reaches_a_record_or_the_spill_file(tmp_path: Any) -> None:
    judge_url = f"http://judge.test/v1/chat/completions?subscription-key={QUERY_SECRET}"

    def handler(req: httpx.Request) -> httpx.Response:
        if "judge.test" in str(req.url):
            # An error that quotes everything it was sent, for one row's judge call.
            if "Consult 3" in req.content.decode():
                echo = f"bad request to {req.url} with headers {dict(req.headers)}"
                return httpx.Response(400, json={"error": {"message": echo}})
            return httpx.Response(200, json={"choices": [{"message": {"content": "RATING: 3"}}]})
        return httpx.Response(200, json={"choices": [{"message": {"content": "a summary"}}]})

    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"ID": f"r{i}", "content": f"Consult {i}"}) for i in range(6)))
    cfg = seed_config(files_url=str(rows), judge_url=judge_url, openai_api_key="sk-judge-secret-0002")
    for m in cfg["tasks"]["consult_summary_eval"]["metrics"].values():
        m["params"]["model"]["api_endpoint"]["headers"] = {"X-Route-Secret": HEADER_SECRET}
    work = tmp_path / "work"
    res = _mock_run(cfg, _target("http://target.test/v1/chat/completions"), handler, work_dir=work)
    errors = [o.error or "" for s in res.iter_samples() for o in s.metrics.values() if o.error]
    assert len(errors) == 2 and all("bad request to" in e for e in errors)
    spill = (work / "samples.jsonl").read_text()
    for secret in (QUERY_SECRET, HEADER_SECRET, "sk-judge-secret-0002"):
        assert all(secret not in e for e in errors) and secret not in spill


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["refused", "http-500", "bad-model", "dead-judge"])
def test_a_tracked_cli_run_against_a_dead_endpoint_ends_failed_with_one_line(
    case: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # The whole path a user takes: exit 1, one `error:` line, and an MLflow run that says FAILED (with
    # the reason as a tag), not a FINISHED run of NaNs.
    import yaml
    from mlflow.tracking import MlflowClient

    from mlflow_nemo_judge.cli import main

    faults = FaultConfig(status=500) if case == "http-500" else None
    with MockLLMServer(faults=faults) as srv:
        live, dead = f"{srv.base_url}/chat/completions", _closed_port_url()
        cfg = _config(dead if case == "dead-judge" else live, limit=10)
        target = _target(
            dead if case == "refused" else live, model="no-such-model" if case == "bad-model" else FAITHFUL
        )
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
        (tmp_path / "t.yaml").write_text(yaml.safe_dump(target))
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        args = ["run", str(tmp_path / "c.yaml"), "--target", str(tmp_path / "t.yaml")]
        args += ["--tracking-uri", uri, "--experiment", "dead", "--no-cache", "--no-progress"]
        code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("error: evaluation stopped: ")
    cl = MlflowClient(uri)
    runs = cl.search_runs([cl.get_experiment_by_name("dead").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "evaluation stopped" in runs[0].data.tags.get("nemo_judge.error", "")
