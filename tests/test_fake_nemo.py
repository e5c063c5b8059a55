"""The loopback FAKE NeMo service, driven by independent clients: the official ``nemo-microservices`` SDK
(strict response validation, so every answer must parse into the SDK's own types) and the real
``huggingface_hub`` client against its Data Store.

Tests wait for job states with ``FakeNemoService.wait_for_job`` (woken by each status change) and
check what a poller could have seen in ``FakeJob.history``; nothing sleeps to wait.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlflow_nemo_judge.backends.nemo.client import NemoClient
from mlflow_nemo_judge.errors import NemoServiceError
from mlflow_nemo_judge.testing.fake_nemo import FakeNemoService
from mlflow_nemo_judge.testing.mock_llm import MockLLMServer
from tests.fixtures.seed_config import seed_config

ID_RE = re.compile(r"^eval-[1-9A-HJ-NP-Za-km-z]{20,22}$")
ROWS = [
    {"ID": f"R{i}", "content": f"Patient {i} reports cough and fever for {i + 2} days; prescribed rest."}
    for i in range(4)
]


@pytest.fixture()
def hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ambient HF token/endpoint/offline mode and no NeMo URLs from the developer's shell."""
    for name in (
        "HF_TOKEN",
        "HF_ENDPOINT",
        "HF_HUB_OFFLINE",
        "NEMO_EVALUATOR_URL",
        "NEMO_DATASTORE_URL",
        "NEMO_ENTITY_STORE_URL",
        "NEMO_API_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    from huggingface_hub import constants

    # huggingface_hub reads its env once at import: patch the constants it consults at call time.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    return tmp_path


@pytest.fixture()
def fake(hf_env: Path) -> Iterator[FakeNemoService]:
    with FakeNemoService(queue_delay=0.01) as svc:
        yield svc


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLMServer]:
    with MockLLMServer() as server:
        yield server


def _upload_rows(fake: FakeNemoService, ns: str, repo: str, tmp: Path) -> str:
    from huggingface_hub import HfApi

    path = tmp / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    httpx.post(f"{fake.base_url}/v1/datastore/namespaces", data={"namespace": ns}).raise_for_status()
    api = HfApi(endpoint=fake.hf_url, token=False)
    api.create_repo(f"{ns}/{repo}", repo_type="dataset", exist_ok=True)
    api.upload_file(
        path_or_fileobj=str(path), path_in_repo="rows.jsonl", repo_id=f"{ns}/{repo}", repo_type="dataset"
    )
    return f"hf://datasets/{ns}/{repo}"


def _config(llm: MockLLMServer, files_url: str) -> dict[str, Any]:
    cfg = seed_config(
        openai_api_key="sk-judge-secret",
        judge_url=f"{llm.base_url}/chat/completions",
        judge_model="mock/judge",
        files_url=files_url,
    )
    cfg["namespace"] = "team"
    return cfg


def _target(llm: MockLLMServer) -> dict[str, Any]:
    return {
        "type": "model",
        "model": {
            "api_endpoint": {
                "url": f"{llm.base_url}/chat/completions",
                "model_id": "mock/poor-summarizer",
                "api_key": "nvapi-target-secret",
            }
        },
    }


def _finish(fake: FakeNemoService, get: Any, job_id: str) -> Any:
    """Wait until the job is terminal, then read it back through the client under test."""
    fake.wait_for_job(job_id)
    return get(job_id)


# ----------------------------------------------------------------------------------- it says it is fake


def test_the_fake_says_it_is_a_test_double(fake: FakeNemoService, caplog: pytest.LogCaptureFixture) -> None:
    for path in ("/", "/health", "/v1/health"):
        r = httpx.get(fake.base_url + path)
        assert r.status_code == 200 and r.json()["fake"] is True
        assert "test double" in r.json()["service"] and "test double" in r.headers["server"]
    import logging

    with (
        caplog.at_level(logging.INFO, logger="mlflow_nemo_judge.testing.fake_nemo"),
        FakeNemoService() as other,
    ):
        assert other.base_url.startswith("http://127.0.0.1:")
    assert any(
        "FAKE NeMo service" in r.getMessage() and "test double" in r.getMessage() for r in caplog.records
    )


# ----------------------------------------------------------------------------- huggingface_hub contract


def test_huggingface_hub_uploads_lists_and_downloads(fake: FakeNemoService, hf_env: Path) -> None:
    from huggingface_hub import HfApi, hf_hub_download

    url = _upload_rows(fake, "team", "consults", hf_env)
    assert url == "hf://datasets/team/consults"
    api = HfApi(endpoint=fake.hf_url, token=False)
    # exist_ok makes a second create a no-op (the fake answers 409 like the Hub)
    api.create_repo("team/consults", repo_type="dataset", exist_ok=True)
    commit = api.upload_file(
        path_or_fileobj=b'{"ID": "X"}\n',
        path_in_repo="extra/more.jsonl",
        repo_id="team/consults",
        repo_type="dataset",
    )
    assert sorted(api.list_repo_files("team/consults", repo_type="dataset")) == [
        "extra/more.jsonl",
        "rows.jsonl",
    ]
    assert api.repo_info("team/consults", repo_type="dataset").sha == commit.oid
    local = hf_hub_download(
        "team/consults",
        "rows.jsonl",
        repo_type="dataset",
        endpoint=fake.hf_url,
        token=False,
        cache_dir=str(hf_env / "dl"),
    )
    assert [json.loads(line) for line in Path(local).read_text().splitlines()] == ROWS
    with pytest.raises(Exception, match="404|not found|Not Found"):
        hf_hub_download(
            "team/consults",
            "missing.jsonl",
            repo_type="dataset",
            endpoint=fake.hf_url,
            token=False,
            cache_dir=str(hf_env / "dl"),
        )
    # Repos live in Data Store namespaces, which must exist first.
    with pytest.raises(Exception, match="404|does not exist"):
        api.create_repo("nowhere/x", repo_type="dataset")


# ------------------------------------------------------------------------------------ the official SDK


def test_official_sdk_drives_the_fake_and_parses_every_response(
    fake: FakeNemoService, llm: MockLLMServer, hf_env: Path
) -> None:
    sdk = pytest.importorskip(
        "nemo_microservices", reason="the nemo-microservices SDK is a test-only dependency"
    )
    from nemo_microservices.types import EvaluationResult, EvaluationStatusDetails
    from nemo_microservices.types.evaluation import EvaluationJob

    # Strict validation: a response that does not fit the SDK's pydantic types raises instead of passing.
    client: Any = sdk.NeMoMicroservices(
        base_url=fake.base_url, _strict_response_validation=True, max_retries=0
    )
    ns = client.namespaces.create(id="team")
    assert ns.id == "team" and ns.created_at is not None
    files_url = _upload_rows(fake, "team", "consults", hf_env)
    ds = client.datasets.create(
        name="consults", namespace="team", files_url=files_url, description="contract"
    )
    assert ds.files_url == files_url and ds.id and ds.id.startswith("dataset-")
    assert client.datasets.retrieve("consults", namespace="team").name == "consults"

    created = client.evaluation.jobs.create(config=_config(llm, files_url), target=_target(llm))
    assert isinstance(created, EvaluationJob)
    job: Any = created  # attribute chains below are checked at run time by the asserts themselves
    assert ID_RE.match(job.id or "")
    assert job.status == "created"
    assert job.target.model.api_endpoint.api_key == "******"  # secrets are masked in every read-back
    assert job.target.model.api_endpoint.format == "nim"  # omitted format is stored as "nim"
    assert job.config.tasks["consult_summary_eval"].dataset.files_url == files_url

    final = _finish(fake, client.evaluation.jobs.retrieve, job.id)
    assert final.status == "completed", final.status_details
    status = client.evaluation.jobs.status(job.id)
    assert isinstance(status, EvaluationStatusDetails)
    assert (status.progress, status.samples_processed) == (100.0, len(ROWS))
    assert status.task_status == {"consult_summary_eval": "completed"}

    parsed = client.evaluation.jobs.results(job.id)
    assert isinstance(parsed, EvaluationResult)
    results: Any = parsed
    assert results.job == job.id
    score = results.tasks["consult_summary_eval"].metrics["completeness"].scores["completeness"]
    assert score.stats is not None and score.stats.count == len(ROWS) and score.value == score.stats.mean
    assert final.result == results.id and client.evaluation.results.retrieve(results.id).job == job.id

    archive = client.evaluation.jobs.download_results(job.id).read()
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        per_sample = next(json.loads(zf.read(n)) for n in zf.namelist() if n.endswith("results/results.json"))
    assert [r["item"]["ID"] for r in per_sample["consult_summary_eval"]] == [r["ID"] for r in ROWS]
    logs = client.evaluation.jobs.download_logs(job.id)
    assert "Computed metric 0 completeness" in str(logs)

    # Stored config/target by reference, and the page envelope with SDK auto-pagination.
    cfg_entity = client.evaluation.configs.create(**{**_config(llm, files_url), "name": "seed"})
    assert cfg_entity.namespace == "team" and client.evaluation.configs.retrieve("seed", namespace="team").id
    tgt_entity = client.evaluation.targets.create(**{**_target(llm), "name": "poor", "namespace": "team"})
    assert tgt_entity.model.api_endpoint.api_key == "******"
    job2 = client.evaluation.jobs.create(config="team/seed", target="team/poor")
    assert job2.config.name == "seed" and job2.target.name == "poor"
    assert _finish(fake, client.evaluation.jobs.retrieve, job2.id).status == "completed"
    page = client.evaluation.jobs.list(page_size=1)
    assert page.pagination is not None and page.pagination.total_results == 2 and len(page.data) == 1
    assert {j.id for j in page} == {
        job.id,
        job2.id,
    }  # auto-pagination walks page 2 and stops at the empty 3rd
    assert client.evaluation.jobs.cancel(job2.id) is not None  # cancelling a finished job is a no-op


def test_sdk_sees_documented_error_shapes(fake: FakeNemoService) -> None:
    sdk = pytest.importorskip(
        "nemo_microservices", reason="the nemo-microservices SDK is a test-only dependency"
    )
    client = sdk.NeMoMicroservices(base_url=fake.base_url, max_retries=0)
    with pytest.raises(sdk.NotFoundError) as nf:
        client.evaluation.jobs.retrieve("eval-doesnotexist")
    assert nf.value.body == {"detail": "Evaluation job 'eval-doesnotexist' not found."}
    with pytest.raises(sdk.UnprocessableEntityError) as bad:
        client.post("/v1/evaluation/jobs", cast_to=object, body={"target": {"type": "model"}})
    assert bad.value.body["detail"][0] == {
        "loc": ["body", "config"],
        "msg": "Field required",
        "type": "missing",
    }


# ------------------------------------------------------------------------------- lifecycle and options


def test_job_lifecycle_progress_and_failure(fake: FakeNemoService, llm: MockLLMServer, hf_env: Path) -> None:
    files_url = _upload_rows(fake, "team", "consults", hf_env)
    client = NemoClient(fake.base_url)
    fake.hold_jobs.set()  # freeze the job as it starts running, to read that state over REST
    job = client.create_job(_config(llm, files_url), _target(llm))
    assert job["status"] == "created"
    fake.wait_for_job(job["id"], "running")
    running_now = client.get_job(job["id"])
    assert running_now["status"] == "running" and running_now["result"] is None
    assert client.job_status(job["id"]) == {
        "message": None,
        "task_status": {"consult_summary_eval": "pending"},
        "progress": 0.0,
        "samples_processed": 0,
    }
    fake.hold_jobs.clear()
    job = _finish(fake, client.get_job, job["id"])
    assert job["status"] == "completed"
    assert job["status_details"]["progress"] == 100.0 and job["status_details"]["samples_processed"] == len(
        ROWS
    )
    assert job["result"] and job["output_files_url"].endswith(job["id"])

    # Every state the job passed through, in order, as a poller would have seen it.
    history = fake.jobs[job["id"]].history
    phases = [s for i, (s, _, _) in enumerate(history) if i == 0 or history[i - 1][0] != s]
    assert phases == ["created", "pending", "running", "completed"]
    running = [(p, n) for s, p, n in history if s == "running" and n]
    assert running and all(0 < p < 100 or n == len(ROWS) for p, n in running)
    assert [n for _, n in running] == sorted(n for _, n in running)  # progress only moves forward
    assert [p for p, _ in running] == sorted(p for p, _ in running)

    fake.fail_next_job = True
    failed = _finish(fake, client.get_job, client.create_job(_config(llm, files_url), _target(llm))["id"])
    assert failed["status"] == "failed" and "fail_next_job" in failed["status_details"]["message"]
    assert "failed" in client.job_logs(failed["id"])
    with pytest.raises(NemoServiceError) as info:
        client.job_results(failed["id"])
    assert info.value.status == 404
    next_job = client.create_job(_config(llm, files_url), _target(llm))["id"]
    assert _finish(fake, client.get_job, next_job)["status"] == "completed", (
        "fail_next_job fails one job only"
    )


def test_cancel_a_held_job_and_missing_dataset_fails(
    fake: FakeNemoService, llm: MockLLMServer, hf_env: Path
) -> None:
    files_url = _upload_rows(fake, "team", "consults", hf_env)
    client = NemoClient(fake.base_url)
    fake.hold_jobs.set()
    job = client.create_job(_config(llm, files_url), _target(llm))
    fake.wait_for_job(job["id"], "running")
    client.cancel_job(job["id"])
    assert _finish(fake, client.get_job, job["id"])["status"] == "cancelled"
    assert [s for s, _, _ in fake.jobs[job["id"]].history][-2:] == ["cancelling", "cancelled"]
    fake.hold_jobs.clear()

    missing_id = client.create_job(_config(llm, "hf://datasets/team/nope"), _target(llm))["id"]
    missing = _finish(fake, client.get_job, missing_id)
    assert missing["status"] == "failed" and "nope" in missing["status_details"]["message"]

    with pytest.raises(NemoServiceError) as info:
        client.create_job({"tasks": {}}, _target(llm))
    assert info.value.status == 422 and info.value.detail == "body.config.type: Field required"


def test_minimal_stats_and_zip_without_samples(hf_env: Path, llm: MockLLMServer) -> None:
    with FakeNemoService(minimal_stats=True, include_samples=False, queue_delay=0.0) as svc:
        files_url = _upload_rows(svc, "team", "consults", hf_env)
        client = NemoClient(svc.base_url)
        job = _finish(svc, client.get_job, client.create_job(_config(llm, files_url), _target(llm))["id"])
        res = client.job_results(job["id"])
        stats = res["tasks"]["consult_summary_eval"]["metrics"]["correctness"]["scores"]["correctness"][
            "stats"
        ]
        assert set(stats) == {"count", "sum", "mean"}
        with zipfile.ZipFile(io.BytesIO(client.download_results(job["id"]))) as zf:
            assert not any(n.endswith("results/results.json") for n in zf.namelist())
