"""Static checks of the docker setup: no container engine runs in CI, so structure is what we can test."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from mlflow_nemo_judge.cli import build_parser

DOCKER = Path(__file__).resolve().parents[1] / "docker"
REPO = DOCKER.parent


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_services_and_images_are_pinned(compose):
    services = compose["services"]
    assert {"postgres", "minio", "minio-bucket", "mlflow", "evaluate"} <= set(services)
    for name, svc in services.items():
        if "image" in svc:
            image = svc["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned image {image}"
    assert services["mlflow"]["image"].startswith("ghcr.io/mlflow/mlflow:v3.")


def test_long_running_services_have_health_checks_and_volumes(compose):
    services = compose["services"]
    for name in ("postgres", "minio", "mlflow"):
        hc = services[name].get("healthcheck")
        assert hc and hc["test"], f"{name} has no health check"
    assert set(compose["volumes"]) >= {"postgres-data", "minio-data"}
    assert any(v.startswith("postgres-data:") for v in services["postgres"]["volumes"])
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["evaluate"]["depends_on"]["mlflow"]["condition"] == "service_healthy"


def test_mlflow_server_uses_postgres_and_s3(compose):
    cmd = " ".join(compose["services"]["mlflow"]["command"])
    assert "--backend-store-uri postgresql://" in cmd
    assert "--artifacts-destination s3://mlflow" in cmd
    assert "mlflow:5000" in cmd  # the runner reaches it by service name; the host header must be allowed
    env = compose["services"]["mlflow"]["environment"]
    assert env["MLFLOW_S3_ENDPOINT_URL"].startswith("http://minio:")


def test_runner_command_is_a_valid_cli_invocation(compose):
    svc = compose["services"]["evaluate"]
    argv = svc["command"]
    args = build_parser().parse_args(argv)
    assert args.command == "run"
    # the files it names exist in the image (copied from the repository's examples/)
    for path in [args.config, *args.target]:
        assert (REPO / path).exists(), path
    assert svc["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_no_secret_values_in_compose(compose):
    env = compose["services"]["evaluate"]["environment"]
    for key in ("OPENAI_API_KEY", "NVIDIA_API_KEY"):
        assert re.fullmatch(r"\$\{" + key + r":-\}", env[key]), env[key]


def test_dockerfile_is_slim_pinned_and_non_root():
    text = (DOCKER / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", base), base
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    entry = re.search(r"^ENTRYPOINT\s+(.+)$", text, re.M).group(1)
    assert shlex.split(entry.strip("[]").replace(",", " "))[0].strip('"') == "mlflow-nemo-judge"
