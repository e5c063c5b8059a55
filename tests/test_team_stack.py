"""The package against a real team stack: ``mlflow server`` on PostgreSQL with an S3-compatible store.

This is what ``docker/compose.yaml`` builds, started on loopback by ``testing.team_stack`` (no docker):
PostgreSQL enforces MLflow's column limits that sqlite ignores, and artifacts travel through the
server's proxy into a bucket. One stack and one multi-target evaluation serve the module; each test
reads back one kind of thing from the server, from PostgreSQL itself, or from the bucket.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from mlflow_nemo_judge.cli import main
from mlflow_nemo_judge.testing.mock_llm import MockLLMServer
from mlflow_nemo_judge.testing.team_stack import (
    PASSWORD_SPECIALS,
    TeamStack,
    TeamStackError,
    find_postgres_bin,
    pgserver_bin,
    start_postgres,
    start_team_stack,
)
from mlflow_nemo_judge.testing.team_stack import postgres as team_postgres
from tests.conftest import mock_target
from tests.fixtures.paths import REPO, shared_data
from tests.fixtures.seed_config import seed_config

TASK = "consult_summary_eval"
KEY = f"{TASK}/completeness/completeness"
JUDGE_KEY = "sk-team-stack-fake-judge-key-0001"  # made up here; must reach no store
LIMIT = 5
MODELS = ["mock/faithful-summarizer", "mock/poor-summarizer"]
REGISTERED = "team-summarizers"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamStack]:
    with start_team_stack(tmp_path_factory.mktemp("team-stack")) as s:
        yield s


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLMServer]:
    with MockLLMServer() as server:
        yield server


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, llm: MockLLMServer) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("team-files")
    cfg = seed_config(
        openai_api_key=JUDGE_KEY,
        judge_url=f"{llm.base_url}/chat/completions",
        judge_model="mock/judge",
        files_url=str(shared_data()),
    )
    out = {"config": d / "config.json"}
    out["config"].write_text(json.dumps(cfg))
    for model in MODELS:
        out[model] = d / f"{model.split('/')[1]}.json"
        out[model].write_text(json.dumps(mock_target(llm, model)))
    return out


@contextlib.contextmanager
def _client_env(cache: Path) -> Iterator[None]:
    """The runner's environment: its own cache, every trace kept, and no S3 credentials at all (the
    server proxies artifacts, as for the compose runner)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in [k for k in os.environ if k.startswith(("AWS_", "MLFLOW_"))]:
            mp.delenv(name)
        mp.delenv("NEMO_JUDGE_TRACE_SAMPLES", raising=False)
        mp.setenv("NEMO_JUDGE_CACHE_DIR", str(cache))
        yield


def _cli(*argv: str) -> Any:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def team_eval(
    stack: TeamStack, files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Both mock targets through the CLI into experiment ``team``, registered as ``team-summarizers``."""
    with _client_env(tmp_path_factory.mktemp("team-cache")):
        return dict(
            _cli(
                "run",
                str(files["config"]),
                *("--target", str(files[MODELS[0]]), "--target", str(files[MODELS[1]])),
                *("--tracking-uri", stack.tracking_uri, "--experiment", "team"),
                *("--limit", str(LIMIT), "--register-model", REGISTERED, "--no-progress", "--output", "json"),
            )
        )


def _rows(stack: TeamStack, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Straight from PostgreSQL: what the server really stored, not what a client cache says."""
    con = stack.database.connect()
    try:
        with con.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        con.close()


def _traces(cl: MlflowClient, stack: TeamStack, experiment_id: str, run_id: str) -> list[Any]:
    # MLflow resolves a trace's mlflow-artifacts:/ location against the process-wide tracking URI, not
    # the client's: point it at the team server while reading (another test may have set it elsewhere).
    from mlflow_nemo_judge.tracking import tracking_scope

    with tracking_scope(stack.tracking_uri):
        return list(cl.search_traces(locations=[experiment_id], run_id=run_id, max_results=100))


def _run_ids(team_eval: dict[str, Any]) -> list[str]:
    return [r["run_id"] for r in team_eval["runs"]]


@pytest.mark.timeout(120)
def test_runs_params_and_metrics_land_in_postgres(stack, team_eval):
    cl = MlflowClient(stack.tracking_uri)
    ids = _run_ids(team_eval)
    assert len(ids) == 2 and team_eval["parent_run_id"]
    for run_id, model in zip(ids, MODELS, strict=True):
        run = cl.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["nemo_judge.target"] == model
        assert run.data.tags["mlflow.parentRunId"] == team_eval["parent_run_id"]
        assert run.data.params["target/model_id"] == model
        assert run.data.metrics[f"{KEY}/count"] == LIMIT
        assert not any(JUDGE_KEY in v for v in run.data.params.values())
    assert cl.get_run(team_eval["parent_run_id"]).info.status == "FINISHED"
    stored = dict(
        _rows(
            stack,
            "SELECT run_uuid, status FROM runs WHERE experiment_id = %s",
            int(team_eval["experiment_id"]),
        )
    )
    assert stored == {rid: "FINISHED" for rid in [*ids, team_eval["parent_run_id"]]}
    (count,) = _rows(
        stack, "SELECT value FROM latest_metrics WHERE run_uuid = %s AND key = %s", ids[0], f"{KEY}/count"
    )
    assert count == (LIMIT,)


@pytest.mark.timeout(120)
def test_artifacts_are_listed_by_mlflow_and_stored_as_objects_in_the_bucket(stack, team_eval):
    cl = MlflowClient(stack.tracking_uri)
    s3 = stack.s3_client()
    for run_id, res in zip(_run_ids(team_eval), team_eval["runs"], strict=True):
        entries = cl.list_artifacts(run_id, "nemo_judge")
        listed = {f.path for f in entries if not f.is_dir}
        assert {"nemo_judge/results.json", "nemo_judge/config.json"} <= listed
        run = cl.get_run(run_id)
        prefix = f"{stack.artifact_prefix}/{run.info.experiment_id}/{run_id}/artifacts/"
        keys = set(stack.s3_keys(prefix))
        assert {prefix + p for p in listed} <= keys
        body = s3.get_object(Bucket=stack.bucket, Key=prefix + "nemo_judge/results.json")["Body"].read()
        assert json.loads(body) == res["results"]
    # the judge's key reached no object in the bucket (config.json, prompts, tables, traces alike)
    for key in stack.s3_keys():
        data = s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read()
        assert JUDGE_KEY.encode() not in data, key


@pytest.mark.timeout(120)
def test_traces_and_their_assessments_read_back_from_postgres(stack, team_eval):
    cl = MlflowClient(stack.tracking_uri)
    exp = team_eval["experiment_id"]
    for run_id in _run_ids(team_eval):
        traces = _traces(cl, stack, exp, run_id)
        assert len(traces) == LIMIT, f"{len(traces)} of {LIMIT} traces of run {run_id} reached the server"
        for trace in traces:
            assert trace.data.spans, trace.info.trace_id
            names = {a.name for a in trace.info.assessments}
            assert any("completeness" in n for n in names) and any("correctness" in n for n in names), names
            scores = [a.value for a in trace.info.assessments if "completeness" in a.name]
            assert all(isinstance(v, int | float) and 1 <= v <= 5 for v in scores), scores
    (stored,) = _rows(stack, "SELECT count(*) FROM trace_info WHERE experiment_id = %s", int(exp))
    assert stored == (2 * LIMIT,)
    (assessed,) = _rows(
        stack,
        "SELECT count(DISTINCT a.trace_id) FROM assessments a JOIN trace_info t ON a.trace_id = t.request_id"
        " WHERE t.experiment_id = %s",
        int(exp),
    )
    assert assessed == (2 * LIMIT,)


@pytest.mark.timeout(120)
def test_logged_models_and_registry_versions_land(stack, team_eval):
    cl = MlflowClient(stack.tracking_uri)
    exp = team_eval["experiment_id"]
    models = {m.model_id: m for m in cl.search_logged_models(experiment_ids=[exp])}
    model_ids = [cl.get_run(rid).inputs.model_inputs[0].model_id for rid in _run_ids(team_eval)]
    assert set(model_ids) <= set(models)
    assert [models[m].name for m in model_ids] == [m.replace("/", "-") for m in MODELS]
    versions = cl.search_model_versions(f"name='{REGISTERED}'")
    assert sorted(v.source for v in versions) == sorted(f"models:/{m}" for m in model_ids)
    assert {v.run_id for v in versions} == set(_run_ids(team_eval))


@pytest.mark.timeout(120)
def test_compare_reads_the_leaderboard_and_the_paired_test_from_the_server(stack, team_eval, tmp_path):
    with _client_env(tmp_path / "cache"):
        out = _cli(
            "compare", "--experiment", "team", "--tracking-uri", stack.tracking_uri, "--output", "json"
        )
    board = out["leaderboard"]
    assert {row["run_id"] for row in board} == set(_run_ids(team_eval))
    assert {row["target"] for row in board} == set(MODELS)
    (pair,) = [p for p in out["paired"] if p["metric"] == KEY]
    assert pair["n"] == LIMIT and pair["mean_diff"] != 0


def _progress(cl: MlflowClient, experiment: str) -> str | None:
    exp = cl.get_experiment_by_name(experiment)
    runs = cl.search_runs([exp.experiment_id]) if exp else []
    if runs and cl.get_metric_history(runs[0].info.run_id, "progress"):
        return str(runs[0].info.run_id)
    return None


@pytest.mark.timeout(150)
def test_a_killed_run_resumes_into_the_same_run_on_the_team_server(stack, files, llm, tmp_path):
    limit = 10
    cl = MlflowClient(stack.tracking_uri)
    with _client_env(tmp_path / "cache"):
        cmd = [sys.executable, "-m", "mlflow_nemo_judge", "run", str(files["config"])]
        cmd += ["--target", str(files[MODELS[0]]), "--tracking-uri", stack.tracking_uri]
        cmd += ["--experiment", "team-resume", "--limit", str(limit), "--parallelism", "2", "--no-progress"]
        llm.set_latency(0.3)  # 30 calls at parallelism 2: ~5 s of run to kill into
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            cmd,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while (run_id := _progress(cl, "team-resume")) is None:
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "the run made no progress"
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            llm.set_latency(0)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert cl.get_run(run_id).info.status == "RUNNING"  # what a killed process leaves behind
        out = _cli(
            "resume",
            run_id,
            "--config",
            str(files["config"]),
            "--tracking-uri",
            stack.tracking_uri,
            "--output",
            "json",
        )
    assert [r["run_id"] for r in out["runs"]] == [run_id]
    run = cl.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["nemo_judge.resume_count"] == "1"
    assert run.data.metrics[f"{KEY}/count"] == limit
    assert len(cl.search_runs([run.info.experiment_id])) == 1
    traces = _traces(cl, stack, run.info.experiment_id, run_id)
    assert len(traces) == limit  # every sample once: those before the kill and those after it


def test_the_database_password_is_quoted_in_the_uri_and_never_logged(stack):
    from sqlalchemy.engine import make_url

    password = stack.database.password
    assert set(PASSWORD_SPECIALS) <= set(password)
    url = make_url(stack.database.uri())
    assert (url.password, url.host, url.port, url.database) == (
        password,
        "127.0.0.1",
        stack.database.port,
        "mlflow",
    )
    # the server started on that URI (it answers), yet neither log nor repr holds the password
    for log in (stack.server_log, stack.database.log):
        assert password not in log.read_text(errors="replace"), log
    assert password not in repr(stack)


@pytest.mark.timeout(60)
def test_without_debians_postgres_the_pip_binaries_are_found_and_run(tmp_path, monkeypatch):
    """A machine without Debian's PostgreSQL uses the binaries of the ``pgserver`` wheel (a dev extra)."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(team_postgres.glob, "glob", lambda pattern: [])
    bin_dir = find_postgres_bin()
    assert bin_dir == pgserver_bin() and bin_dir is not None
    with start_postgres(tmp_path) as pg:
        con = pg.connect()
        try:
            with con.cursor() as cur:
                cur.execute("SELECT current_database(), current_user, version()")
                database, user, version = cur.fetchone()
        finally:
            con.close()
    assert (database, user) == ("mlflow", "mlflow") and version.startswith("PostgreSQL 16.")


def test_no_postgres_anywhere_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(team_postgres.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(team_postgres, "pgserver_bin", lambda: None)
    with pytest.raises(TeamStackError, match=r"^PostgreSQL: no server binaries .* looked in: nowhere$"):
        find_postgres_bin()


def test_a_failed_start_names_the_piece_and_quotes_its_log_without_the_password(tmp_path):
    with tempfile.TemporaryDirectory() as fake_dir:  # not under tmp_path: root-only, nobody cannot enter
        fake = Path(fake_dir)
        os.chmod(fake, 0o755)
        # an initdb that echoes the password file it was given, then fails: the log holds the secret
        (fake / "initdb").write_text(
            '#!/bin/sh\nfor a; do case "$a" in --pwfile=*) cat "${a#--pwfile=}";; esac; done\n'
            'echo "initdb: broken on purpose"; exit 3\n'
        )
        (fake / "initdb").chmod(0o755)
        with pytest.raises(TeamStackError) as err, start_postgres(tmp_path, bin_dir=fake):
            pass
    message = str(err.value)
    assert message.startswith(f"PostgreSQL: initdb ({fake}) failed; {tmp_path / 'postgres.log'}:")
    assert "initdb: broken on purpose" in message and "***" in message
    assert PASSWORD_SPECIALS not in message  # the password (which ends in them) is masked
