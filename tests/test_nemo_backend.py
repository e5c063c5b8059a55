"""The nemo backend: polling, cancel, failures, secrets and results mapping (MockTransport), and end to end
against the loopback FAKE NeMo service and mock models, compared with the local backend."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlflow_nemo_judge.backends import get_backend
from mlflow_nemo_judge.backends.nemo import NemoBackend, NemoJobError, NemoJobTimeout
from mlflow_nemo_judge.backends.nemo.results import build_result, read_results_zip
from mlflow_nemo_judge.config import load_config, load_target
from mlflow_nemo_judge.config.keys import resolve_env as resolve_secrets
from mlflow_nemo_judge.engine import run_local
from mlflow_nemo_judge.errors import EvaluationError, SecretError
from mlflow_nemo_judge.testing.fake_nemo import FakeNemoService
from mlflow_nemo_judge.testing.mock_llm import MockLLMServer
from tests.conftest import isolate_nemo_env
from tests.fixtures.paths import shared_data
from tests.fixtures.seed_config import seed_config

BASE = "http://nemo.test"
JOB_ID = "eval-TestJob1111111111111"
TASK = "consult_summary_eval"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_nemo_env(monkeypatch, tmp_path)


def _job(status: str, **details: Any) -> dict[str, Any]:
    return {
        "id": JOB_ID,
        "status": status,
        "created_at": "2025-05-08T17:21:24.210032",
        "updated_at": "2025-05-08T17:21:30.210032",
        "config": {"type": "custom", "tasks": {TASK: {"type": "chat-completion"}}},
        "target": {
            "type": "model",
            "model": {"api_endpoint": {"url": "u", "model_id": "m", "api_key": "******"}},
        },
        "status_details": {
            "message": None,
            "task_status": {},
            "progress": None,
            "samples_processed": None,
            **details,
        },
    }


RESULTS = {
    "id": "evaluation_result-1",
    "job": JOB_ID,
    "tasks": {
        TASK: {
            "metrics": {
                "completeness": {
                    "scores": {
                        "completeness": {
                            "value": 4.0,
                            "stats": {"count": 4, "sum": 16.0, "mean": 4.0, "stddev": 1.0},
                        }
                    }
                }
            }
        }
    },
    "groups": {},
}


def _service(
    polls: list[dict[str, Any]],
    *,
    logs: str = "log line",
    zip_bytes: bytes | None = None,
    seen: list[str] | None = None,
) -> Callable[[httpx.Request], httpx.Response]:
    record = seen if seen is not None else []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        record.append(f"{request.method} {path}")
        if request.method == "POST" and path == "/v1/evaluation/jobs":
            return httpx.Response(200, json=_job("created"))
        if path.endswith("/cancel"):
            return httpx.Response(200, json={"id": JOB_ID, "status": "cancelling"})
        if path.endswith("/logs"):
            return httpx.Response(200, text=logs)
        if path.endswith("/results"):
            return httpx.Response(200, json=RESULTS)
        if path.endswith("/download-results"):
            if zip_bytes is None:
                return httpx.Response(404, json={"detail": "Not Found"})
            return httpx.Response(200, content=zip_bytes, headers={"content-type": "application/zip"})
        if path == f"/v1/evaluation/jobs/{JOB_ID}":
            return httpx.Response(200, json=polls.pop(0) if len(polls) > 1 else polls[0])
        return httpx.Response(500, json={"detail": f"unexpected {request.method} {path}"})

    return handler


def _backend(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> NemoBackend:
    kw.setdefault("sleep", lambda s: None)
    kw.setdefault("poll_interval", 0.01)
    return NemoBackend(BASE, http=httpx.Client(transport=httpx.MockTransport(handler)), **kw)


def _seed(tmp_path: Path, **kw: Any) -> tuple[Any, Any]:
    cfg = seed_config(files_url="hf://datasets/ns/data", **kw)
    target = {
        "type": "model",
        "model": {
            "api_endpoint": {
                "url": "http://target.test/v1/chat/completions",
                "model_id": "t",
                "api_key_env": "TEST_TARGET_KEY",
            }
        },
    }
    return load_config(cfg), load_target(target)


# ------------------------------------------------------------------------------------------ polling


def test_get_backend_builds_the_nemo_backend() -> None:
    backend = get_backend("nemo", evaluator_url=BASE)
    assert isinstance(backend, NemoBackend) and backend.name == "nemo"


def test_unknown_status_is_polled_through_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TEST_TARGET_KEY", "k")
    polls = [
        _job("created"),
        _job("queued"),
        _job("queued"),
        _job("pending"),
        _job("running", progress=50.0),
        _job("completed", progress=100.0, samples_processed=4),
    ]
    sleeps: list[float] = []
    backend = _backend(_service(polls), sleep=sleeps.append, poll_interval=0.5, max_poll_interval=1.0)
    with caplog.at_level(logging.WARNING, logger="mlflow_nemo_judge.backends.nemo"):
        result = backend.run_blocking(*_seed(tmp_path))
    warnings = [r for r in caplog.records if "queued" in r.getMessage()]
    assert len(warnings) == 1
    assert result.tasks[TASK]["completeness"]["completeness"].value == 4.0
    # Adaptive polling: the interval holds while the status moves (created → queued), grows by half
    # while nothing changes (queued again), and is capped.
    assert sleeps[:3] == [0.5, 0.5, 0.75] and max(sleeps) <= 1.0


def test_timeout_raises_with_the_job_still_attachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_TARGET_KEY", "k")
    import time as _time

    backend = _backend(_service([_job("running", progress=10.0)]), timeout=0.05, sleep=_time.sleep)
    with pytest.raises(NemoJobTimeout) as info:
        backend.run_blocking(*_seed(tmp_path))
    assert isinstance(info.value, EvaluationError) and info.value.job_id == JOB_ID
    assert "0.05s" in str(info.value) and "running" in str(info.value)


def test_keyboard_interrupt_cancels_the_job_then_reraises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_TARGET_KEY", "k")
    seen: list[str] = []

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    backend = _backend(_service([_job("running")], seen=seen), sleep=interrupt)
    with pytest.raises(KeyboardInterrupt):
        backend.run_blocking(*_seed(tmp_path))
    assert f"POST /v1/evaluation/jobs/{JOB_ID}/cancel" in seen


def test_keyboard_interrupt_wins_even_when_cancel_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_TARGET_KEY", "k")
    inner = _service([_job("running")])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/cancel"):
            return httpx.Response(501, json={"detail": "cancel is not implemented"})
        return inner(request)

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _backend(handler, sleep=interrupt, max_retries=0).run_blocking(*_seed(tmp_path))


def test_failed_job_raises_with_message_job_and_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_TARGET_KEY", "k")
    failed = _job("failed", message="Judge endpoint returned 401", task_status={TASK: "failed"})
    failed["target"]["model"]["api_endpoint"]["api_key"] = "leaked-by-a-careless-server"
    backend = _backend(_service([_job("running"), failed], logs="ERROR judge 401 on row 3"))
    with pytest.raises(NemoJobError) as info:
        backend.run_blocking(*_seed(tmp_path))
    err = info.value
    assert isinstance(err, EvaluationError)
    assert "Judge endpoint returned 401" in str(err) and JOB_ID in str(err)
    assert err.logs == "ERROR judge 401 on row 3"
    assert err.job is not None and err.job["status"] == "failed"
    assert err.job["target"]["model"]["api_endpoint"]["api_key"] == "******"  # redacted for artifacts


# ------------------------------------------------------------------------------------------ secrets


def test_api_key_env_is_resolved_only_into_the_submission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_TARGET_KEY", "nvapi-from-env")
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-from-env")
    bodies: list[dict[str, Any]] = []
    inner = _service([_job("completed", progress=100.0)])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/evaluation/jobs":
            bodies.append(json.loads(request.content))
        return inner(request)

    cfg = seed_config(files_url="hf://datasets/ns/data")
    judge = cfg["tasks"][TASK]["metrics"]["completeness"]["params"]["model"]["api_endpoint"]
    del judge["api_key"]
    judge["api_key_env"] = "TEST_JUDGE_KEY"
    config, target = load_config(cfg), _seed(tmp_path)[1]
    before = (config.to_dict(), target.to_dict())
    jobs: list[dict[str, Any]] = []
    _backend(handler).run_blocking(config, target, on_job=jobs.append)
    sent = bodies[0]
    assert sent["target"]["model"]["api_endpoint"] == {
        "url": "http://target.test/v1/chat/completions",
        "model_id": "t",
        "api_key": "nvapi-from-env",
    }
    sent_judge = sent["config"]["tasks"][TASK]["metrics"]["completeness"]["params"]["model"]["api_endpoint"]
    assert sent_judge["api_key"] == "sk-from-env" and "api_key_env" not in sent_judge
    assert (config.to_dict(), target.to_dict()) == before  # the user's objects are untouched
    assert "nvapi-from-env" not in json.dumps(jobs)

    monkeypatch.delenv("TEST_JUDGE_KEY")
    with pytest.raises(SecretError) as info:
        _backend(handler).validate(config, target)
    assert "TEST_JUDGE_KEY" in str(info.value)
    assert info.value.path == f"tasks.{TASK}.metrics.completeness.params.model.api_endpoint.api_key_env"


def test_literal_api_key_wins_and_env_field_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNSET_KEY_VAR", raising=False)
    out = resolve_secrets({"a": [{"api_key": "lit", "api_key_env": "UNSET_KEY_VAR", "url": "u"}]})
    assert out == {"a": [{"api_key": "lit", "url": "u"}]}


def test_validate_refuses_a_missing_local_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_TARGET_KEY", "k")
    config = load_config(seed_config(files_url=str(tmp_path / "missing.jsonl")))
    with pytest.raises(Exception, match="missing.jsonl"):
        _backend(_service([_job("created")])).validate(config, _seed(tmp_path)[1])
    # Any config type passes through: NeMo knows types this package does not run.
    other = load_config({"type": "gsm8k", "tasks": {"t": {"type": "default"}}, "unknown_field": 1})
    _backend(_service([_job("created")])).validate(other, _seed(tmp_path)[1])


# ---------------------------------------------------------------------------------- results mapping


def _per_sample_zip(values: list[float | None], nested: bool = True) -> bytes:
    records = [
        {
            "item": {"ID": f"C{i:03d}", "content": f"consult {i}"},
            "sample": {
                "output_text": f"summary {i}",
                "response": {
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": f"summary {i}"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5},
                },
            },
            "metrics": {"completeness": {"scores": {"completeness": {"value": v, "stats": None}}}},
            "requests": [
                {
                    "request": {"model": "t", "messages": [{"role": "user", "content": f"c{i}"}]},
                    "response": {"usage": {"prompt_tokens": 10, "completion_tokens": 5}},
                }
            ],
        }
        for i, v in enumerate(values)
    ]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("eval-x/config.json", json.dumps({"type": "custom"}))
        zf.writestr("eval-x/notes.json", "not json at all {")
        if nested:
            zf.writestr("eval-x/results/results.json", json.dumps({TASK: records}))
        else:
            zf.writestr(f"eval-x/{TASK}/results.json", json.dumps(records))
        zf.writestr("eval-x/evaluation_result.json", json.dumps(RESULTS))
    return buf.getvalue()


@pytest.mark.parametrize("nested", [True, False])
def test_per_sample_zip_recomputes_stats_like_local(tmp_path: Path, nested: bool) -> None:
    samples, aggregate = read_results_zip(_per_sample_zip([5, 3, None, 4, 4], nested))
    assert aggregate is not None and aggregate["id"] == "evaluation_result-1"
    assert samples is not None and len(samples[TASK]) == 5
    res = build_result(RESULTS, samples, work_dir=tmp_path)
    # The service's numbers stay the scores (stddev 1.0 as served); the recomputation is beside them.
    served = res.tasks[TASK]["completeness"]["completeness"]
    assert served.value == 4.0 and served.stats is not None and served.stats.stddev == 1.0
    assert res.recomputed is not None
    score = res.recomputed.tasks[TASK]["completeness"]["completeness"]
    assert score.stats is not None
    assert (score.stats.count, score.stats.nan_count, score.value) == (4, 1, 4.0)
    assert score.stats.min == 3 and score.stats.max == 5
    assert score.stats.stddev == pytest.approx(math.sqrt(0.5))
    assert score.stats.ci95_low is not None and score.stats.ci95_low < 4.0 < score.stats.ci95_high  # type: ignore[operator]
    recs = list(res.iter_samples())
    assert [r.item_id for r in recs] == ["C000", "C001", "C002", "C003", "C004"]
    assert recs[1].output_text == "summary 1" and recs[1].finish_reason == "stop"
    assert recs[1].metrics["completeness"].scores == {"completeness": 3.0}
    assert math.isnan(recs[2].metrics["completeness"].scores["completeness"])
    assert recs[0].request == {"messages": [{"role": "user", "content": "c0"}]}
    assert (res.usage.samples, res.usage.requests, res.usage.prompt_tokens) == (5, 5, 50)


def test_without_samples_the_ci_comes_from_count_mean_stddev(tmp_path: Path) -> None:
    from mlflow_nemo_judge.scoring.stats import ci_from_stats

    res = build_result(RESULTS, None, work_dir=tmp_path, samples_processed=4)
    stats = res.tasks[TASK]["completeness"]["completeness"].stats
    assert stats is not None
    assert (stats.ci95_low, stats.ci95_high) == pytest.approx(ci_from_stats(4.0, 4, stddev=1.0))
    assert res.samples_path is None and res.usage.samples == 4


# ------------------------------------------------------------------------------ end to end on the fake


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLMServer]:
    with MockLLMServer() as server:
        yield server


@pytest.fixture()
def fake(tmp_path: Path) -> Iterator[FakeNemoService]:
    with FakeNemoService(queue_delay=0.0) as svc:
        yield svc


def assert_same_numbers(a: Any, b: Any, where: str = "") -> None:
    """Equal trees, floats equal to 1e-9 relative (NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same_numbers(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), f"{where}: {a!r} != {b!r}"
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (
            f"{where}: {a!r} != {b!r}"
        )
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _doctor(llm: MockLLMServer, data: Path, target_model: str = "mock/poor-summarizer") -> tuple[Any, Any]:
    cfg = seed_config(
        openai_api_key="sk-judge-secret",
        judge_url=f"{llm.base_url}/chat/completions",
        judge_model="mock/judge",
        files_url=str(data),
    )
    cfg["tasks"][TASK]["dataset"]["limit"] = 10
    target = {
        "type": "model",
        "model": {
            "api_endpoint": {
                "url": f"{llm.base_url}/chat/completions",
                "model_id": target_model,
                "api_key_env": "TEST_TARGET_KEY",
            }
        },
    }
    return load_config(cfg), load_target(target)


def test_doctor_consults_on_the_fake_equal_the_local_run(
    fake: FakeNemoService, llm: MockLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = shared_data()
    monkeypatch.setenv("TEST_TARGET_KEY", "nvapi-e2e-secret")
    config, target = _doctor(llm, data)
    before = config.to_dict()
    local = run_local(config, target, cache=False, progress_bar=False, work_dir=tmp_path / "local")

    progress: list[tuple[str, int, int | None]] = []
    jobs: list[dict[str, Any]] = []
    backend = NemoBackend(
        fake.base_url, poll_interval=0.02, max_poll_interval=0.1, work_dir=tmp_path / "nemo"
    )
    remote = backend.run_blocking(config, target, progress=lambda *a: progress.append(a), on_job=jobs.append)

    assert remote.backend == "nemo" and remote.job is not None and remote.job["id"] == jobs[0]["id"]
    # Keys, values and full stats incl. CI. The fake's numbers come from its own scorer (a second
    # implementation that sums and divides in its own order), so floats may differ in the last digit.
    assert_same_numbers(remote.to_nemo_dict(), local.to_nemo_dict())
    assert [s for *_, s in remote.scores()][0].stats.count == 10  # type: ignore[union-attr]
    by_local = [(r.item_id, r.output_text, r.metrics["completeness"].scores) for r in local.iter_samples()]
    by_remote = [(r.item_id, r.output_text, r.metrics["completeness"].scores) for r in remote.iter_samples()]
    assert by_remote == by_local and by_local[0][0] == "D001"
    assert remote.usage.samples == 10 and remote.usage.wall_seconds > 0
    assert progress and progress[-1] == (TASK, 10, 10)

    # Staged: uploaded to the Data Store, registered in the Entity Store, submitted as hf://.
    sent_url = fake.job_requests[0]["config"]["tasks"][TASK]["dataset"]["files_url"]
    assert sent_url.startswith("hf://datasets/default/doctor-consults-")
    assert any(ds["files_url"] == sent_url for ds in fake.es_datasets.values())
    assert fake.job_requests[0]["target"]["model"]["api_endpoint"]["api_key"] == "nvapi-e2e-secret"
    assert config.to_dict() == before and config.to_dict()["tasks"][TASK]["dataset"]["files_url"] == str(data)
    assert "nvapi-e2e-secret" not in json.dumps(remote.job) and "sk-judge-secret" not in json.dumps(
        remote.job
    )

    # Attaching to the finished job gives the same result; re-running re-uses the staged data.
    again = backend.attach_blocking(remote.job["id"])
    assert_same_numbers(again.to_nemo_dict(), local.to_nemo_dict())
    backend.run_blocking(config, target)
    assert len([r for r in fake.repos if r[0] == "datasets"]) == 1
    commits = [p for m, p in fake.requests if m == "POST" and p.endswith("/commit/main")]
    assert len(commits) == 2  # same repo, same content: the dataset create answered 409 and was re-used


def test_local_directory_dataset_and_limit_option(
    fake: FakeNemoService, llm: MockLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_TARGET_KEY", "k")
    folder = tmp_path / "data"
    (folder / "part").mkdir(parents=True)
    rows = [
        {"ID": f"D{i}", "content": f"Patient {i} has a cough. Prescribed rest for {i} days."}
        for i in range(6)
    ]
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    (folder / "part" / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[3:]))
    config, target = _doctor(llm, folder, "mock/faithful-summarizer")
    config.tasks[TASK].dataset.files_url = f"file://{folder}/"
    backend = NemoBackend(fake.base_url, namespace="team", poll_interval=0.02, max_poll_interval=0.1, limit=4)
    res = backend.run_blocking(config, target)
    assert [r.item_id for r in res.iter_samples()] == ["D0", "D1", "D2", "D3"]
    repo = next(r for r in fake.repos.values() if r.kind == "datasets")
    assert repo.repo_id.startswith("team/data-") and sorted(repo.files) == ["a.jsonl", "part/b.jsonl"]
    assert fake.job_requests[0]["config"]["params"]["limit_samples"] == 4
    assert "team" in fake.es_namespaces and "team" in fake.ds_namespaces


def test_failed_and_interrupted_jobs_on_the_fake(
    fake: FakeNemoService, llm: MockLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = shared_data()
    monkeypatch.setenv("TEST_TARGET_KEY", "k")
    config, target = _doctor(llm, data)
    backend = NemoBackend(fake.base_url, poll_interval=0.02, max_poll_interval=0.1)
    fake.fail_next_job = True
    with pytest.raises(NemoJobError) as info:
        backend.run_blocking(config, target)
    assert "fail_next_job" in str(info.value) and info.value.logs and "ERROR" in info.value.logs
    assert info.value.job is not None and info.value.job["status"] == "failed"

    fake.hold_jobs.set()

    def interrupt(task: str, done: int, total: int | None) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        backend.run_blocking(config, target, progress=interrupt)
    job_id = fake.job_requests and list(fake.jobs)[-1]
    status = _poll_status(fake, str(job_id))
    assert status == "cancelled"
    fake.hold_jobs.clear()
    assert os.environ["TEST_TARGET_KEY"] == "k"


def _poll_status(fake: FakeNemoService, job_id: str) -> str:
    return str(fake.wait_for_job(job_id, "cancelled", "failed", "completed")["status"])
