"""The nemo backend inside MLflow runs: same keys as local, job id tagged, and attach after a crash."""

import os
import subprocess
import sys
import textwrap
import time

from mlflow.tracking import MlflowClient

from mlflow_nemo_judge.pipeline import attach, evaluate
from mlflow_nemo_judge.testing.fake_nemo import FakeNemoService
from mlflow_nemo_judge.testing.mock_llm import MockLLMServer
from tests.fixtures.paths import shared_data
from tests.fixtures.seed_config import seed_config


def _setup(srv, limit=6):
    url = f"{srv.base_url}/chat/completions"
    cfg = seed_config(files_url=str(shared_data()), judge_url=url, judge_model="mock/judge")
    cfg["tasks"]["consult_summary_eval"]["dataset"]["limit"] = limit
    tgt = {"type": "model", "model": {"api_endpoint": {"url": url, "model_id": "mock/faithful-summarizer"}}}
    return cfg, tgt


def test_nemo_and_local_runs_have_the_same_metrics(mlflow_uri, judge_cache):
    with MockLLMServer() as srv, FakeNemoService() as fake:
        cfg, tgt = _setup(srv)
        local = evaluate(cfg, tgt, experiment="same", tracking_uri=mlflow_uri)
        remote = evaluate(
            cfg,
            tgt,
            experiment="same",
            tracking_uri=mlflow_uri,
            backend="nemo",
            backend_options={"evaluator_url": fake.base_url, "poll_interval": 0.1},
        )
    cl = MlflowClient(mlflow_uri)
    lrun, rrun = cl.get_run(local.run_ids[0]), cl.get_run(remote.run_ids[0])
    assert lrun.info.run_id != rrun.info.run_id
    assert rrun.data.tags["nemo_judge.backend"] == "nemo"
    assert rrun.data.tags["nemo_judge.job_id"].startswith("eval-")
    scores = {k: v for k, v in lrun.data.metrics.items() if not k.startswith(("usage/", "progress"))}
    assert scores and scores == {k: v for k, v in rrun.data.metrics.items() if k in scores}
    assert set(scores) <= set(rrun.data.metrics)


def test_attach_completes_the_run_of_a_dead_submitter(mlflow_uri, judge_cache, tmp_path):
    with MockLLMServer() as srv, FakeNemoService() as fake:
        cfg, tgt = _setup(srv, limit=4)
        fake.hold_jobs.set()  # the job stays "running" until released
        script = textwrap.dedent(f"""
            from mlflow_nemo_judge.pipeline import evaluate
            evaluate({cfg!r}, {tgt!r}, experiment="crash", tracking_uri={mlflow_uri!r}, backend="nemo",
                     backend_options={{"evaluator_url": {fake.base_url!r}, "poll_interval": 0.1}})
        """)
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=dict(os.environ))
        cl = MlflowClient(mlflow_uri)
        job_id = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job_id is None:
            time.sleep(0.3)
            exp = cl.get_experiment_by_name("crash")
            if exp is not None:
                for run in cl.search_runs([exp.experiment_id]):
                    job_id = run.data.tags.get("nemo_judge.job_id")
        assert job_id, "the submitting process never recorded a job id"
        proc.kill()
        proc.wait(30)
        (run,) = cl.search_runs([cl.get_experiment_by_name("crash").experiment_id])
        assert run.info.status == "RUNNING"
        fake.hold_jobs.clear()
        ev = attach(job_id, tracking_uri=mlflow_uri, backend_options={"evaluator_url": fake.base_url})
        jobs_created = len([r for r in fake.job_requests])
    assert ev.run_ids == [run.info.run_id]
    done = cl.get_run(run.info.run_id)
    assert done.info.status == "FINISHED"
    assert done.data.metrics["consult_summary_eval/completeness/completeness/count"] == 4
    assert jobs_created == 1  # re-attached, not re-submitted
