"""Live evaluation (``POST /v1/evaluation/live``): the FAKE service's route parsed strictly with the SDK's
``LiveEvaluation``, ``validate --backend nemo --live`` as a real dry run, and small ``--nemo-live`` runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nemo_microservices.types.live_evaluation import LiveEvaluation

from mlflow_nemo_judge.backends.nemo import NemoBackend, NemoJobError
from mlflow_nemo_judge.backends.nemo.live import LIVE_MAX_ROWS
from mlflow_nemo_judge.cli import main
from mlflow_nemo_judge.config import load_config, load_target
from mlflow_nemo_judge.errors import ConfigError, NemoServiceError
from mlflow_nemo_judge.testing.fake_nemo import FakeNemoService

# The live notebook's first example, in our own words: does the answer contain the expected text?
CONFIG = {
    "type": "custom",
    "tasks": {
        "qa": {
            "type": "data",
            "metrics": {
                "accuracy": {
                    "type": "string-check",
                    "params": {"check": ["{{answer}}", "contains", "{{expected}}"]},
                }
            },
        }
    },
}


def _rows(n: int) -> list[dict[str, Any]]:
    # Even rows hit, odd rows miss: any prefix of even length has a mean of exactly 0.5.
    return [{"answer": "yes" if i % 2 == 0 else "no", "expected": "yes"} for i in range(n)]


@pytest.fixture()
def fake() -> Iterator[FakeNemoService]:
    with FakeNemoService(queue_delay=0.0) as svc:
        yield svc


def _value(tasks: Any) -> Any:
    return tasks["qa"]["metrics"]["accuracy"]["scores"]["string-check"]["value"]


def test_the_live_route_answers_synchronously_in_the_sdk_shape_and_keeps_nothing(
    fake: FakeNemoService,
) -> None:
    body = {"config": CONFIG, "target": {"type": "rows", "rows": _rows(3)}}
    answer = httpx.post(f"{fake.base_url}/v1/evaluation/live", json=body, timeout=30)
    assert answer.status_code == 200
    live = LiveEvaluation.model_validate_json(answer.text, strict=True)
    assert live.status == "completed" and live.result is not None and live.result.tasks is not None
    assert live.result.tasks["qa"].metrics["accuracy"].scores["string-check"].value == pytest.approx(2 / 3)
    assert not fake.jobs and not fake.results  # "no evaluation job is persisted"


@pytest.mark.parametrize(
    ("target", "where"),
    [
        ({"type": "rows", "rows": _rows(LIVE_MAX_ROWS + 1)}, "rows"),
        (
            {"type": "model", "model": {"api_endpoint": {"url": "http://127.0.0.1:9/v1", "model_id": "m"}}},
            "type",
        ),
    ],
)
def test_the_live_route_refuses_what_the_service_refuses(
    fake: FakeNemoService, target: dict[str, Any], where: str
) -> None:
    answer = httpx.post(
        f"{fake.base_url}/v1/evaluation/live", json={"config": CONFIG, "target": target}, timeout=30
    )
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"][-1] == where


def test_a_dry_run_submits_the_first_ten_rows_and_returns_the_services_scores(fake: FakeNemoService) -> None:
    backend = NemoBackend(fake.base_url)
    answer = backend.live_check(load_config(CONFIG), load_target({"type": "rows", "rows": _rows(25)}))
    assert len(fake.live.requests[0]["target"]["rows"]) == LIVE_MAX_ROWS
    assert _value(answer["result"]["tasks"]) == 0.5
    assert (
        answer["result"]["tasks"]["qa"]["metrics"]["accuracy"]["scores"]["string-check"]["stats"]["count"]
        == 10
    )


def test_a_dry_run_of_a_model_target_is_refused_before_any_call(fake: FakeNemoService) -> None:
    target = {"type": "model", "model": {"api_endpoint": {"url": "http://127.0.0.1:9/v1", "model_id": "m"}}}
    with pytest.raises(ConfigError, match="data-source targets only"):
        NemoBackend(fake.base_url).live_check(load_config(CONFIG), load_target(target))
    assert not fake.live.requests


def test_a_failed_live_evaluation_is_an_error_with_the_services_message(fake: FakeNemoService) -> None:
    fake.fail_next_job = True
    with pytest.raises(NemoJobError, match="live evaluation failed: simulated failure"):
        NemoBackend(fake.base_url).live_check(
            load_config(CONFIG), load_target({"type": "rows", "rows": _rows(2)})
        )


def test_a_small_run_is_answered_live_and_a_large_one_refused(fake: FakeNemoService) -> None:
    backend = NemoBackend(fake.base_url, live=True)
    result = backend.run_blocking(load_config(CONFIG), load_target({"type": "rows", "rows": _rows(4)}))
    nemo = result.to_nemo_dict()
    assert _value(nemo["tasks"]) == 0.5
    assert nemo["tasks"]["qa"]["metrics"]["accuracy"]["scores"]["string-check"]["stats"]["count"] == 4
    assert not fake.jobs  # no job was created
    with pytest.raises(ConfigError, match="at most 10 rows"):
        backend.run_blocking(load_config(CONFIG), load_target({"type": "rows", "rows": _rows(11)}))
    with pytest.raises(ConfigError, match="--limit N"):
        backend.run_blocking(load_config(CONFIG), load_target({"type": "dataset", "dataset": "ns/data"}))
    assert len(fake.live.requests) == 1


def _files(tmp_path: Path, target: dict[str, Any]) -> tuple[str, str]:
    cfg, tgt = tmp_path / "config.json", tmp_path / "target.json"
    cfg.write_text(json.dumps(CONFIG))
    tgt.write_text(json.dumps(target))
    return str(cfg), str(tgt)


def test_validate_live_on_the_command_line(
    fake: FakeNemoService, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, tgt = _files(tmp_path, {"type": "rows", "rows": _rows(12)})
    code = main(
        ["validate", cfg, "--target", tgt, "--backend", "nemo", "--live", "--nemo-url", fake.base_url]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "qa/accuracy/string-check = 0.5 (n=10)" in out
    assert len(fake.live.requests) == 1


def test_validate_live_reports_the_services_refusal(fake: FakeNemoService, tmp_path: Path) -> None:
    cfg, tgt = _files(tmp_path, {"type": "rows", "rows": _rows(2)})
    Path(cfg).write_text(json.dumps({**CONFIG, "type": "custom-typo"}))  # NeMo runs only `custom` live
    backend = NemoBackend(fake.base_url)
    with pytest.raises(NemoServiceError, match="only 'custom' configs") as info:
        backend.live_check(load_config(cfg), load_target(tgt))
    assert info.value.status == 422
