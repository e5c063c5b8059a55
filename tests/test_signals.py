"""SIGTERM (docker stop, Kubernetes) and SIGHUP (a closed terminal) end a CLI run like Ctrl-C: the MLflow
run KILLED, a remote NeMo job cancelled, exit code 128 + signum, one line on stderr."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from mlflow_nemo_judge.testing.fake_nemo import FakeNemoService
from tests.fixtures.paths import REPO

pytestmark = pytest.mark.usefixtures("judge_cache")


def _start(tmp_path: Path, seed_eval: dict[str, Any], uri: str, *extra: str) -> subprocess.Popen[str]:
    cfg, tgt = tmp_path / "c.json", tmp_path / "t.json"
    cfg.write_text(json.dumps(seed_eval["config"]))
    tgt.write_text(json.dumps(seed_eval["faithful"]))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "mlflow_nemo_judge", "run", str(cfg), "--target", str(tgt)]
    cmd += ["--tracking-uri", uri, "--experiment", "sig", "--limit", "10", "--no-progress", *extra]
    return subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_running(proc: subprocess.Popen[str], uri: str, tag: str | None = None) -> Any:
    cl = MlflowClient(uri)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        exp = cl.get_experiment_by_name("sig")
        runs = cl.search_runs([exp.experiment_id]) if exp else []
        if runs and runs[0].info.status == "RUNNING" and (tag is None or tag in runs[0].data.tags):
            return runs[0]
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the run never became RUNNING")


def _stop(proc: subprocess.Popen[str], sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the CLI did not end within 30 s of {signal.Signals(sig).name}")
    return proc.returncode, err


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_terminating_signal_ends_the_run_killed(seed_eval, mlflow_uri, tmp_path, sig):
    seed_eval["server"].set_latency(0.5)  # 30 calls at parallelism 8: several seconds of run
    proc = _start(tmp_path, seed_eval, mlflow_uri, "--parallelism", "2")
    run = _wait_running(proc, mlflow_uri)
    code, err = _stop(proc, sig)
    assert code == 128 + sig
    lines = [ln for ln in err.strip().splitlines() if ln and not ln.startswith(("WARNING", "INFO"))]
    assert lines == [f"terminated by {signal.Signals(sig).name}: the MLflow run (if any) was marked KILLED"]
    assert "Traceback" not in err
    done = MlflowClient(mlflow_uri).get_run(run.info.run_id)
    assert done.info.status == "KILLED" and done.data.tags["nemo_judge.state"] == "killed"


@pytest.mark.timeout(120)
def test_sigterm_cancels_the_remote_nemo_job(seed_eval, mlflow_uri, tmp_path):
    with FakeNemoService() as fake:
        fake.hold_jobs.set()  # the job stays running until cancelled
        proc = _start(tmp_path, seed_eval, mlflow_uri, "--backend", "nemo", "--nemo-url", fake.base_url)
        run = _wait_running(proc, mlflow_uri, tag="nemo_judge.job_id")
        code, _ = _stop(proc, signal.SIGTERM)
        job_id = run.data.tags["nemo_judge.job_id"]
        job = fake.wait_for_job(job_id, "cancelled", timeout=20)
    assert code == 143
    assert job["status"] == "cancelled"
    assert MlflowClient(mlflow_uri).get_run(run.info.run_id).info.status == "KILLED"
