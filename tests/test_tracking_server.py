"""The same evaluation against a real ``mlflow server`` on loopback, read back over its REST API.

The server runs with a sqlite backend and proxied artifacts, exactly as a team would run it; startup
takes 7-15 s, so one server serves the whole module.
"""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
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
    log = open(d / "server.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(cmd, cwd=d, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                    if r.read() == b"OK":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(d / 'server.log').read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


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
    assert {a.name for a in traces[0].info.assessments} == {"completeness", "correctness"}

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
