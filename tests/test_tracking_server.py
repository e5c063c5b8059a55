"""The same evaluation against a real ``mlflow server`` on loopback, read back over its REST API.

The server runs with a sqlite backend and proxied artifacts, exactly as a team would run it; startup
takes 7-15 s, so one server serves the whole module.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlflow_nemo_judge.compare import leaderboard as compare
from mlflow_nemo_judge.compare import paired
from mlflow_nemo_judge.pipeline import evaluate

pytestmark = pytest.mark.usefixtures("judge_cache")

TASK = "consult_summary_eval"
KEY = f"{TASK}/completeness/completeness"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(d: Path, port: int) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "mlflow"
    cmd = [
        str(exe) if exe.exists() else sys.executable,
        *([] if exe.exists() else ["-m", "mlflow"]),
        "server",
        "--backend-store-uri",
        f"sqlite:///{d}/mlflow.db",
        "--artifacts-destination",
        str(d / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(d / "server.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, cwd=d, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                if r.read() == b"OK":
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_server(proc)
            pytest.fail(f"mlflow server did not start:\n{(d / 'server.log').read_text()[-3000:]}")
        time.sleep(0.2)


def _stop_server(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    proc = _start_server(d, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop_server(proc)


def _get(url: str, endpoint: str, **query: str) -> Any:
    with urllib.request.urlopen(f"{url}{endpoint}?{urllib.parse.urlencode(query)}", timeout=30) as r:
        return json.loads(r.read())


def test_evaluation_against_a_remote_tracking_server(mlflow_server, seed_eval, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ev = evaluate(
        seed_eval["config"],
        [seed_eval["faithful"], seed_eval["poor"]],
        experiment="remote",
        tracking_uri=mlflow_server,
        limit=10,
        progress_bar=False,
    )
    assert ev.parent_run_id and len(ev.run_ids) == 2
    assert capsys.readouterr().out == ""  # stdout stays clean for the CLI's --output json

    for run_id, model_id in zip(
        ev.run_ids, ["mock/faithful-summarizer", "mock/poor-summarizer"], strict=True
    ):
        run = _get(mlflow_server, "/api/2.0/mlflow/runs/get", run_id=run_id)["run"]
        assert run["info"]["status"] == "FINISHED"
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert tags["nemo_judge.state"] == "finished" and tags["nemo_judge.target"] == model_id
        assert tags["nemo_judge.traces"] == "10"  # every sample, up to the default 200
        assert tags["mlflow.parentRunId"] == ev.parent_run_id
        assert params["target/model_id"] == model_id and params[f"task/{TASK}/dataset/limit"] == "25"
        assert metrics[f"{KEY}/count"] == 10 and metrics["progress"] == 100
        assert metrics[KEY] == pytest.approx(
            ev.results[ev.run_ids.index(run_id)].tasks[TASK]["completeness"]["completeness"].value
        )
        assert run["inputs"]["dataset_inputs"][0]["dataset"]["name"] == "doctor_consults"
        arts = _get(mlflow_server, "/api/2.0/mlflow/artifacts/list", run_id=run_id, path="nemo_judge")
        names = {f["path"] for f in arts["files"]}
        assert {"nemo_judge/results.json", "nemo_judge/samples.json", "nemo_judge/config.json"} <= names
        models = _get(
            mlflow_server, f"/api/2.0/mlflow/logged-models/{run['inputs']['model_inputs'][0]['model_id']}"
        )
        assert models["model"]["info"]["name"] == model_id.replace("/", "-")

    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    try:
        traces = mlflow.search_traces(locations=[ev.experiment_id], run_id=ev.run_ids[0], return_type="list")
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    assert len(traces) == 10
    # <metric>/<score>: never one of MLflow's built-in scorer names (the seed's "correctness" is one)
    names = {a.name for a in traces[0].info.assessments}
    assert {"completeness/completeness", "correctness/correctness"} <= names

    # idempotency, the leaderboard and the paired test work the same over HTTP
    again = evaluate(
        seed_eval["config"],
        [seed_eval["faithful"], seed_eval["poor"]],
        experiment="remote",
        tracking_uri=mlflow_server,
        limit=10,
        progress_bar=False,
    )
    assert again.reused == [True, True] and again.run_ids == ev.run_ids
    board = compare("remote", tracking_uri=mlflow_server)
    assert list(board["target"]) == ["mock/faithful-summarizer", "mock/poor-summarizer"]
    diff = paired(*ev.run_ids, tracking_uri=mlflow_server, metrics=[KEY])
    assert diff.iloc[0]["n"] == 10 and diff.iloc[0]["mean_diff"] < 0


@pytest.mark.timeout(240)
def test_a_server_dying_mid_run_exits_in_bounded_time_and_resume_finishes_the_run(
    seed_eval, tmp_path, capsys
):
    from mlflow_nemo_judge.cli import main
    from tests.fixtures.paths import REPO

    d = tmp_path / "server"
    d.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cfg, tgt = tmp_path / "c.json", tmp_path / "t.json"
    cfg.write_text(json.dumps(seed_eval["config"]))
    tgt.write_text(json.dumps(seed_eval["faithful"]))
    server = _start_server(d, port)
    seed_eval["server"].set_latency(0.4)  # 30 calls at parallelism 2: ~6 s of run
    env = {**os.environ, "PYTHONPATH": str(REPO), "NEMO_JUDGE_TRACE_SAMPLES": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "mlflow_nemo_judge", "run", str(cfg), "--target", str(tgt), "--limit", "10"]
    cmd += ["--tracking-uri", url, "--experiment", "dies", "--parallelism", "2", "--no-progress"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        run_id = None
        while run_id is None:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            exps = (
                _get(url, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="dies")
                if _has(url)
                else None
            )
            if exps:
                found = _post(
                    url, "/api/2.0/mlflow/runs/search", experiment_ids=[exps["experiment"]["experiment_id"]]
                )
                runs = found.get("runs") or []
                # some samples done (progress logged): the cache holds answers when the server dies
                if runs and any(m["key"] == "progress" for m in runs[0]["data"].get("metrics", [])):
                    run_id = runs[0]["info"]["run_id"]
            time.sleep(0.2)
        _stop_server(server, signal.SIGKILL)  # the server dies mid-run
        died = time.monotonic()
        _, err = proc.communicate(timeout=90)
        elapsed = time.monotonic() - died
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and elapsed < 60, (elapsed, err)  # MLflow's defaults: ~528 s
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: MLflow tracking at http://127.0.0.1") and "Traceback" not in err
    assert f"mlflow-nemo-judge resume {run_id}" in last

    server = _start_server(d, port)  # back, on the same backend store
    try:
        seed_eval["server"].set_latency(0)
        seed_eval["server"].clear_log()
        code = main(["resume", run_id, "--config", str(cfg), "--tracking-uri", url, "--output", "json"])
        assert code == 0, capsys.readouterr().err
        run = _get(url, "/api/2.0/mlflow/runs/get", run_id=run_id)["run"]
        assert run["info"]["status"] == "FINISHED"
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert metrics[f"{KEY}/count"] == 10
        assert seed_eval["server"].request_count < 30  # the cache answered what the first run had made
    finally:
        _stop_server(server)


def _has(url: str) -> bool:
    try:
        _get(url, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="dies")
        return True
    except OSError:
        return False


def _post(url: str, endpoint: str, **body: Any) -> Any:
    req = urllib.request.Request(
        f"{url}{endpoint}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())
