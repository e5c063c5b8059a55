"""Static checks of the docker setup: no container engine runs in CI, so structure is what we can test."""

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
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


def _run_server_command(compose, tmp_path: Path, **env: str) -> dict:
    """Run the mlflow service's shell command as its container would, with a stub ``mlflow`` that
    records its argv and the backend URI it was handed: the quoting is checked by a real shell."""
    stubs = tmp_path / "bin"
    stubs.mkdir(parents=True)
    (stubs / "python").symlink_to(sys.executable)  # the image's python, for the password quoting
    stub = stubs / "mlflow"
    stub.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "out = {'argv': sys.argv[1:], 'uri': os.environ.get('MLFLOW_BACKEND_STORE_URI')}\n"
        "open(os.environ['STUB_OUT'], 'w').write(json.dumps(out))\n"
    )
    stub.chmod(0o755)
    (script,) = compose["services"]["mlflow"]["command"]
    # compose turns `$$` into `$` and interpolates any other `$`: the script must hold only escaped ones
    assert "$" not in script.replace("$$", ""), "an unescaped $ would be interpolated by compose"
    out = tmp_path / "argv.json"
    run_env = {"PATH": f"{stubs}:{os.environ['PATH']}", "STUB_OUT": str(out), **env}
    done = subprocess.run(
        ["/bin/sh", "-c", script.replace("$$", "$")], env=run_env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(out.read_text()))


def _allowed_hosts(argv: list[str]) -> list[str]:
    return argv[argv.index("--allowed-hosts") + 1].split(",")


def test_mlflow_server_uses_postgres_and_s3(compose, tmp_path):
    from sqlalchemy.engine import make_url

    password = "p@ss:w/rd#50%"  # made up: every character that breaks a URI unless quoted
    got = _run_server_command(compose, tmp_path, POSTGRES_PASSWORD=password, MLFLOW_EXTRA_ALLOWED_HOSTS="")
    url = make_url(got["uri"])
    assert (url.drivername, url.username, url.password) == ("postgresql+psycopg2", "mlflow", password)
    assert (url.host, url.port, url.database) == ("postgres", 5432, "mlflow")
    argv = got["argv"]
    assert password not in " ".join(argv)  # the URI travels in the environment, not the process list
    assert argv[0] == "server" and "--serve-artifacts" in argv
    assert argv[argv.index("--artifacts-destination") + 1] == "s3://mlflow"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    env = compose["services"]["mlflow"]["environment"]
    assert env["MLFLOW_S3_ENDPOINT_URL"].startswith("http://minio:")


def test_allowed_hosts_keep_mlflows_defaults_and_add_the_service_name(compose, tmp_path):
    from mlflow.server.security_utils import get_default_allowed_hosts, is_allowed_host_header

    plain = _allowed_hosts(
        _run_server_command(compose, tmp_path / "a", POSTGRES_PASSWORD="x", MLFLOW_EXTRA_ALLOWED_HOSTS="")[
            "argv"
        ]
    )
    assert "" not in plain  # no empty entry when no extra host is set
    assert set(get_default_allowed_hosts()) <= set(plain)  # --allowed-hosts replaces them otherwise
    # the runner reaches the server by service name; teammates by localhost or a LAN address
    for host in (
        "mlflow:5000",
        "localhost:5000",
        "127.0.0.1:5000",
        "192.168.1.20:5000",
        "10.0.0.7:5000",
        "172.20.0.5:5000",
    ):
        assert is_allowed_host_header(plain, host), host
    assert not is_allowed_host_header(plain, "evil.example.com")
    extra = _allowed_hosts(
        _run_server_command(
            compose,
            tmp_path / "b",
            POSTGRES_PASSWORD="x",
            MLFLOW_EXTRA_ALLOWED_HOSTS="mlflow.example.com,mlflow.example.com:443",
        )["argv"]
    )
    assert extra == [*plain, "mlflow.example.com", "mlflow.example.com:443"]


def _dockerfile() -> str:
    return (DOCKER / "Dockerfile").read_text()


def test_runner_mlflow_is_the_servers_version(compose):
    text = _dockerfile()
    pinned = re.search(r"^ARG MLFLOW_VERSION=(\S+)$", text, re.M).group(1)
    image = compose["services"]["mlflow"]["image"]
    assert image == f"ghcr.io/mlflow/mlflow:v{pinned}-full"
    (install,) = re.findall(r"^RUN pip install (.+)$", text, re.M)
    assert '"mlflow==${MLFLOW_VERSION}"' in install
    assert "boto3" not in install  # artifacts go through the server's proxy; only the server talks S3


def test_cache_volume_mount_point_belongs_to_the_runner(compose):
    text = _dockerfile()
    cache = re.search(r"^ENV NEMO_JUDGE_CACHE_DIR=(\S+)$", text, re.M).group(1)
    mounts = [v for v in compose["services"]["evaluate"]["volumes"] if v.startswith("judge-cache:")]
    assert mounts == [f"judge-cache:{cache}"]
    # made and chowned as root, before the image switches to the runner user
    setup = text.index('mkdir -p "$NEMO_JUDGE_CACHE_DIR" && chown -R judge:judge /home/judge/.cache')
    assert cache.startswith("/home/judge/.cache/") and setup < text.index("USER judge")


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, closely enough: the last pattern matching the path or a parent folder decides;
    ``**/`` matches at any depth."""
    parts = path.split("/")
    hit = False
    for raw in patterns:
        pat = raw.lstrip("!").strip("/")
        for i in range(1, len(parts) + 1):
            heads = ["/".join(parts[:i])]
            if pat.startswith("**/"):
                heads = ["/".join(parts[j:i]) for j in range(i)]
            if any(fnmatch.fnmatchcase(h, pat.removeprefix("**/")) for h in heads):
                hit = not raw.startswith("!")
                break
    return hit


def test_dockerignore_keeps_the_build_context_small_and_secret_free():
    patterns = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    for path in (
        ".venv/lib/python3.11/site-packages/x.py",
        "mlruns/0/meta.yaml",
        ".git/HEAD",
        "docker/.env",
        "mlflow_nemo_judge/__pycache__/cli.cpython-311.pyc",
        ".mypy_cache/x",
        ".pytest_cache/v",
    ):
        assert _ignored(path, patterns), path
    # what the Dockerfile copies stays in the context
    copied = re.findall(r"^COPY\s+(.+?)\s+\S+$", _dockerfile(), re.M)
    sources = [src for line in copied for src in line.split()]
    assert sources == ["pyproject.toml", "README.md", "mlflow_nemo_judge", "examples"]
    for src in [*sources, "mlflow_nemo_judge/cli.py", "examples/doctor_consults/config.yaml"]:
        assert not _ignored(src, patterns), src


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
