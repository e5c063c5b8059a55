"""Contract fixtures: responses in the shapes NVIDIA's public notebooks printed (``tests/fixtures/nemo_contract``,
our own values), replayed three ways:

* parsed by the official SDK's pydantic types (as its ``_strict_response_validation`` does),
* read by our REST client over a mock transport and mapped by ``backends.nemo.results``,
* compared with what the FAKE service answers, so the fake keeps the shapes the real service showed.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlflow_nemo_judge.backends.nemo.client import NemoClient
from mlflow_nemo_judge.backends.nemo.results import build_result, read_results_zip, sample_record

sdk = pytest.importorskip("nemo_microservices", reason="the nemo-microservices SDK is a test-only dependency")
from nemo_microservices._models import validate_type  # noqa: E402
from nemo_microservices.pagination import DefaultPaginationPagination  # noqa: E402
from nemo_microservices.types import (  # noqa: E402
    EvaluationResult,
    EvaluationStatusDetails,
    LiveEvaluation,
)
from nemo_microservices.types.evaluation import EvaluationJob  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "nemo_contract"
BASE = "http://nemo.contract.test"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------------------- SDK types


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("job_created.json", EvaluationJob),
        ("job_completed.json", EvaluationJob),
        ("status_running.json", EvaluationStatusDetails),
        ("result_llm_judge.json", EvaluationResult),
        ("result_mixed.json", EvaluationResult),
        ("result_tool_calling.json", EvaluationResult),
        ("live_completed.json", LiveEvaluation),
    ],
)
def test_fixtures_parse_in_the_sdk_types(name: str, model: Any) -> None:
    parsed = validate_type(type_=model, value=load(name))
    assert isinstance(parsed, model)


def test_the_sdk_types_are_strict_enough_to_fail() -> None:
    """The checks above can fail: a null score value (what the fake once sent for all-NaN) is refused."""
    doc = load("result_llm_judge.json")
    doc["tasks"]["visit_summary"]["metrics"]["coverage"]["scores"]["coverage"]["value"] = None
    with pytest.raises(Exception, match="value"):
        validate_type(type_=EvaluationResult, value=doc)
    doc["tasks"]["visit_summary"]["metrics"]["coverage"]["scores"]["coverage"]["value"] = float("nan")
    assert validate_type(type_=EvaluationResult, value=doc) is not None  # NaN is a float: accepted


def test_page_envelope_parses() -> None:
    page = load("jobs_page.json")
    assert validate_type(type_=DefaultPaginationPagination, value=page["pagination"]).total_results == 1
    assert all(isinstance(validate_type(type_=EvaluationJob, value=j), EvaluationJob) for j in page["data"])


def test_per_sample_records_parse_in_the_sdk_score_types() -> None:
    from nemo_microservices.types import MetricResult

    for records in load("per_sample_results.json").values():
        for rec in records:
            for metric in rec["metrics"].values():
                assert validate_type(type_=MetricResult, value=metric).scores


# ------------------------------------------------------------------------- our client and mapping


def _zip(aggregate: dict[str, Any], samples: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("eval-Gm6Rz3WqTp8YkN2VcXb7Ld/evaluation_result.json", json.dumps(aggregate))
        zf.writestr("eval-Gm6Rz3WqTp8YkN2VcXb7Ld/results/results.json", json.dumps(samples))
        zf.writestr("eval-Gm6Rz3WqTp8YkN2VcXb7Ld/logs/job.log", "INFO done\n")
    return buf.getvalue()


@pytest.fixture()
def replay() -> Iterator[tuple[NemoClient, list[httpx.Request]]]:
    seen: list[httpx.Request] = []
    job_id = load("job_completed.json")["id"]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path == "/v1/evaluation/jobs" and request.method == "POST":
            return httpx.Response(200, json=load("job_created.json"))
        if path == "/v1/evaluation/jobs":
            page = load("jobs_page.json") if request.url.params.get("page") == "1" else {"data": []}
            return httpx.Response(200, json=page)
        if path == f"/v1/evaluation/jobs/{job_id}":
            return httpx.Response(200, json=load("job_completed.json"))
        if path == f"/v1/evaluation/jobs/{job_id}/status":
            return httpx.Response(200, json=load("status_running.json"))
        if path == f"/v1/evaluation/jobs/{job_id}/results":
            return httpx.Response(200, json=load("result_llm_judge.json"))
        if path == f"/v1/evaluation/jobs/{job_id}/download-results":
            body = _zip(load("result_tool_calling.json"), load("per_sample_results.json"))
            return httpx.Response(200, content=body, headers={"content-type": "application/zip"})
        return httpx.Response(404, json={"detail": "Not Found"})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with NemoClient(BASE, http=http, max_retries=0) as client:
        yield client, seen


def test_client_reads_the_captured_responses(replay: tuple[NemoClient, list[httpx.Request]]) -> None:
    client, seen = replay
    created = client.create_job({"type": "custom", "tasks": {}}, {"type": "model"})
    assert (
        created["status"] == "created" and created["target"]["model"]["api_endpoint"]["api_key"] == "******"
    )
    job = client.get_job(created["id"])
    assert job["status"] == "completed" and job["result"].startswith("evaluation_result-")
    assert client.job_status(job["id"])["progress"] == 36.0
    listed = list(client.list_jobs(filter={"status": "completed"}))
    assert [j["id"] for j in listed] == ["eval-Lp2Wx9QnRt5VbMz7KcYd4G"]
    sent = [r for r in seen if r.url.path == "/v1/evaluation/jobs" and r.method == "GET"][0]
    assert sent.url.params["filter[status]"] == "completed"
    samples, aggregate = read_results_zip(client.download_results(job["id"]))
    assert aggregate is not None and aggregate["id"] == load("result_tool_calling.json")["id"]
    assert samples is not None and len(samples["booking-tools"]) == 2


def test_results_mapping_keeps_the_captured_numbers(tmp_path: Path) -> None:
    judge = build_result(load("result_llm_judge.json"), None, work_dir=tmp_path / "a")
    score = judge.tasks["visit_summary"]["faithfulness"]["faithfulness"]
    assert score.value == 4.36 and score.stats is not None and score.stats.count == 25
    assert score.stats.stddev is None  # a count/sum/mean-only server: nothing is invented
    mixed = build_result(load("result_mixed.json"), None, work_dir=tmp_path / "b")
    bleu = mixed.tasks["triage_answers"]["bleu"]
    assert bleu["corpus"].value == 10.0397 and bleu["corpus"].stats is None
    assert (
        bleu["sentence"].value == 12.4821
        and mixed.tasks["triage_answers"]["accuracy"]["string-check"].value == 0.7
    )
    tools = build_result(load("result_tool_calling.json"), None, work_dir=tmp_path / "c")
    names = tools.tasks["booking-tools"]["tool-calling-accuracy"]
    assert (names["function_name_accuracy"].value, names["function_name_and_args_accuracy"].value) == (
        0.9,
        0.7,
    )
    assert tools.usage.samples == 50


def test_per_sample_records_map_to_sample_records() -> None:
    recs = load("per_sample_results.json")["booking-tools"]
    first, second = (sample_record("booking-tools", i, r) for i, r in enumerate(recs))
    assert first.output_text is None and first.finish_reason == "tool_calls"
    assert first.metrics["tool-calling-accuracy"].scores == {
        "function_name_accuracy": 1.0,
        "function_name_and_args_accuracy": 1.0,
    }
    assert (
        first.request is not None and "model" not in first.request and first.request["tool_choice"] == "auto"
    )
    assert second.output_text == "I can't cancel bookings." and second.finish_reason == "stop"
    assert second.metrics["tool-calling-accuracy"].scores["function_name_accuracy"] == 0.0


def test_live_answer_maps() -> None:
    from mlflow_nemo_judge.backends.nemo.live import live_result

    res = live_result(load("live_completed.json"), {}, wall_seconds=0.2)
    score = res.tasks["agree-check"]["agrees"]["string-check"]
    assert score.value == 0.5 and score.stats is not None and score.stats.count == 2
    assert score.stats.min is None and res.usage.samples == 2


# --------------------------------------------------------------------- the fake keeps these shapes


def test_the_fake_answers_in_the_captured_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow_nemo_judge.testing.fake_nemo import FakeNemoService
    from mlflow_nemo_judge.testing.mock_llm import MockLLMServer

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    rows = tmp_path / "notes.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"note": f"Visit {i}: cough for {i + 1} days, rest advised."}) + "\n" for i in range(3)
        ),
        encoding="utf-8",
    )
    with MockLLMServer() as llm, FakeNemoService(queue_delay=0.0) as fake:
        cfg = load("job_created.json")["config"]
        cfg = {"type": "custom", "tasks": json.loads(json.dumps(cfg["tasks"]))}
        task = cfg["tasks"]["visit_summary"]
        task["dataset"] = {"files_url": str(rows)}
        judge = task["metrics"]["faithfulness"]["params"]["model"]["api_endpoint"]
        judge.update(url=f"{llm.base_url}/chat/completions", model_id="mock/judge", api_key="k")
        # the mock judge answers "RATING: n"; the captured config's own regex is kept elsewhere
        task["metrics"]["faithfulness"]["params"]["scores"]["faithfulness"]["parser"]["pattern"] = r"(\d+)"
        target = {
            "type": "model",
            "model": {
                "api_endpoint": {
                    "url": f"{llm.base_url}/chat/completions",
                    "model_id": "mock/poor-summarizer",
                }
            },
        }
        client = sdk.NeMoMicroservices(
            base_url=fake.base_url, _strict_response_validation=True, max_retries=0
        )
        created = client.evaluation.jobs.with_raw_response.create(
            config=cfg, target=target
        ).http_response.json()
        fake.wait_for_job(created["id"])
        done = httpx.get(f"{fake.base_url}/v1/evaluation/jobs/{created['id']}").json()
        result = httpx.get(f"{fake.base_url}/v1/evaluation/jobs/{created['id']}/results").json()
        page = httpx.get(f"{fake.base_url}/v1/evaluation/jobs").json()
        archive = httpx.get(f"{fake.base_url}/v1/evaluation/jobs/{created['id']}/download-results").content

    captured = load("job_created.json")
    assert set(created) == set(captured)
    assert set(created["status_details"]) == set(captured["status_details"])
    assert set(done["status_details"]) == set(load("job_completed.json")["status_details"])
    assert set(captured["config"]) <= set(created["config"]) and set(captured["target"]) <= set(
        created["target"]
    )
    assert set(load("result_mixed.json")) <= set(result)
    assert set(page) == set(load("jobs_page.json")) and set(page["pagination"]) == set(
        load("jobs_page.json")["pagination"]
    )
    stats = result["tasks"]["visit_summary"]["metrics"]["faithfulness"]["scores"]["faithfulness"]["stats"]
    assert {"count", "sum", "mean"} <= set(stats) and stats["count"] == 3 and not math.isnan(stats["mean"])
    samples, _ = read_results_zip(archive)
    captured_rec = load("per_sample_results.json")["booking-tools"][0]
    assert samples is not None
    for rec in samples["visit_summary"]:
        assert set(rec) == set(captured_rec) and set(rec["sample"]) == set(captured_rec["sample"])
        assert set(rec["requests"][0]) == set(captured_rec["requests"][0])
