"""Shared fixtures: a throw-away MLflow store per test, the loopback mock LLM, the seed dataset.

A fresh sqlite store costs ~2-8 s of Alembic migrations, so one migrated database is made per session
and copied per test (0.05 s), as MLflow's own test suite does. Each test runs in its own temporary
working directory, so MLflow's default artifact root (``./mlruns``) lands there too and a test can scan
everything a run wrote.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.paths import shared_data


@pytest.fixture(scope="session")
def _migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    from mlflow.tracking import MlflowClient

    d = tmp_path_factory.mktemp("mlflow-template")
    old = os.getcwd()
    os.chdir(d)  # the Default experiment's artifact location is resolved against the cwd at creation
    try:
        MlflowClient(tracking_uri=f"sqlite:///{d}/mlflow.db").search_experiments()
    finally:
        os.chdir(old)
    return d / "mlflow.db"


@pytest.fixture
def mlflow_uri(_migrated_mlflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``sqlite:///<tmp>/mlflow.db``, with artifacts under ``<tmp>/mlruns`` (the test's cwd)."""
    db = tmp_path / "mlflow.db"
    shutil.copyfile(_migrated_mlflow_db, db)
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{db}"
    # Anything that falls back to MLflow's default resolution lands here too, never in the user's store.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    # Each per-sample trace costs MLflow ~0.1 s; tests that look at traces ask for them explicitly.
    monkeypatch.setenv("NEMO_JUDGE_TRACE_SAMPLES", "0")
    return uri


@pytest.fixture
def judge_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private response cache directory, so tests never read or fill the user's cache."""
    d = tmp_path / "judge-cache"
    monkeypatch.setenv("NEMO_JUDGE_CACHE_DIR", str(d))
    return d


@pytest.fixture
def mock_llm() -> Iterator[Any]:
    """The loopback OpenAI-compatible mock server (zero latency), started for one test."""
    from mlflow_nemo_judge.testing.mock_llm import MockLLMServer

    with MockLLMServer() as server:
        yield server


@pytest.fixture
def consults_path() -> Path:
    """The doctor-consult seed dataset: the package's own synthetic demo data."""
    return shared_data()


def mock_target(server: Any, model_id: str, **endpoint: Any) -> dict[str, Any]:
    """A ``model`` target pointing at one of the mock server's models."""
    return {
        "type": "model",
        "model": {
            "api_endpoint": {"url": f"{server.base_url}/chat/completions", "model_id": model_id, **endpoint}
        },
    }


@pytest.fixture
def seed_eval(mock_llm: Any, consults_path: Path) -> dict[str, Any]:
    """The seed config judged by ``mock/judge`` on the seed data, with the two mock summarizers."""
    from tests.fixtures.seed_config import seed_config

    return {
        "config": seed_config(
            judge_url=f"{mock_llm.base_url}/chat/completions",
            judge_model="mock/judge",
            files_url=str(consults_path),
        ),
        "faithful": mock_target(mock_llm, "mock/faithful-summarizer"),
        "poor": mock_target(mock_llm, "mock/poor-summarizer"),
        "server": mock_llm,
    }


def isolate_nemo_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No NeMo URL, HF token/endpoint/offline mode or proxy from the developer's shell may leak into a
    test that talks to the loopback fake NeMo service; the response and Hub caches are the test's own."""
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
    monkeypatch.setenv("NEMO_JUDGE_CACHE_DIR", str(tmp_path / "cache"))
    from huggingface_hub import constants

    # huggingface_hub reads its env once at import: patch the constants it consults at call time.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
