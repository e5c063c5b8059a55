"""End to end: no secret byte reaches the MLflow store, the cache, the temp dir, stdout or stderr.

The CLI runs in a subprocess with ``--verbose`` (every logger at DEBUG, httpx's included), with
``TMPDIR``, ``HOME``, the response cache and the tracking store all under ``tmp_path``, against a
loopback OpenAI-compatible server written here that, like a hostile provider, answers some requests
with a 500 (and, in the failing case, every target request with a 401) whose body ECHOES the request
line, the full URL and every request header. The target and the judge carry every secret form: a
literal ``api_key``, ``api_key_env``, a header value, URL userinfo (user and password), and query
credentials under a listed (``api-key``), an unlisted (``subscription-key``, ``x-token``) and a
harmless-looking name (``route``). Then every byte of every file under ``tmp_path`` (except the input
files, which hold the secrets by design) is scanned for every secret, for its URL-encoded forms, the
Basic-auth form of the userinfo, and any 12-character piece of it (a truncated echo leaks too).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from tests.fixtures.paths import SEED_DATA
from tests.fixtures.seed_config import seed_config

# Fake, distinctive secret strings, one per form (none of them is a real key).
LIT_JUDGE = "sk-litjudge-Q7w9E2r4T6y8"
ENV_TARGET = "nvapi-envtarget-Z3x5C7v9B1n3"
HEADER = "hdrgw-K8j6H4g2F0d1s3"
USER = "svcuser-M2n4B6v8X0"
PASSWORD = "pw-P9o7I5u3Y1t2/+x"  # '/' and '+' so its URL-encoded forms differ from it
Q_API_KEY = "qk-A1s3D5f7G9h2J4"
Q_SUBSCRIPTION = "subk-L4k6J8h0G2f4D6"
Q_XTOKEN = "xtok-R5t7Y9u1I3o5P7"
Q_ROUTE = "rt-Vb5Nm7Qw9Er1Ty3"  # an unlisted, harmless-looking name: masked all the same
SECRETS = {
    "literal api_key": LIT_JUDGE,
    "api_key_env": ENV_TARGET,
    "header value": HEADER,
    "URL user": USER,
    "URL password": PASSWORD,
    "?api-key=": Q_API_KEY,
    "?subscription-key=": Q_SUBSCRIPTION,
    "?x-token=": Q_XTOKEN,
    "?route=": Q_ROUTE,
}
ENV_NAME = "NJ_E2E_TARGET_KEY"
PIECE = 12  # any run of this many characters of a secret counts as a leak


def _forms(secret: str) -> set[bytes]:
    """Every byte form of ``secret`` a leak could take: as is, URL-encoded, and every 12-char piece."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret)}
    forms |= {secret[i : i + PIECE] for i in range(len(secret) - PIECE + 1)}
    return {f.encode() for f in forms}


BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()  # what userinfo becomes on the wire


class _Provider(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = "ok"  # "ok": echo 500s for a few requests; "reject": 401 with the echo for the target
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.hostile_markers: tuple[str, str] = ("", "")

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client closing a kept-alive connection is not the test's business

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _Provider
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep the test's output quiet
        pass

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _echo(self, status: int) -> None:
        # The credential-bearing parts first: a provider's message is cut at a few hundred characters.
        first = ("authorization", "x-gateway-key")
        heads = [f"{k}: {self.headers[k]}" for k in first if self.headers.get(k)]
        heads += [f"{k}: {v}" for k, v in self.headers.items() if k.lower() not in first]
        message = f"rejected {self.requestline} | " + " | ".join(heads)
        self._reply(status, {"error": {"message": message, "type": "invalid_request_error"}})

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        model = body.get("model", "")
        text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        with self.server.lock:
            self.server.requests.append(
                {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "model": model,
                }
            )
        target_marker, judge_marker = self.server.hostile_markers
        if model == "e2e/target":
            if self.server.mode == "reject":
                return self._echo(401)
            if target_marker and target_marker in text:
                return self._echo(500)
            return self._reply(200, _completion(model, "Summary: thirst, urination, weight loss."))
        if judge_marker and judge_marker in text and "correctness" in text:
            return self._echo(500)
        return self._reply(200, _completion(model, "RATING: 4"))


def _completion(model: str, content: str) -> dict[str, Any]:
    return {
        "id": "cmpl-e2e",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


@pytest.fixture
def provider() -> Iterator[_Provider]:
    srv = _Provider()
    rows = [json.loads(line) for line in SEED_DATA.read_text(encoding="utf-8").splitlines()[:4]]
    # Row 2's target call and row 3's correctness judge call always answer the echoing 500.
    srv.hostile_markers = (rows[1]["content"][:60], rows[2]["content"][:60])
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _inputs(tmp_path: Path, provider: _Provider) -> tuple[Path, Path]:
    """The config and target files (they hold the secrets: written outside the scanned folders)."""
    d = tmp_path / "inputs"
    d.mkdir()
    # completeness: a literal key and an unlisted query credential; correctness: userinfo (no key:
    # aiohttp refuses a URL's userinfo together with an Authorization header) and ?subscription-key=.
    cfg = seed_config(
        openai_api_key=LIT_JUDGE,
        judge_url=f"http://{provider.base}/v1/chat/completions?x-token={Q_XTOKEN}",
        judge_model="e2e/judge",
        files_url=str(SEED_DATA),
    )
    correctness = cfg["tasks"]["consult_summary_eval"]["metrics"]["correctness"]["params"]
    correctness["model"] = {
        "api_endpoint": {
            "url": f"http://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@{provider.base}"
            f"/v1/chat/completions?subscription-key={quote(Q_SUBSCRIPTION)}",
            "model_id": "e2e/judge",
        }
    }
    cfg["params"] = {
        "max_retries": 0,
        "parallelism": 2,
    }  # a 500 fails its sample at once: the test stays fast
    target = {
        "type": "model",
        "model": {
            "api_endpoint": {
                "url": f"http://{provider.base}/v1/chat/completions?api-key={Q_API_KEY}&route={Q_ROUTE}"
                "&api-version=2024-02-01",
                "model_id": "e2e/target",
                "api_key_env": ENV_NAME,
                "headers": {"x-gateway-key": HEADER},
            }
        },
    }
    (d / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    (d / "target.json").write_text(json.dumps(target), encoding="utf-8")
    return d / "config.json", d / "target.json"


def _run_cli(
    tmp_path: Path, work: Path, config: Path, target: Path, db: Path
) -> subprocess.CompletedProcess[str]:
    for sub in ("tmp", "home", "cache"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "NEMO_"))}
    env.update(
        {
            "TMPDIR": str(work / "tmp"),
            "HOME": str(work / "home"),
            "NEMO_JUDGE_CACHE_DIR": str(work / "cache"),
            "NEMO_JUDGE_TRACE_SAMPLES": "10",  # traces and assessments are scanned too
            ENV_NAME: ENV_TARGET,
            "NO_PROXY": "*",
        }
    )
    cmd = [
        sys.executable,
        "-m",
        "mlflow_nemo_judge",
        "run",
        str(config),
        "--target",
        str(target),
        "--experiment",
        "secrets-e2e",
        "--tracking-uri",
        f"sqlite:///{db}",
        "--cache-dir",
        str(work / "cache"),
        "--limit",
        "4",
        "--no-progress",
        "--verbose",
    ]
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=150)


def _leaks(root: Path, out: str, err: str) -> list[str]:
    """Which secret forms occur where: every file under ``root`` but the inputs, plus stdout/stderr."""
    found = []
    blobs = {"stdout": out.encode(), "stderr": err.encode()}
    blobs.update({str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()})
    for where, data in blobs.items():
        if where.startswith("inputs"):
            continue
        for form_name, secret in {**SECRETS, "Basic userinfo": BASIC}.items():
            if any(f in data for f in _forms(secret)):
                found.append(f"{form_name} in {where}")
    return found


@pytest.fixture
def store(tmp_path: Path, _migrated_mlflow_db: Path) -> Path:
    """A migrated sqlite store under ``tmp_path`` (a fresh migration costs seconds)."""
    work = tmp_path / "work"
    work.mkdir()
    db = work / "mlflow.db"
    shutil.copyfile(_migrated_mlflow_db, db)
    return db


@pytest.mark.timeout(180)
def test_no_secret_byte_anywhere_after_a_verbose_run_with_echoing_errors(
    tmp_path: Path, provider: _Provider, store: Path
) -> None:
    config, target = _inputs(tmp_path, provider)
    proc = _run_cli(tmp_path, store.parent, config, target, store)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The run really exercised every path: both endpoints called, the credentials sent, echoes answered.
    sent = provider.requests
    assert {r["model"] for r in sent} == {"e2e/target", "e2e/judge"}
    target_req = next(r for r in sent if r["model"] == "e2e/target")
    assert Q_API_KEY in target_req["path"] and Q_ROUTE in target_req["path"]
    assert target_req["headers"].get("x-gateway-key") == HEADER
    assert target_req["headers"].get("authorization") == f"Bearer {ENV_TARGET}"
    # The two judges share a model id and are called at once: told apart by their own query credential.
    judges = [r for r in sent if r["model"] == "e2e/judge"]
    literal = next(r for r in judges if "x-token=" in r["path"])
    assert literal["headers"].get("authorization") == f"Bearer {LIT_JUDGE}"
    userinfo = next(r for r in judges if "subscription-key=" in r["path"])
    assert str(userinfo["headers"].get("authorization", "")).startswith("Basic ")
    assert "DEBUG" in proc.stderr  # --verbose really logged at DEBUG
    files = [p for p in store.parent.rglob("*") if p.is_file()]
    samples = [p for p in files if p.name == "samples.jsonl"]
    assert samples, "the run logged no samples artifact"
    # The hostile echoes (target row 2, correctness judge row 3) reached the record, masked.
    echoed = [line for line in samples[0].read_text(encoding="utf-8").splitlines() if "rejected POST" in line]
    assert len(echoed) == 2 and all("******" in line for line in echoed)
    assert (store.parent / "cache").exists()
    # Leaks in files other engineers own (engine/http error texts, tracking artifacts) show up here too;
    # the report names where each form leaked, so the failing form and file are read off the message.
    leaks = _leaks(tmp_path, proc.stdout, proc.stderr)
    assert not leaks, "\n".join(leaks)


@pytest.mark.timeout(180)
def test_no_secret_byte_in_the_error_line_and_error_artifacts_of_a_failed_run(
    tmp_path: Path, provider: _Provider, store: Path
) -> None:
    provider.mode = "reject"
    config, target = _inputs(tmp_path, provider)
    proc = _run_cli(tmp_path, store.parent, config, target, store)
    assert proc.returncode == 1, proc.stderr[-3000:]
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and "401" in error_lines[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    artifacts = [p for p in store.parent.rglob("*") if p.is_file() and "nemo_judge" in str(p)]
    assert any("error" in p.name or "traceback" in p.name for p in artifacts), [str(p) for p in artifacts]
    leaks = _leaks(tmp_path, proc.stdout, proc.stderr)
    assert not leaks, "\n".join(leaks)
