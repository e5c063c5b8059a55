"""Tracking-server faults: a bad or dead tracking URI is one line in seconds with no model call and no run;
concurrent first runs into a new sqlite store, identical evaluations started at once, and two
evaluations of one dataset racing on ``log_input`` all end well."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mlflow_nemo_judge.cli import main
from mlflow_nemo_judge.errors import TrackingConfigError, TrackingError, TrackingUnavailable
from mlflow_nemo_judge.pipeline import evaluate
from mlflow_nemo_judge.tracking import health
from tests.fixtures.paths import REPO

pytestmark = pytest.mark.usefixtures("judge_cache")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _files(tmp_path: Path, seed_eval: dict[str, Any], *targets: str) -> tuple[str, list[str]]:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(seed_eval["config"]))
    paths = []
    for name in targets:
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(seed_eval[name]))
        paths.append(str(p))
    return str(cfg), paths


def _cli_one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.timeout(30)
def test_an_unreachable_tracking_server_is_one_line_in_seconds_with_no_model_call(
    seed_eval, capsys, tmp_path
):
    server = seed_eval["server"]
    uri = f"http://alice:tracking-pw-1234@127.0.0.1:{_free_port()}"
    cfg, (tgt,) = _files(tmp_path, seed_eval, "faithful")
    start = time.monotonic()
    code, err = _cli_one_line(capsys, ["run", cfg, "--target", tgt, "--tracking-uri", uri, "--limit", "2"])
    assert time.monotonic() - start < 15  # MLflow's defaults: ~250 s
    assert code == 1 and err.count("\n") == 0
    assert err.startswith("error: MLflow tracking at http://") and "unreachable" in err
    assert "tracking-pw-1234" not in err  # userinfo redacted
    assert server.request_count == 0


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("foo://bar", "unsupported scheme"),
        ("http:///nohost", "no host"),
        ("http://127.0.0.1:99999", "malformed"),
    ],
)
def test_bad_tracking_uris_are_bad_input(seed_eval, capsys, tmp_path, uri, needle):
    cfg, (tgt,) = _files(tmp_path, seed_eval, "faithful")
    code, err = _cli_one_line(capsys, ["run", cfg, "--target", tgt, "--tracking-uri", uri])
    assert code == 2 and err.count("\n") == 0 and needle in err, err
    assert seed_eval["server"].request_count == 0


def test_an_overlong_experiment_or_run_name_is_refused_before_anything_exists(
    seed_eval, mlflow_uri, capsys, tmp_path
):
    from mlflow.tracking import MlflowClient

    before = [e.name for e in MlflowClient(mlflow_uri).search_experiments()]
    cfg, (tgt,) = _files(tmp_path, seed_eval, "faithful")
    code, err = _cli_one_line(capsys, ["run", cfg, "--target", tgt, "--experiment", "x" * 600])
    assert code == 2 and "experiment name is 600 characters" in err and err.count("\n") == 0
    code, err = _cli_one_line(capsys, ["run", cfg, "--target", tgt, "--run-name", "r" * 300])
    assert code == 2 and "run name is 300 characters" in err
    assert [e.name for e in MlflowClient(mlflow_uri).search_experiments()] == before
    assert seed_eval["server"].request_count == 0


def test_store_errors_become_one_line_tracking_errors_naming_the_redacted_uri():
    from mlflow.exceptions import MlflowException

    with pytest.raises(TrackingError) as info, health.translated("http://u:pw-9876@h:5000", "RUN1"):
        raise MlflowException("API request to http://u:pw-9876@h:5000/api failed\nTraceback: ...")
    msg = str(info.value)
    assert "pw-9876" not in msg and "\n" not in msg and "RUN1" in msg
    with pytest.raises(TrackingUnavailable) as info, health.translated("http://h:5000", "RUN2"):
        raise MlflowException("API request failed with exception Max retries exceeded with url: /x")
    assert "mlflow-nemo-judge resume RUN2" in str(info.value)
    with pytest.raises(KeyError), health.translated("http://h:5000"):  # our bugs are not hidden
        raise KeyError("x")


def test_mlflow_http_retries_are_bounded_unless_the_user_set_them(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "77")
    with health.bounded_http():
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "77"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


def test_api_refuses_a_bad_uri_with_the_config_error_class(seed_eval):
    with pytest.raises(TrackingConfigError):
        evaluate(seed_eval["config"], seed_eval["faithful"], tracking_uri="foo://bar", limit=1)


# ------------------------------------------------------------------------------------ concurrency


def _start_runs(
    tmp_path: Path, uri: str, cfg: str, targets: list[str], **extra_env: str
) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NEMO_JUDGE_TRACE_SAMPLES": "0", **extra_env}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "mlflow_nemo_judge", "run", cfg, "--tracking-uri", uri, "--limit", "3"]
    return [
        subprocess.Popen(
            [*cmd, "--target", t, "--no-progress", "--experiment", "race"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for t in targets
    ]


def _finish(procs: list[subprocess.Popen[str]], timeout: float) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    out = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a concurrent run did not finish in time")
        out.append((p.returncode, err))
    return out


@pytest.mark.timeout(240)
@pytest.mark.parametrize("early_start", ["0", "1"])
def test_four_identical_first_runs_into_a_new_sqlite_store_make_one_run(seed_eval, tmp_path, early_start):
    from mlflow.tracking import MlflowClient

    # Slow model calls: the first run must still be running when the other three, started at once,
    # reach the identity lock (their start-up on 2 shared cores can differ by a second or two; with
    # instant calls a late one sometimes found the run already finished and reused it silently).
    # Without early start the first run's calls begin only once it holds the lock, and the others must
    # say they wait. With early start every process makes its calls while the store opens, and the
    # others (opening the new store one after another under its init lock) may find the run already
    # FINISHED and reuse it without having waited: still one run, but no wait to observe.
    seed_eval["server"].set_latency(2.0)
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    cfg, (tgt,) = _files(tmp_path, seed_eval, "faithful")
    results = _finish(
        _start_runs(tmp_path, uri, cfg, [tgt] * 4, NEMO_JUDGE_EARLY_START=early_start), timeout=200
    )
    assert all(code == 0 for code, _ in results), results
    assert all("Traceback" not in err for _, err in results)
    cl = MlflowClient(uri)
    exp = cl.get_experiment_by_name("race")
    runs = cl.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    if early_start == "0":
        assert any("waiting for it" in err for _, err in results)  # the others said once that they wait


@pytest.mark.timeout(240)
def test_two_evaluations_of_one_dataset_started_at_once_both_finish(seed_eval, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'new.db'}"
    cfg, tgts = _files(tmp_path, seed_eval, "faithful", "poor")
    results = _finish(_start_runs(tmp_path, uri, cfg, tgts), timeout=200)
    assert all(code == 0 for code, _ in results), results
    cl = MlflowClient(uri)
    runs = cl.search_runs([cl.get_experiment_by_name("race").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert all(r.inputs.dataset_inputs for r in runs)  # both linked the (one) dataset
