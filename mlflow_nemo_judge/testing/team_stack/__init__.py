"""A real team stack on loopback for the tests: PostgreSQL, an S3-compatible store and ``mlflow server``.

``docker/compose.yaml`` gives a team MLflow on PostgreSQL + MinIO; sqlite ignores ``varchar`` limits and
a local artifact folder accepts anything, so only that stack shows what a team really gets. No container
engine runs in CI, so this package starts the same three pieces from what the project installs:

* **PostgreSQL** from the machine's server binaries (``initdb`` on PATH or ``/usr/lib/postgresql/*/bin``),
  else the ones the ``pgserver`` wheel ships (a dev extra). PostgreSQL refuses to run as root, so as root
  it runs as ``nobody`` from a data folder chowned to it. The password always holds ``@:/#%`` to prove
  every URI built from it is quoted.
* **An S3-compatible object store**: moto's ``ThreadedMotoServer``, with a bucket made through boto3.
* **``mlflow server``** (the installed MLflow) with ``--backend-store-uri postgresql+psycopg2://…``
  (passed in the environment, so the password is in no process list), ``--artifacts-destination
  s3://…`` and ``--serve-artifacts``: clients upload through the server and need no S3 credentials,
  as the compose runner does.

Everything listens on 127.0.0.1 only, each start is bounded (``START_TIMEOUT``), a start failure names
the piece that failed and quotes its log, and everything is torn down on exit.

Modules: ``postgres`` (binaries, cluster, server), ``processes`` (ports, waits, stops, log tails); the
S3 store, the MLflow server and the stack itself live here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_nemo_judge.testing.team_stack.postgres import (
    PASSWORD_SPECIALS,
    Postgres,
    find_postgres_bin,
    pgserver_bin,
    postgres_bin_candidates,
    start_postgres,
)
from mlflow_nemo_judge.testing.team_stack.processes import (
    START_TIMEOUT,
    TeamStackError,
    free_port,
    log_tail,
    stop_group,
    wait_until,
)

__all__ = [
    "PASSWORD_SPECIALS",
    "START_TIMEOUT",
    "Postgres",
    "TeamStack",
    "TeamStackError",
    "find_postgres_bin",
    "pgserver_bin",
    "postgres_bin_candidates",
    "start_postgres",
    "start_team_stack",
]

_REGION = "us-east-1"


@dataclass(frozen=True)
class TeamStack:
    """The running stack: the tracking URI to hand the package, and the S3 side to check what landed."""

    tracking_uri: str
    database: Postgres
    s3_endpoint_url: str
    bucket: str
    artifact_prefix: str
    aws_env: Mapping[str, str] = field(repr=False)
    server_log: Path

    @property
    def artifacts_destination(self) -> str:
        return f"s3://{self.bucket}/{self.artifact_prefix}"

    def s3_client(self) -> Any:
        """A boto3 S3 client on the stack's store, with the stack's fake credentials passed explicitly."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint_url,
            region_name=_REGION,
            aws_access_key_id=self.aws_env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.aws_env["AWS_SECRET_ACCESS_KEY"],
        )

    def s3_keys(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket under ``prefix`` (all pages)."""
        pages = self.s3_client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


# ------------------------------------------------------------------------------------ S3 (moto server)


@contextlib.contextmanager
def _start_s3(bucket: str, aws_env: Mapping[str, str]) -> Iterator[str]:
    import boto3
    from moto.server import ThreadedMotoServer

    # werkzeug (moto's HTTP server) logs every request at INFO to stderr even with verbose=False: a
    # benchmark or a failing test's output would drown in S3 PUT lines.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    try:
        server.start()
    except Exception as exc:  # moto raises whatever werkzeug met while binding
        raise TeamStackError(f"S3 (moto) on 127.0.0.1: did not start: {exc}") from exc
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        try:
            boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name=_REGION,
                aws_access_key_id=aws_env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=aws_env["AWS_SECRET_ACCESS_KEY"],
            ).create_bucket(Bucket=bucket)
        except Exception as exc:
            raise TeamStackError(
                f"S3 (moto) on {endpoint}: could not create bucket {bucket!r}: {exc}"
            ) from exc
        yield endpoint
    finally:
        server.stop()


# ------------------------------------------------------------------------------------- mlflow server


def _mlflow_command() -> list[str]:
    exe = Path(sys.executable).parent / "mlflow"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]


@contextlib.contextmanager
def _start_mlflow(
    database: Postgres, destination: str, env: Mapping[str, str], log: Path, timeout: float
) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [*_mlflow_command(), "server", "--artifacts-destination", destination, "--serve-artifacts"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    try:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
    except OSError as exc:
        raise TeamStackError(f"mlflow server: cannot run {cmd[0]}: {exc}") from None
    try:

        def healthy() -> bool:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                return bool(r.read() == b"OK")

        why = wait_until(healthy, proc, timeout)
        if why is not None:
            raise TeamStackError(f"mlflow server on {url} {why}; {log}:\n{log_tail(log, database.password)}")
        yield url
    finally:
        stop_group(proc)


def _server_env(database: Postgres, s3_endpoint: str, aws_env: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env.update(aws_env)
    env.update(
        {
            # --backend-store-uri's environment form: no password in `ps` or in the server's argv log
            "MLFLOW_BACKEND_STORE_URI": database.uri(),
            "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
    )
    return env


@contextlib.contextmanager
def start_team_stack(
    work_dir: Path, *, bucket: str = "mlflow", timeout: float = START_TIMEOUT
) -> Iterator[TeamStack]:
    """PostgreSQL + S3 (moto) + ``mlflow server`` on loopback; logs in ``work_dir``; all stopped on exit."""
    work_dir.mkdir(parents=True, exist_ok=True)
    aws_env = {
        "AWS_ACCESS_KEY_ID": "team-stack-fake-key-id",
        "AWS_SECRET_ACCESS_KEY": "team-stack-fake-" + secrets.token_hex(8),
        "AWS_DEFAULT_REGION": _REGION,
        # never ask a cloud metadata endpoint or read a developer's ~/.aws for anything
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    with contextlib.ExitStack() as stack:
        database = stack.enter_context(start_postgres(work_dir, timeout=timeout))
        s3 = stack.enter_context(_start_s3(bucket, aws_env))
        log = work_dir / "mlflow-server.log"
        prefix = "artifacts"
        env = _server_env(database, s3, aws_env)
        url = stack.enter_context(_start_mlflow(database, f"s3://{bucket}/{prefix}", env, log, timeout))
        yield TeamStack(url, database, s3, bucket, prefix, aws_env, log)
