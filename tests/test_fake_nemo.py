"""The loopback FAKE NeMo service, driven by independent clients: the official ``nemo-microservices`` SDK
(strict response validation, so every answer must parse into the SDK's own types) and the real
``huggingface_hub`` client against its Data Store.

Jobs are computed by the fake's own scorer (``fake_nemo/scorer*.py``), not the package's engine: the
tests below check that it loads none of it, follows NeMo's rules, and agrees with the local engine.

Tests wait for job states with ``FakeNemoService.wait_for_job`` (woken by each status change) and
check what a poller could have seen in ``FakeJob.history``; nothing sleeps to wait.
"""

from __future__ import annotations

import io
import json
import math
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
from tests.conftest import isolate_nemo_env
from tests.fixtures.seed_config import seed_config

ID_RE = re.compile(r"^eval-[1-9A-HJ-NP-Za-km-z]{20,22}$")
ROWS = [
    {"ID": f"R{i}", "content": f"Patient {i} reports cough and fever for {i + 2} days; prescribed rest."}
    for i in range(4)
]


@pytest.fixture()
def hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ambient HF token/endpoint/offline mode and no NeMo URLs from the developer's shell."""
    isolate_nemo_env(monkeypatch, tmp_path)
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


# ------------------------------------------------------------------ the fake's own, independent scorer


def _strict_sdk(fake: FakeNemoService) -> Any:
    sdk = pytest.importorskip(
        "nemo_microservices", reason="the nemo-microservices SDK is a test-only dependency"
    )
    return sdk.NeMoMicroservices(base_url=fake.base_url, _strict_response_validation=True, max_retries=0)


def test_the_scorer_imports_no_engine(tmp_path: Path) -> None:
    """A job computed in a fresh interpreter loads none of the package's engine, plan, scoring,
    pipeline or backends: the fake's numbers come from its own code."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import json, sys, httpx
        from mlflow_nemo_judge.testing.fake_nemo import FakeNemoService
        from mlflow_nemo_judge.testing.mock_llm import MockLLMServer
        from tests.fixtures.seed_config import seed_config
        with MockLLMServer() as llm, FakeNemoService(queue_delay=0.0) as fake:
            cfg = seed_config(judge_url=f"{llm.base_url}/chat/completions", judge_model="mock/judge",
                              files_url=sys.argv[1])
            tgt = {"type": "model", "model": {"api_endpoint": {
                "url": f"{llm.base_url}/chat/completions", "model_id": "mock/faithful-summarizer"}}}
            job = httpx.post(fake.base_url + "/v1/evaluation/jobs", json={"config": cfg, "target": tgt}).json()
            done = fake.wait_for_job(job["id"])
            res = httpx.get(f"{fake.base_url}/v1/evaluation/jobs/{job['id']}/results").json()
        loaded = sorted(m for m in sys.modules if m.split(".")[:2] in (
            ["mlflow_nemo_judge", "engine"], ["mlflow_nemo_judge", "plan"], ["mlflow_nemo_judge", "scoring"],
            ["mlflow_nemo_judge", "pipeline"], ["mlflow_nemo_judge", "backends"]))
        print(json.dumps({"status": done["status"], "loaded": loaded,
                          "count": res["tasks"]["consult_summary_eval"]["metrics"]["completeness"]
                                   ["scores"]["completeness"]["stats"]["count"]}))
    """)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-c", script, str(rows)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
        env={**__import__("os").environ, "NO_PROXY": "127.0.0.1,localhost"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"status": "completed", "loaded": [], "count": len(ROWS)}


def test_all_nan_score_parses_in_the_sdk_and_the_client(
    fake: FakeNemoService, llm: MockLLMServer, hf_env: Path
) -> None:
    """A judge whose replies never match its regex: every row NaN. The SDK's ``Score.value`` is a
    required float (``null`` fails strict validation), so the fake answers ``NaN`` with stats that
    count nothing and say how many were NaN."""
    from nemo_microservices.types import EvaluationResult

    cfg = _config(llm, _upload_rows(fake, "team", "consults", hf_env))
    for metric in cfg["tasks"]["consult_summary_eval"]["metrics"].values():
        for score in metric["params"]["scores"].values():
            score["parser"]["pattern"] = r"NEVER-IN-A-REPLY:\s*(\d+)"
    client = _strict_sdk(fake)
    job = client.evaluation.jobs.create(config=cfg, target=_target(llm))
    assert _finish(fake, client.evaluation.jobs.retrieve, job.id).status == "completed"
    parsed = client.evaluation.jobs.results(job.id)
    assert isinstance(parsed, EvaluationResult)
    score: Any = parsed.tasks["consult_summary_eval"].metrics["completeness"].scores["completeness"]  # type: ignore[index]
    assert math.isnan(score.value)
    assert (score.stats.count, score.stats.nan_count, score.stats.mean, score.stats.sum) == (0, 4, None, None)
    mine = NemoClient(fake.base_url).job_results(job.id)
    raw = mine["tasks"]["consult_summary_eval"]["metrics"]["correctness"]["scores"]["correctness"]
    assert math.isnan(raw["value"]) and raw["stats"] == {"count": 0, "nan_count": 4}


def test_logs_are_a_zip_and_json_text_for_json_clients(
    fake: FakeNemoService, llm: MockLLMServer, hf_env: Path
) -> None:
    client = NemoClient(fake.base_url)
    job = client.create_job(_config(llm, _upload_rows(fake, "team", "consults", hf_env)), _target(llm))
    fake.wait_for_job(job["id"])
    r = httpx.get(f"{fake.base_url}/v1/evaluation/jobs/{job['id']}/logs", headers={"Accept": "*/*"})
    assert r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        (name,) = zf.namelist()
        text = zf.read(name).decode()
    assert name.endswith("logs/job.log") and "Computed metric 3 correctness: score=correctness" in text
    as_json = httpx.get(
        f"{fake.base_url}/v1/evaluation/jobs/{job['id']}/logs", headers={"Accept": "application/json"}
    )
    assert as_json.json() == text
    assert "Computed metric 0 completeness" in client.job_logs(job["id"])  # the client reads the ZIP


def test_list_filters_search_and_pages(fake: FakeNemoService, llm: MockLLMServer, hf_env: Path) -> None:
    files_url = _upload_rows(fake, "team", "consults", hf_env)
    client = _strict_sdk(fake)
    client.evaluation.configs.create(**{**_config(llm, files_url), "name": "seed"})
    client.evaluation.configs.create(**{**_config(llm, files_url), "name": "other", "namespace": "lab"})
    client.evaluation.targets.create(**{**_target(llm), "name": "poor", "namespace": "team"})
    by_ref = client.evaluation.jobs.create(config="team/seed", target="team/poor")
    inline = client.evaluation.jobs.create(config=_config(llm, files_url), target=_target(llm))
    for j in (by_ref, inline):
        fake.wait_for_job(j.id)
    fake.fail_next_job = True
    failed = client.evaluation.jobs.create(config="team/seed", target="team/poor")
    fake.wait_for_job(failed.id)

    def ids(path: str, **query: Any) -> list[str]:
        body = httpx.get(fake.base_url + path, params=query).json()
        return [d["id"] if path.endswith("jobs") else d["name"] for d in body["data"]]

    assert ids("/v1/evaluation/jobs", **{"filter[status]": "failed"}) == [failed.id]
    assert ids("/v1/evaluation/jobs", **{"filter[config]": "team/seed"}) == [by_ref.id, failed.id]
    assert ids("/v1/evaluation/jobs", **{"filter[target][name]": "poor", "filter[status]": "completed"}) == [
        by_ref.id
    ]
    assert ids("/v1/evaluation/jobs", **{"filter[created_at][gt]": "2000-01-01T00:00:00"}) == [
        by_ref.id,
        inline.id,
        failed.id,
    ]
    assert ids("/v1/evaluation/jobs", **{"filter[created_at][lt]": "2000-01-01T00:00:00"}) == []
    assert ids("/v1/evaluation/jobs", **{"search[status]": "FAIL", "search[config]": "nothing"}) == [
        failed.id
    ]
    assert ids("/v1/evaluation/jobs", sort="-created_at", page=2, page_size=2) == [by_ref.id]
    assert ids("/v1/evaluation/configs", **{"filter[namespace]": "lab"}) == ["other"]
    assert ids("/v1/evaluation/configs", **{"filter[name]": "seed", "filter[type]": "custom"}) == ["seed"]
    assert ids("/v1/evaluation/targets", **{"filter[name]": "poor"}) == ["poor"]
    assert ids("/v1/evaluation/targets", **{"filter[name]": "nope"}) == []
    # The SDK sends the same filters and parses the filtered page strictly.
    page = client.evaluation.jobs.list(filter={"status": "completed"}, page_size=1)
    assert page.pagination is not None and page.pagination.total_results == 2
    assert {j.id for j in page} == {by_ref.id, inline.id}


def test_tool_calling_on_the_fake_by_nemos_semantics(
    fake: FakeNemoService, llm: MockLLMServer, hf_env: Path
) -> None:
    """NVIDIA's published tool-calling config shape, scored by the fake's own tool-calling code: the
    calls' order is ignored, names and arguments compare exactly (fixture expectations in its docstring)."""
    from huggingface_hub import HfApi

    from tests.fixtures.tool_calling import EXPECTED, TOOL_ROWS, tool_calling_config

    httpx.post(f"{fake.base_url}/v1/datastore/namespaces", data={"namespace": "team"}).raise_for_status()
    api = HfApi(endpoint=fake.hf_url, token=False)
    api.create_repo("team/tools", repo_type="dataset")
    api.upload_file(
        path_or_fileobj=str(TOOL_ROWS), path_in_repo="rows.jsonl", repo_id="team/tools", repo_type="dataset"
    )
    cfg = tool_calling_config(f"{llm.base_url}/chat/completions", files_url="hf://datasets/team/tools")
    tgt = {
        "type": "model",
        "model": {
            "api_endpoint": {"url": f"{llm.base_url}/chat/completions", "model_id": "mock/tool-caller"}
        },
    }
    client = NemoClient(fake.base_url)
    job = client.create_job(cfg, tgt)
    assert fake.wait_for_job(job["id"])["status"] == "completed"
    scores = client.job_results(job["id"])["tasks"]["travel-tools"]["metrics"]["tool-calling-accuracy"][
        "scores"
    ]
    for name, per_row in EXPECTED.items():
        assert scores[name]["value"] == pytest.approx(sum(per_row) / len(per_row))
        assert scores[name]["stats"]["count"] == len(per_row)
    with zipfile.ZipFile(io.BytesIO(client.download_results(job["id"]))) as zf:
        per_sample = next(json.loads(zf.read(n)) for n in zf.namelist() if n.endswith("results/results.json"))
    got = {
        name: [
            r["metrics"]["tool-calling-accuracy"]["scores"][name]["value"] for r in per_sample["travel-tools"]
        ]
        for name in EXPECTED
    }
    assert got == EXPECTED


def test_scorer_units_follow_nemo_rules() -> None:
    from mlflow_nemo_judge.testing.fake_nemo import scorer_metrics as sm
    from mlflow_nemo_judge.testing.fake_nemo.scorer_aggregate import aggregate, score_entry

    nan = float("nan")
    stats = aggregate([5.0, nan, 3.0, 4.0])
    assert (stats["count"], stats["nan_count"], stats["sum"], stats["mean"]) == (3, 1, 12.0, 4.0)
    assert stats["variance"] == pytest.approx(2 / 3) and stats["stddev"] == pytest.approx((2 / 3) ** 0.5)
    assert stats["stderr"] == pytest.approx(1 / 3**0.5) and stats["sum_squared"] == 50.0
    assert score_entry([1.0], minimal=True) == {"value": 1.0, "stats": {"count": 1, "sum": 1.0, "mean": 1.0}}
    empty = score_entry([nan, nan], minimal=False)
    assert math.isnan(empty["value"]) and empty["stats"] == {"count": 0, "nan_count": 2}

    a = {"function": {"name": "f", "arguments": '{"x": 1, "y": [1, 2]}'}}
    b = {"function": {"name": "g", "arguments": "{}"}}
    truth = [
        {"function": {"name": "g", "arguments": {}}},
        {"function": {"name": "f", "arguments": {"y": [1, 2], "x": 1}}},
    ]
    assert sm.tool_calling([a, b], truth) == {
        "function_name_accuracy": 1.0,
        "function_name_and_args_accuracy": 1.0,
    }
    assert sm.tool_calling([a], truth) == {
        "function_name_accuracy": 0.0,
        "function_name_and_args_accuracy": 0.0,
    }
    assert sm.tool_calling([a, a], [a, b])["function_name_accuracy"] == 0.0  # multisets, not sets
    wrong_arg = {"function": {"name": "f", "arguments": '{"x": 2, "y": [1, 2]}'}}
    assert sm.tool_calling([wrong_arg, b], truth) == {
        "function_name_accuracy": 1.0,
        "function_name_and_args_accuracy": 0.0,
    }
    assert (
        sm.tool_calling([{"function": {"name": "F", "arguments": "{}"}}], [{"function": {"name": "f"}}])[
            "function_name_accuracy"
        ]
        == 0.0
    )  # case-sensitive
    assert sm.tool_calling(None, []) == {
        "function_name_accuracy": 1.0,
        "function_name_and_args_accuracy": 1.0,
    }

    assert (
        sm.judge_score(
            "RATING: 4", {"type": "int", "parser": {"type": "regex", "pattern": r"RATING:\s*(\d+)"}}
        )
        == 4.0
    )
    assert math.isnan(sm.judge_score("no", {"parser": {"type": "regex", "pattern": r"RATING:\s*(\d+)"}}))
    assert (
        sm.judge_score(
            '```json\n{"ok": true}\n```', {"type": "bool", "parser": {"type": "json", "json_path": "ok"}}
        )
        == 1.0
    )
    assert sm.strip_reasoning("think 5 </think> RATING: 2", {"end_token": "</think>"}) == " RATING: 2"
    assert sm.strip_reasoning("still thinking RATING: 5", {"end_token": "</think>"}) is None
    assert sm.string_check("Paris, France", "contains", "Paris") == 1.0
    assert sm.number_check(["absolute difference", "3.05", "3", "epsilon", 0.1]) == 1.0
    assert sm.number_check(["7", "lt", "5"]) == 0.0
    assert sm.exact_match("The Answer.", "answer") == 1.0 and sm.f1("x b c", "b c d") == pytest.approx(2 / 3)


MIXED_ROWS = [
    {
        "Q": "Capital of France?",
        "answer": "Paris is the capital.",
        "gold": "The capital is Paris.",
        "n": "41",
        "want": 42,
    },
    {"Q": "Two plus two?", "answer": "4", "gold": "4", "n": "4", "want": 4},
    {"Q": "Largest ocean?", "answer": "the Atlantic", "gold": "The Pacific Ocean", "n": "7.5", "want": 9},
]


def _mixed_config(data: Path) -> dict[str, Any]:
    def task(limit: int | None = None) -> dict[str, Any]:
        ds: dict[str, Any] = {"files_url": str(data)}
        if limit:
            ds["limit"] = limit
        return {
            "type": "data",
            "dataset": ds,
            "metrics": {
                "exact": {
                    "type": "string-check",
                    "params": {"check": ["{{ item.answer }}", "contains", "{{ item.gold }}"]},
                },
                "near": {
                    "type": "number-check",
                    "params": {
                        "check": ["absolute difference", "{{ item.n }}", "{{ item.want }}", "epsilon", 1]
                    },
                },
                "em": {
                    "type": "em",
                    "params": {"reference": "{{ item.gold }}", "candidate": "{{ item.answer }}"},
                },
                "f1": {
                    "type": "f1",
                    "params": {"reference": "{{ item.gold }}", "candidate": "{{ item.answer }}"},
                },
                "bleu": {
                    "type": "bleu",
                    "params": {"references": ["{{ item.gold }}"], "candidate": "{{ item.answer }}"},
                },
                "rouge": {
                    "type": "rouge",
                    "params": {"reference": "{{ item.gold }}", "candidate": "{{ item.answer }}"},
                },
            },
        }

    return {
        "type": "custom",
        "tasks": {"all": task(), "first_two": task(2)},
        "groups": {"both": {"tasks": ["all"], "groups": {"inner": {"tasks": ["first_two"]}}}},
    }


def test_mixed_metrics_and_groups_two_implementations_agree(hf_env: Path, fake: FakeNemoService) -> None:
    """The package's local engine and the fake's own scorer on the same rows: string-check,
    number-check, em, f1, BLEU (sentence and corpus), ROUGE and nested groups agree to 1e-9 (the two
    sum in different orders, so the last float digit may differ)."""
    from mlflow_nemo_judge.backends.nemo import NemoBackend
    from mlflow_nemo_judge.config import load_config, load_target
    from mlflow_nemo_judge.engine import run_local
    from tests.test_nemo_backend import assert_same_numbers

    data = hf_env / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in MIXED_ROWS), encoding="utf-8")
    cfg = _mixed_config(data)
    target = load_target({"type": "rows", "rows": []})
    local = run_local(load_config(cfg), target, cache=False, progress_bar=False, work_dir=hf_env / "local")
    remote = NemoBackend(
        fake.base_url, poll_interval=0.02, max_poll_interval=0.1, work_dir=hf_env / "nemo"
    ).run_blocking(load_config(cfg), target)
    per_local = [(r.task, r.index, {m: o.scores for m, o in r.metrics.items()}) for r in local.iter_samples()]
    per_remote = [
        (r.task, r.index, {m: o.scores for m, o in r.metrics.items()}) for r in remote.iter_samples()
    ]
    assert_same_numbers({str(k[:2]): k[2] for k in per_remote}, {str(k[:2]): k[2] for k in per_local})
    assert_same_numbers(remote.to_nemo_dict(), local.to_nemo_dict())
    assert (
        remote.to_nemo_dict()["groups"]["both"]["groups"]["inner"]["metrics"]["em"]["scores"]["em"]["stats"][
            "count"
        ]
        == 2
    )


def test_model_references_and_a_job_that_measured_nothing(
    fake: FakeNemoService, llm: MockLLMServer, hf_env: Path
) -> None:
    """``model: "ns/name"`` (target and judge) is resolved through the Entity Store as NeMo does; a job
    in which no target call succeeded fails instead of completing with NaN everywhere."""
    import socket

    files_url = _upload_rows(fake, "team", "consults", hf_env)
    httpx.post(f"{fake.base_url}/v1/namespaces", json={"id": "team"}).raise_for_status()
    for name, model_id in (("summ", "mock/faithful-summarizer"), ("judge", "mock/judge")):
        body = {
            "name": name,
            "namespace": "team",
            "api_endpoint": {"url": f"{llm.base_url}/chat/completions", "model_id": model_id},
        }
        httpx.post(f"{fake.base_url}/v1/models", json=body).raise_for_status()
    cfg = _config(llm, files_url)
    for metric in cfg["tasks"]["consult_summary_eval"]["metrics"].values():
        metric["params"]["model"] = "team/judge"
    client = NemoClient(fake.base_url)
    job = client.create_job(cfg, {"type": "model", "model": "team/summ"})
    assert fake.wait_for_job(job["id"])["status"] == "completed"
    stats = client.job_results(job["id"])["tasks"]["consult_summary_eval"]["metrics"]["completeness"][
        "scores"
    ]["completeness"]["stats"]
    assert (stats["count"], stats["nan_count"]) == (len(ROWS), 0)

    missing = client.create_job(cfg, {"type": "model", "model": "team/nope"})
    failed = fake.wait_for_job(missing["id"])
    assert failed["status"] == "failed" and "team/nope" in failed["status_details"]["message"]

    with socket.socket() as s:  # a port nobody listens on: every target call is refused
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1/chat/completions"
    cfg["params"] = {"max_retries": 0}
    target = {"type": "model", "model": {"api_endpoint": {"url": dead, "model_id": "m"}}}
    dead_job = fake.wait_for_job(client.create_job(cfg, target)["id"])
    assert dead_job["status"] == "failed" and "measured nothing" in dead_job["status_details"]["message"]
    assert "ERROR Sample 0 of task consult_summary_eval" in client.job_logs(dead_job["id"])
