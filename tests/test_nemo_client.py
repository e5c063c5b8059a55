"""The NeMo HTTP client over httpx.MockTransport: URLs, errors, retries, idempotent creates, pagination,
and a replay of the seed notebook's captured server responses through the nemo backend."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from mlflow_nemo_judge.backends.nemo import NemoBackend
from mlflow_nemo_judge.backends.nemo.client import NemoClient
from mlflow_nemo_judge.backends.nemo.transport import error_detail, query_params
from mlflow_nemo_judge.config import load_config, load_target
from mlflow_nemo_judge.errors import ConfigError, NemoServiceError
from tests.fixtures.seed_config import seed_config, seed_target

BASE = "http://nemo.test"
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(autouse=True)
def _no_ambient_nemo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NEMO_EVALUATOR_URL", "NEMO_DATASTORE_URL", "NEMO_ENTITY_STORE_URL", "NEMO_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def make_client(handler: Handler, sleeps: list[float] | None = None, **kw: Any) -> NemoClient:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    record = sleeps if sleeps is not None else []
    return NemoClient(kw.pop("evaluator_url", BASE), http=http, sleep=record.append, **kw)


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            httpx.Response(404, json={"detail": "Evaluation job 'eval-x' not found."}),
            "Evaluation job 'eval-x' not found.",
        ),
        (
            httpx.Response(
                422,
                json={
                    "detail": [
                        {
                            "loc": ["body", "config"],
                            "msg": "Field required",
                            "type": "missing",
                            "input": {"api_key": "sk-secret"},
                        },
                        {
                            "loc": ["body", "target", "type"],
                            "msg": "Input should be 'model'",
                            "type": "literal_error",
                        },
                    ]
                },
            ),
            "body.config: Field required; body.target.type: Input should be 'model'",
        ),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), "<html>Bad Gateway</html>"),
        (httpx.Response(500, json={"message": "boom"}), "boom"),
    ],
)
def test_error_detail_str_and_422_list(response: httpx.Response, expected: str) -> None:
    assert error_detail(response) == expected
    # FastAPI echoes the offending input in 422 entries; it can hold keys and must not surface.
    assert "sk-secret" not in error_detail(response)


def test_service_error_carries_url_status_and_detail() -> None:
    client = make_client(lambda r: httpx.Response(404, json={"detail": "Evaluation job 'eval-x' not found."}))
    with pytest.raises(NemoServiceError) as info:
        client.get_job("eval-x")
    err = info.value
    assert err.url == f"{BASE}/v1/evaluation/jobs/eval-x"
    assert err.status == 404 and err.detail == "Evaluation job 'eval-x' not found."
    assert "HTTP 404" in str(err) and "eval-x" in str(err)


# ------------------------------------------------------------------------------------------ retries


def test_5xx_and_429_are_retried_with_backoff_and_retry_after() -> None:
    answers = [
        httpx.Response(503, json={"detail": "busy"}),
        httpx.Response(429, headers={"Retry-After": "2"}, json={"detail": "slow down"}),
        httpx.Response(200, json={"id": "eval-1", "status": "running"}),
    ]
    sleeps: list[float] = []
    client = make_client(lambda r: answers.pop(0), sleeps)
    assert client.get_job("eval-1")["status"] == "running"
    assert len(sleeps) == 2
    assert 0.25 <= sleeps[0] <= 0.5  # first backoff: 0.5 s with jitter in its upper half
    assert sleeps[1] == 2.0  # the server's Retry-After wins


def test_retries_are_bounded_and_the_last_error_is_raised() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return httpx.Response(500, json={"detail": "database unavailable"})

    sleeps: list[float] = []
    client = make_client(handler, sleeps, max_retries=3)
    with pytest.raises(NemoServiceError) as info:
        client.create_job({"type": "custom"}, "ns/target")
    assert len(calls) == 4 and len(sleeps) == 3
    assert info.value.status == 500 and info.value.detail == "database unavailable"
    assert all(s <= client.max_backoff for s in sleeps)


def test_client_errors_are_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, json={"detail": "bad"})

    with pytest.raises(NemoServiceError):
        make_client(handler).get_job("x")
    assert len(calls) == 1


def test_connect_errors_are_retried_but_a_sent_post_is_not_repeated() -> None:
    attempts: list[str] = []

    def refuse_then_answer(request: httpx.Request) -> httpx.Response:
        attempts.append("connect")
        if len(attempts) < 3:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"id": "eval-1"})

    assert make_client(refuse_then_answer).create_job({}, {})["id"] == "eval-1"
    assert len(attempts) == 3

    posts: list[str] = []

    def read_timeout(request: httpx.Request) -> httpx.Response:
        posts.append(request.method)
        raise httpx.ReadTimeout("no answer", request=request)

    with pytest.raises(NemoServiceError) as info:
        make_client(read_timeout).create_job({}, {})
    assert posts == ["POST"], "a POST that may have created a job must not be sent twice"
    assert info.value.status is None and "ReadTimeout" in info.value.detail


# -------------------------------------------------------------------------------- URLs and headers


def test_urls_from_env_default_to_the_evaluator_and_token_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEMO_EVALUATOR_URL", "http://nemo.test/v1/")
    monkeypatch.setenv("NEMO_API_TOKEN", "gateway-token")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "ns"})

    client = NemoClient(http=httpx.Client(transport=httpx.MockTransport(handler)), headers={"X-Team": "qa"})
    assert client.evaluator_url == client.datastore_url == client.entity_store_url == "http://nemo.test"
    assert client.hf_endpoint == "http://nemo.test/v1/hf"
    client.get_namespace("ns")
    assert seen[0].headers["authorization"] == "Bearer gateway-token"
    assert seen[0].headers["x-team"] == "qa"
    assert "gateway-token" not in repr(client)

    split = NemoClient("http://ev", datastore_url="http://nds:3000/v1/hf", entity_store_url="http://es/")
    assert (split.datastore_url, split.entity_store_url) == ("http://nds:3000", "http://es")


def test_missing_evaluator_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="NEMO_EVALUATOR_URL"):
        NemoClient()


# --------------------------------------------------------------------------------- idempotent creates


def test_creates_are_idempotent_on_409_and_422() -> None:
    existing_ns = {"id": "team", "created_at": "2025-05-08T17:19:19.316626", "custom_fields": {}}
    existing_ds = {
        "name": "data",
        "namespace": "team",
        "files_url": "hf://datasets/team/data",
        "id": "dataset-1",
    }
    calls: list[tuple[str, str, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.path, request.content))
        route = (request.method, request.url.path)
        if route == ("POST", "/v1/namespaces"):
            return httpx.Response(409, json={"detail": "Namespace 'team' already exists."})
        if route == ("GET", "/v1/namespaces/team"):
            return httpx.Response(200, json=existing_ns)
        if route == ("POST", "/v1/datastore/namespaces"):
            return httpx.Response(409, json={"detail": "exists"})
        if route == ("POST", "/v1/datasets"):
            return httpx.Response(422, json={"detail": "Dataset already exists"})
        if route == ("GET", "/v1/datasets/team/data"):
            return httpx.Response(200, json=existing_ds)
        return httpx.Response(500)

    client = make_client(handler)
    client.ensure_namespace("team")
    assert client.create_dataset("data", "team", "hf://datasets/team/data") == existing_ds
    form = next(c for c in calls if c[1] == "/v1/datastore/namespaces")
    assert form[2] == b"namespace=team"  # the Data Store takes form data, not JSON
    assert client.create_namespace("team") == existing_ns


def test_a_real_422_on_dataset_create_is_not_mistaken_for_exists() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(
                422, json={"detail": [{"loc": ["body", "files_url"], "msg": "Field required"}]}
            )
        return httpx.Response(404, json={"detail": "not found"})

    with pytest.raises(NemoServiceError) as info:
        make_client(handler).create_dataset("data", "team", "")
    assert info.value.status == 422 and info.value.detail == "body.files_url: Field required"


# -------------------------------------------------------------------------------------- pagination


def test_list_jobs_walks_pages_and_encodes_nested_filters() -> None:
    pages = {1: ["a", "b"], 2: ["c", "d"], 3: ["e"]}
    queries: list[list[tuple[str, str]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        queries.append(list(request.url.params.multi_items()))
        page = int(request.url.params["page"])
        data = [{"id": f"eval-{x}"} for x in pages.get(page, [])]
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": data,
                "pagination": {
                    "page": page,
                    "page_size": 2,
                    "current_page_size": len(data),
                    "total_pages": 3,
                    "total_results": 5,
                },
            },
        )

    client = make_client(handler)
    jobs = list(
        client.list_jobs(filter={"status": "running", "created_at": {"gt": "2025-03-18"}}, page_size=2)
    )
    assert [j["id"] for j in jobs] == [f"eval-{x}" for x in "abcde"]
    assert len(queries) == 3  # stops at total_pages without asking for an empty page
    assert ("filter[status]", "running") in queries[0]
    assert ("filter[created_at][gt]", "2025-03-18") in queries[0]
    assert ("sort", "-created_at") in queries[0]
    assert query_params("filter", {"ids": ["a", "b"]}) == [("filter[ids]", "a,b")]


def test_logs_accept_text_and_zip() -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("logs/job.log", "Computed metric 0 completeness: value=5.0")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/eval-zip/logs"):
            return httpx.Response(200, content=buf.getvalue(), headers={"content-type": "application/zip"})
        return httpx.Response(200, text="line one\nline two", headers={"content-type": "text/plain"})

    client = make_client(handler)
    assert client.job_logs("eval-text") == "line one\nline two"
    assert "Computed metric 0 completeness" in client.job_logs("eval-zip")


# ------------------------------------------------------------------ replay of the seed notebook outputs
# Captured 2025-05-08 against a live NeMo deployment (NVIDIA/GenerativeAIExamples, nemo/Evaluator/Custom
# LLM-as-a-Judge/llm-as-a-judge-notebook.ipynb: job-create cell, polling cell, job and results cells).

_JUDGE_TEMPLATE = {
    "completeness": "\nYou are a judge. Rate how complete the summary is \non a scale from 1 to 5:\n1 = missing critical "
    "information … 5 = fully complete\nPlease respond with RATING: <number>\n",
    "correctness": "\nYou are a judge. Rate the summary's correctness \n(no false info) on a scale 1-5:\n1 = many "
    "inaccuracies … 5 = completely accurate\nPlease respond with RATING: <number>\n",
}


def _captured_metric(name: str) -> dict[str, Any]:
    return {
        "type": "llm-judge",
        "params": {
            "model": {
                "api_endpoint": {
                    "url": "https://api.openai.com/v1/chat/completions",
                    "model_id": "gpt-4.1",
                    "api_key": "******",
                }
            },
            "template": {
                "messages": [
                    {"role": "system", "content": _JUDGE_TEMPLATE[name]},
                    {
                        "role": "user",
                        "content": "\nFull Consult: {{ item.content }}\nSummary: {{ sample.output_text }}\n",
                    },
                ]
            },
            "scores": {name: {"type": "int", "parser": {"type": "regex", "pattern": "RATING:\\s*(\\d+)"}}},
        },
    }


CAPTURED_JOB: dict[str, Any] = {
    "created_at": "2025-05-08T17:21:24.210032",
    "updated_at": "2025-05-08T17:21:24.210033",
    "id": "eval-CjUYLQdriBtAA5X9KPDLAU",
    "namespace": "default",
    "description": None,
    "target": {
        "schema_version": "1.0",
        "id": "eval-target-V5VgZ54rJBeoD8w1WmzSHn",
        "description": None,
        "type_prefix": "eval-target",
        "namespace": "default",
        "project": None,
        "created_at": "2025-05-08T17:21:24.209441",
        "updated_at": "2025-05-08T17:21:24.209442",
        "custom_fields": {},
        "ownership": None,
        "name": "eval-target-V5VgZ54rJBeoD8w1WmzSHn",
        "type": "model",
        "cached_outputs": None,
        "model": {
            "schema_version": "1.0",
            "id": "model-R1gn9w1tPwdfukCDoCBF2F",
            "description": None,
            "type_prefix": "model",
            "namespace": "default",
            "project": None,
            "created_at": "2025-05-08T17:21:24.209465",
            "updated_at": "2025-05-08T17:21:24.209465",
            "custom_fields": {},
            "ownership": None,
            "name": "model-R1gn9w1tPwdfukCDoCBF2F",
            "version_id": "main",
            "version_tags": [],
            "spec": None,
            "artifact": None,
            "base_model": None,
            "api_endpoint": {
                "url": "https://integrate.api.nvidia.com/v1/chat/completions",
                "model_id": "meta/llama-3.1-70b-instruct",
                "api_key": "******",
                "format": "nim",
            },
            "peft": None,
            "prompt": None,
            "guardrails": None,
        },
        "retriever": None,
        "rag": None,
        "rows": None,
        "dataset": None,
    },
    "config": {
        "schema_version": "1.0",
        "id": "eval-config-MGiCNpVtA1vKP3e7Npqm3P",
        "description": None,
        "type_prefix": "eval-config",
        "namespace": "default",
        "project": None,
        "created_at": "2025-05-08T17:21:24.209320",
        "updated_at": "2025-05-08T17:21:24.209322",
        "custom_fields": {},
        "ownership": None,
        "name": "doctor_consult_summary_eval",
        "type": "custom",
        "params": None,
        "tasks": {
            "consult_summary_eval": {
                "type": "chat-completion",
                "params": {
                    "template": {
                        "messages": [
                            {
                                "role": "system",
                                "content": "Given a full medical consultation, please provide a 50 word "
                                "summary of the consultation.",
                            },
                            {"role": "user", "content": "Full Consult: {{ item.content }}"},
                        ],
                        "max_tokens": 200,
                    }
                },
                "metrics": {
                    "completeness": _captured_metric("completeness"),
                    "correctness": _captured_metric("correctness"),
                },
                "dataset": {
                    "schema_version": "1.0",
                    "id": "dataset-9dhgzV4RtNi1vceLtG9b37",
                    "description": None,
                    "type_prefix": None,
                    "namespace": "default",
                    "project": None,
                    "created_at": "2025-05-08T17:21:24.209381",
                    "updated_at": "2025-05-08T17:21:24.209381",
                    "custom_fields": {},
                    "ownership": None,
                    "name": "dataset-9dhgzV4RtNi1vceLtG9b37",
                    "version_id": "main",
                    "version_tags": [],
                    "format": None,
                    "files_url": "hf://datasets/custom-llm-as-a-judge-eval-v1/custom-llm-as-a-judge-eval-data-v1/",
                    "hf_endpoint": None,
                    "split": None,
                    "limit": 25,
                },
            }
        },
        "groups": None,
    },
    "result": None,
    "output_files_url": None,
    "status_details": {"message": None, "task_status": {}, "progress": None},
    "status": "created",
    "project": None,
    "custom_fields": {},
    "ownership": None,
}
# The polling cell printed these progress values (status running), then completed.
CAPTURED_PROGRESS = [
    8.0,
    16.0,
    20.0,
    28.0,
    32.0,
    40.0,
    44.0,
    48.0,
    56.0,
    64.0,
    72.0,
    72.0,
    80.0,
    84.0,
    88.0,
    96.0,
]
CAPTURED_RESULTS: dict[str, Any] = {
    "created_at": "2025-05-08T17:21:24.281058",
    "updated_at": "2025-05-08T17:21:24.281059",
    "id": "evaluation_result-QWzZVGtKY1Z7hdty63hLfP",
    "job": "eval-CjUYLQdriBtAA5X9KPDLAU",
    "tasks": {
        "consult_summary_eval": {
            "metrics": {
                "completeness": {
                    "scores": {
                        "completeness": {"value": 4.92, "stats": {"count": 25, "sum": 123.0, "mean": 4.92}}
                    }
                },
                "correctness": {
                    "scores": {
                        "correctness": {"value": 4.92, "stats": {"count": 25, "sum": 123.0, "mean": 4.92}}
                    }
                },
            }
        }
    },
    "groups": {},
    "namespace": "default",
    "custom_fields": {},
}


def _polls() -> list[dict[str, Any]]:
    out = []
    for pct in CAPTURED_PROGRESS:
        job = json.loads(json.dumps(CAPTURED_JOB))
        job.update(
            status="running",
            status_details={
                "message": None,
                "task_status": {"consult_summary_eval": "running"},
                "progress": pct,
            },
        )
        out.append(job)
    final = json.loads(json.dumps(CAPTURED_JOB))
    final.update(
        updated_at="2025-05-08T17:23:09.228092",
        result="evaluation_result-QWzZVGtKY1Z7hdty63hLfP",
        output_files_url="hf://datasets/evaluation-results/eval-CjUYLQdriBtAA5X9KPDLAU",
        status="completed",
        status_details={
            "message": "Job completed successfully.",
            "task_status": {"consult_summary_eval": "completed"},
            "progress": 100.0,
        },
    )
    out.append(final)
    return out


def test_seed_notebook_responses_replay_to_an_eval_result() -> None:
    polls = _polls()
    sent: list[dict[str, Any]] = []
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(f"{request.method} {request.url.path}")
        path = request.url.path
        if request.method == "POST" and path == "/v1/evaluation/jobs":
            sent.append(json.loads(request.content))
            return httpx.Response(200, json=CAPTURED_JOB)
        if path == "/v1/evaluation/jobs/eval-CjUYLQdriBtAA5X9KPDLAU":
            return httpx.Response(200, json=polls.pop(0))
        if path.endswith("/results"):
            return httpx.Response(200, json=CAPTURED_RESULTS)
        if path.endswith("/download-results"):  # not captured in the notebook: the aggregates must suffice
            return httpx.Response(404, json={"detail": "Not Found"})
        return httpx.Response(500, json={"detail": f"unexpected {path}"})

    progress: list[tuple[str, int, int | None]] = []
    jobs: list[dict[str, Any]] = []
    backend = NemoBackend(
        BASE,
        poll_interval=0.01,
        http=httpx.Client(transport=httpx.MockTransport(handler)),
        sleep=lambda s: None,
    )
    config = load_config(seed_config(openai_api_key="sk-judge"))
    result = backend.run_blocking(
        config,
        load_target(seed_target("nvapi-target")),
        progress=lambda *a: progress.append(a),
        on_job=jobs.append,
    )

    # Submitted unchanged (hf:// dataset: nothing to stage), keys in place for NeMo to use.
    assert sent[0]["config"] == seed_config(openai_api_key="sk-judge")
    assert sent[0]["target"]["model"]["api_endpoint"]["api_key"] == "nvapi-target"
    assert not any("datastore" in p or "/v1/hf" in p for p in paths)
    assert jobs[0]["id"] == "eval-CjUYLQdriBtAA5X9KPDLAU"
    # Progress percent maps to done/100 per distinct value, labelled with the single task's name.
    distinct = list(dict.fromkeys(int(p) for p in CAPTURED_PROGRESS)) + [100]
    assert progress == [("consult_summary_eval", p, 100) for p in distinct]

    assert result.backend == "nemo"
    assert result.job is not None and result.job["status"] == "completed"
    assert result.job["result"] == "evaluation_result-QWzZVGtKY1Z7hdty63hLfP"
    assert sorted((t, m, s) for t, m, s, _ in result.scores()) == [
        ("consult_summary_eval", "completeness", "completeness"),
        ("consult_summary_eval", "correctness", "correctness"),
    ]
    for _, _, _, score in result.scores():
        assert score.value == pytest.approx(4.92)
        assert score.stats is not None
        assert (score.stats.count, score.stats.sum, score.stats.mean) == (25, 123.0, 4.92)
        # count/sum/mean alone cannot give a spread, so no interval is invented.
        assert score.stats.ci95_low is None and score.stats.stddev is None
    assert result.usage.samples == 25
    assert result.samples_path is None and list(result.iter_samples()) == []
    assert result.to_nemo_dict()["tasks"] == {
        t: {
            "metrics": {
                m: {
                    "scores": {
                        s: {"value": sc["value"], "stats": sc["stats"]} for s, sc in mv["scores"].items()
                    }
                }
                for m, mv in tv["metrics"].items()
            }
        }
        for t, tv in CAPTURED_RESULTS["tasks"].items()
    }


def test_seed_notebook_job_reattached_reports_server_wall_time() -> None:
    final = _polls()[-1]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/results"):
            return httpx.Response(200, json=CAPTURED_RESULTS)
        if request.url.path.endswith("/download-results"):
            return httpx.Response(404, json={"detail": "Not Found"})
        return httpx.Response(200, json=final)

    backend = NemoBackend(
        BASE, http=httpx.Client(transport=httpx.MockTransport(handler)), sleep=lambda s: None
    )
    result = backend.attach_blocking("eval-CjUYLQdriBtAA5X9KPDLAU")
    # The job's own duration (17:21:24.210032 → 17:23:09.228092), not the instant the attach took.
    assert result.usage.wall_seconds == pytest.approx(105.01806, abs=1e-4)
    assert result.tasks["consult_summary_eval"]["correctness"]["correctness"].value == pytest.approx(4.92)
