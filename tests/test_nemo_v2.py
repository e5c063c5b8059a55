"""The v2 job API (``--nemo-api v2``): the backend against the FAKE service's ``/v2/evaluation/jobs``,
every response parsed strictly with the official SDK's v2 types, the status mapping, the bounded wait
on an unknown status, paged logs and the artifacts tarball."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterator
from typing import Any, get_args

import httpx
import pytest
from nemo_microservices.types.jobs.platform_job_list_result_response import PlatformJobListResultResponse
from nemo_microservices.types.jobs.platform_job_log import PlatformJobLog
from nemo_microservices.types.jobs.platform_job_status import PlatformJobStatus
from nemo_microservices.types.jobs.platform_job_status_response import PlatformJobStatusResponse
from nemo_microservices.types.v2.evaluation.evaluator_v2_job import EvaluatorV2Job
from nemo_microservices.types.v2.evaluation.jobs.results.evaluation_result_v2 import EvaluationResultV2

from mlflow_nemo_judge.backends.nemo import NemoBackend, NemoJobError
from mlflow_nemo_judge.backends.nemo import v2 as client_v2
from mlflow_nemo_judge.backends.nemo.v2 import V2_STATUS, artifacts_as_zip, normalise_job
from mlflow_nemo_judge.cli import _nemo_options
from mlflow_nemo_judge.cli_args import build_parser
from mlflow_nemo_judge.config import load_config, load_target
from mlflow_nemo_judge.errors import ConfigError
from mlflow_nemo_judge.testing.fake_nemo import FakeNemoService

CONFIG = {
    "type": "custom",
    "tasks": {
        "qa": {
            "type": "data",
            "metrics": {
                "accuracy": {
                    "type": "string-check",
                    "params": {"check": ["{{some_output}}", "contains", "{{expected}}"]},
                }
            },
        }
    },
}
# 3 of 4 answers contain the expected text: the mean is 0.75 on either API.
ROWS = [{"some_output": out, "expected": "yes"} for out in ("yes", "yes, surely", "no", "oh yes")]
TARGET = {"type": "rows", "rows": ROWS}


@pytest.fixture()
def fake() -> Iterator[FakeNemoService]:
    with FakeNemoService(queue_delay=0.0) as svc:
        yield svc


def _backend(fake: FakeNemoService, **kw: Any) -> NemoBackend:
    return NemoBackend(fake.base_url, poll_interval=0.02, max_poll_interval=0.05, **kw)


def _score(result: Any) -> float:
    return float(
        result.to_nemo_dict()["tasks"]["qa"]["metrics"]["accuracy"]["scores"]["string-check"]["value"]
    )


def test_v2_job_runs_with_the_spec_envelope_and_matches_v1(fake: FakeNemoService) -> None:
    v2 = _backend(fake, api="v2").run_blocking(load_config(CONFIG), load_target(TARGET))
    v1 = _backend(fake).run_blocking(load_config(CONFIG), load_target(TARGET))
    assert _score(v2) == _score(v1) == 0.75
    body = fake.v2.requests[0]
    assert set(body) >= {"spec"} and "config" not in body
    assert body["spec"]["config"]["tasks"]["qa"]["type"] == "data"
    assert body["spec"]["target"]["rows"] == ROWS
    # The per-sample rows came through the artifacts tarball.
    assert len(list(v2.iter_samples())) == len(ROWS)
    assert len(fake.job_requests) == 1  # the v1 run, and only it, used /v1/evaluation/jobs


def test_every_v2_response_parses_strictly_with_the_sdk_types(fake: FakeNemoService) -> None:
    with httpx.Client(base_url=f"{fake.base_url}/v2/evaluation/jobs") as http:
        created = http.post("", json={"spec": {"config": CONFIG, "target": TARGET}, "name": "my-eval"})
        assert created.status_code == 200
        job = EvaluatorV2Job.model_validate_json(created.text, strict=True)
        assert job.name == "my-eval" and job.id is not None
        fake.wait_for_job(job.id)
        got = EvaluatorV2Job.model_validate_json(http.get(f"/{job.id}").text, strict=True)
        assert got.status == "completed"
        status = PlatformJobStatusResponse.model_validate_json(
            http.get(f"/{job.id}/status").text, strict=True
        )
        assert status.job_id == job.id and status.status == "completed" and status.steps
        logs = http.get(f"/{job.id}/logs", params={"limit": 2}).json()
        assert logs["next_page"] is not None and len(logs["data"]) == 2
        for entry in logs["data"]:
            PlatformJobLog.model_validate(entry, strict=False)  # timestamps arrive as ISO strings
        listing = PlatformJobListResultResponse.model_validate_json(
            http.get(f"/{job.id}/results").text, strict=True
        )
        assert {r.result_name for r in listing.data} == {"evaluation-results", "artifacts"}
        res = http.get(f"/{job.id}/results/evaluation-results/download")
        agg = EvaluationResultV2.model_validate_json(res.text, strict=True)
        assert (
            agg.tasks is not None and agg.tasks["qa"].metrics["accuracy"].scores["string-check"].value == 0.75
        )
        art = http.get(f"/{job.id}/results/artifacts/download")
        assert art.headers["content-type"] == "application/octet-stream"
        with tarfile.open(fileobj=io.BytesIO(art.content), mode="r:gz") as tar:
            assert any(n.endswith("results/results.json") for n in tar.getnames())
        missing = http.get("/eval-nope")
        assert missing.status_code == 404 and "detail" in missing.json()


def test_every_platform_status_has_a_mapping_and_unknown_ones_pass_through() -> None:
    assert set(V2_STATUS) == set(get_args(PlatformJobStatus))
    assert normalise_job({"status": "active", "spec": {"config": {"type": "custom"}}})["status"] == "running"
    assert normalise_job({"status": "error"})["status"] == "failed"
    assert normalise_job({"status": "paused"})["status"] == "pending"
    job = normalise_job({"status": "hibernating", "spec": {"config": {"tasks": {}}, "target": {}}})
    assert job["status"] == "hibernating" and job["api_status"] == "hibernating"
    assert job["config"] == {"tasks": {}}


def test_an_unknown_status_is_an_error_after_a_bounded_wait(fake: FakeNemoService) -> None:
    fake.hold_jobs.set()
    fake.v2.force_status = "hibernating"
    backend = _backend(fake, api="v2", unknown_status_timeout=0.3)
    with pytest.raises(NemoJobError, match="unknown status 'hibernating'") as info:
        backend.run_blocking(load_config(CONFIG), load_target(TARGET))
    assert info.value.job_id in fake.jobs  # left on the service, not cancelled behind the user's back
    fake.v2.force_status = None
    fake.hold_jobs.clear()


def test_a_failed_v2_job_reports_the_services_error(fake: FakeNemoService) -> None:
    fake.fail_next_job = True
    with pytest.raises(NemoJobError, match="simulated failure") as info:
        _backend(fake, api="v2").run_blocking(load_config(CONFIG), load_target(TARGET))
    assert info.value.logs and "failed" in info.value.logs


def test_logs_are_walked_page_by_page(fake: FakeNemoService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_v2, "_LOG_PAGE", 2)
    backend = _backend(fake, api="v2")
    backend.run_blocking(load_config(CONFIG), load_target(TARGET))
    job = next(iter(fake.jobs.values()))
    text = backend.logs(job.id)
    assert len(text.splitlines()) == len(job.logs) > 4
    assert "Job completed successfully." in text


def test_artifacts_zip_or_tarball_or_error() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        blob = b'{"qa": []}'
        info = tarfile.TarInfo("./job/results/results.json")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    repacked = artifacts_as_zip(buf.getvalue())
    with zipfile.ZipFile(io.BytesIO(repacked)) as zf:
        assert zf.namelist() == ["job/results/results.json"]
    assert artifacts_as_zip(repacked) == repacked
    with pytest.raises(ValueError, match="neither a ZIP nor a tarball"):
        artifacts_as_zip(b"not an archive")


def test_cli_and_python_select_the_api() -> None:
    args = build_parser().parse_args(
        ["run", "c.yaml", "--target", "t.yaml", "--backend", "nemo", "--nemo-api", "v2"]
    )
    assert (_nemo_options(args) or {})["api"] == "v2"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "c.yaml", "--target", "t.yaml", "--nemo-api", "v3"])
    with pytest.raises(ConfigError, match="unknown NeMo job API 'v3'"):
        NemoBackend("http://127.0.0.1:9", api="v3")
