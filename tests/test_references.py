"""Stored NeMo entities given as ``namespace/name``: configs and targets from the Evaluator, datasets and
models from the Entity Store, on both backends, against the loopback FAKE NeMo service and mock models."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlflow_nemo_judge.backends.nemo import NemoBackend
from mlflow_nemo_judge.backends.nemo.client import NemoClient
from mlflow_nemo_judge.cli import main
from mlflow_nemo_judge.config import load_config, load_target
from mlflow_nemo_judge.config.references import inline_entities, is_reference, references_of
from mlflow_nemo_judge.errors import ConfigError
from mlflow_nemo_judge.pipeline import evaluate
from mlflow_nemo_judge.testing.fake_nemo import FakeNemoService
from mlflow_nemo_judge.testing.mock_llm import MockLLMServer
from mlflow_nemo_judge.tracking.identity import resume_tags
from mlflow_nemo_judge.tracking.params import build_params
from tests.conftest import isolate_nemo_env
from tests.fixtures.paths import shared_data
from tests.fixtures.seed_config import seed_config

NS = "team"
TASK = "consult_summary_eval"
ROWS = 6


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_nemo_env(monkeypatch, tmp_path)


@pytest.fixture()
def llm() -> Iterator[MockLLMServer]:
    with MockLLMServer() as server:
        yield server


@pytest.fixture()
def fake() -> Iterator[FakeNemoService]:
    with FakeNemoService(queue_delay=0.0) as svc:
        yield svc


def _store(fake: FakeNemoService, llm: MockLLMServer, tmp_path: Path) -> dict[str, str]:
    """Upload the seed rows and store the dataset, a judge config, a target and a model by name."""
    rows = [json.loads(line) for line in shared_data().read_text().splitlines()[:ROWS]]
    src = tmp_path / "consults.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    client = NemoClient(fake.base_url)
    client.ensure_namespace(NS)
    files_url = client.upload_files(NS, "consults", [(src, "consults.jsonl")])
    client.create_dataset("consults", NS, files_url)
    cfg = seed_config(judge_url=f"{llm.base_url}/chat/completions", judge_model="mock/judge")
    cfg["tasks"][TASK]["dataset"] = f"{NS}/consults"
    client.create_config({**cfg, "name": "consult-judge", "namespace": NS})
    endpoint = {"url": f"{llm.base_url}/chat/completions", "model_id": "mock/faithful-summarizer"}
    client.create_target(
        {"type": "model", "name": "summarizer", "namespace": NS, "model": {"api_endpoint": endpoint}}
    )
    client.request(
        "POST",
        f"{fake.base_url}/v1/models",
        json_body={
            "name": "faithful",
            "namespace": NS,
            "api_endpoint": {**endpoint, "api_key": "sk-stored-key"},
        },
    )
    client.close()
    return {"url": fake.base_url}


def _nemo(fake: FakeNemoService) -> dict[str, Any]:
    return {"evaluator_url": fake.base_url}


def test_reference_shape() -> None:
    assert is_reference("team/consult-judge") and is_reference("a.b/c_d")
    assert not is_reference("config.yaml") and not is_reference("team/config.yaml")
    assert not is_reference("./team/x") and not is_reference("/abs/x") and not is_reference("a/b/c")
    assert not is_reference("hf://datasets/a/b")


def test_nemo_backend_submits_the_references_themselves(
    fake: FakeNemoService, llm: MockLLMServer, tmp_path: Path
) -> None:
    _store(fake, llm, tmp_path)
    config = load_config(f"{NS}/consult-judge", nemo=_nemo(fake))
    target = load_target(f"{NS}/summarizer", nemo=_nemo(fake))
    # The loaded objects are the stored content (no envelope), and remember where they came from.
    assert config.tasks is not None and config.tasks[TASK].dataset == f"{NS}/consults"
    assert "id" not in config.to_dict() and "created_at" not in target.to_dict()
    assert references_of(config) == {"config": f"{NS}/consult-judge"}

    backend = NemoBackend(fake.base_url, poll_interval=0.02, max_poll_interval=0.1, work_dir=tmp_path / "n")
    result = backend.run_blocking(config, target)
    body = fake.job_requests[0]
    assert body["config"] == f"{NS}/consult-judge" and body["target"] == f"{NS}/summarizer"
    assert result.usage.samples == ROWS
    assert [r.item_id for r in result.iter_samples()] == [f"D00{i}" for i in range(1, ROWS + 1)]

    # A --limit changes what runs, so the resolved content goes inline (the stored one has no limit).
    limited = NemoBackend(fake.base_url, limit=2)
    cfg_body, tgt_body = limited.submission(config, target)
    assert isinstance(cfg_body, dict) and cfg_body["params"]["limit_samples"] == 2
    assert cfg_body["tasks"][TASK]["dataset"] == f"{NS}/consults"  # NeMo still resolves the dataset
    assert tgt_body == f"{NS}/summarizer"


def test_local_backend_resolves_the_same_references(
    fake: FakeNemoService, llm: MockLLMServer, tmp_path: Path
) -> None:
    _store(fake, llm, tmp_path)
    ev = evaluate(f"{NS}/consult-judge", f"{NS}/summarizer", tracking=False, nemo=_nemo(fake), cache=False)
    local = ev.result
    assert local.backend == "local" and local.usage.samples == ROWS
    backend = NemoBackend(fake.base_url, poll_interval=0.02, max_poll_interval=0.1, work_dir=tmp_path / "n")
    remote = backend.run_blocking(
        load_config(f"{NS}/consult-judge", nemo=_nemo(fake)),
        load_target(f"{NS}/summarizer", nemo=_nemo(fake)),
    )
    by_local = [(r.item_id, r.output_text) for r in local.iter_samples()]
    assert by_local == [(r.item_id, r.output_text) for r in remote.iter_samples()]
    # The dataset was read from the Data Store the Entity Store points at, never from huggingface.co.
    assert any(p.startswith("/v1/hf/") for _, p in fake.requests)
    assert ("GET", f"/v1/datasets/{NS}/consults") in fake.requests


def test_model_references_resolve_locally_and_are_submitted_as_written(
    fake: FakeNemoService, llm: MockLLMServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _store(fake, llm, tmp_path)
    config = load_config(f"{NS}/consult-judge", nemo=_nemo(fake))
    cfg = config.to_dict()
    cfg["tasks"][TASK]["metrics"]["completeness"]["params"]["model"] = f"{NS}/faithful"
    judged = load_config(cfg)
    target = load_target({"type": "model", "model": f"{NS}/faithful"})

    with caplog.at_level(logging.WARNING):
        local_t = inline_entities(target, _nemo(fake))
    assert local_t.endpoint is not None and local_t.endpoint.model_id == "mock/faithful-summarizer"
    # NeMo masks the stored key; the mask is never sent as a key (and the user is told).
    assert local_t.endpoint.api_key is None and "masked" in caplog.text
    assert references_of(local_t) == {"target.model": f"{NS}/faithful"}
    local_c = inline_entities(judged, _nemo(fake))
    got = local_c.to_dict()["tasks"][TASK]
    assert got["dataset"]["files_url"] == f"hf://datasets/{NS}/consults"
    assert got["dataset"]["hf_endpoint"] == f"{fake.base_url}/v1/hf"
    assert got["metrics"]["completeness"]["params"]["model"]["api_endpoint"]["model_id"] == (
        "mock/faithful-summarizer"
    )
    assert references_of(local_c)[f"tasks.{TASK}.metrics.completeness.params.model"] == f"{NS}/faithful"

    # The nemo backend submits the model reference as written: NeMo resolves it.
    _, tgt_body = NemoBackend(fake.base_url).submission(judged, target)
    assert isinstance(tgt_body, dict) and tgt_body["model"] == f"{NS}/faithful"

    ev = evaluate(judged, target, tracking=False, nemo=_nemo(fake), cache=False)
    assert ev.result.usage.samples == ROWS


def test_identity_follows_the_stored_content_and_params_record_the_reference(
    fake: FakeNemoService, llm: MockLLMServer, tmp_path: Path
) -> None:
    _store(fake, llm, tmp_path)
    ref = f"{NS}/consult-judge"
    first = load_config(ref, nemo=_nemo(fake))
    again = load_config(ref, nemo=_nemo(fake))
    assert first.sha256() == again.sha256()  # the envelope (ids, timestamps) is not content
    NemoClient(fake.base_url).update_config(NS, "consult-judge", {"description": "edited"})
    edited = load_config(ref, nemo=_nemo(fake))
    assert edited.sha256() != first.sha256()

    target = inline_entities(load_target(f"{NS}/summarizer", nemo=_nemo(fake)), _nemo(fake))
    local = inline_entities(edited, _nemo(fake))
    params = build_params(local, target, backend="local", limit=None, parallelism=None)
    assert params["reference/config"] == ref and params["reference/target"] == f"{NS}/summarizer"
    assert params[f"reference/tasks.{TASK}.dataset"] == f"{NS}/consults"
    tags = resume_tags(local, target, None, None)
    assert f"config={ref}" in tags["nemo_judge.references"]


def test_bad_references(fake: FakeNemoService, llm: MockLLMServer, tmp_path: Path, monkeypatch: Any) -> None:
    _store(fake, llm, tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(f"{NS}/nope", nemo=_nemo(fake))
    assert (
        str(err.value)
        == f"config: config {NS}/nope not found at {fake.base_url}/v1/evaluation/configs/{NS}/nope"
    )
    with pytest.raises(
        ConfigError, match=rf"target {NS}/nope not found at .*/v1/evaluation/targets/{NS}/nope"
    ):
        load_target(f"{NS}/nope", nemo=_nemo(fake))
    with pytest.raises(
        ConfigError, match=r"^target.model: model team/gone not found at .*/v1/models/team/gone"
    ):
        inline_entities(load_target({"type": "model", "model": f"{NS}/gone"}), _nemo(fake))
    cfg = load_config(f"{NS}/consult-judge", nemo=_nemo(fake)).to_dict()
    cfg["tasks"][TASK]["dataset"] = f"{NS}/missing"
    with pytest.raises(ConfigError, match=rf"^tasks.{TASK}.dataset: dataset {NS}/missing not found at .*"):
        inline_entities(load_config(cfg), _nemo(fake))

    # Without NeMo URLs a ns/name that is no file is refused, naming both readings.
    with pytest.raises(ConfigError, match=r"is not a file, and as a NeMo config reference .*--nemo-url"):
        load_config(f"{NS}/consult-judge")
    # A path that exists is a file, even when NeMo URLs are set.
    monkeypatch.chdir(tmp_path)
    (tmp_path / NS).mkdir()
    (tmp_path / NS / "local").write_text(
        json.dumps({"type": "model", "model": {"api_endpoint": {"url": "http://x", "model_id": "m"}}})
    )
    assert load_target(f"{NS}/local", nemo=_nemo(fake)).endpoint is not None


def test_cli_accepts_references_where_it_accepts_files(
    fake: FakeNemoService, llm: MockLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _store(fake, llm, tmp_path)
    url = fake.base_url
    assert main(["validate", f"{NS}/consult-judge", "--target", f"{NS}/summarizer", "--nemo-url", url]) == 0
    assert f"{ROWS} row(s) checked" in capsys.readouterr().out
    args = ["validate", f"{NS}/consult-judge", "--backend", "nemo", "--nemo-url", url]
    assert main([*args, "--target", f"{NS}/summarizer"]) == 0
    assert main(["validate", f"{NS}/consult-judge"]) == 2
    assert "needs NeMo URLs" in capsys.readouterr().err
    assert main(["validate", f"{NS}/nope", "--nemo-url", url]) == 2
    assert f"config {NS}/nope not found at {url}/v1/evaluation/configs/{NS}/nope" in capsys.readouterr().err
