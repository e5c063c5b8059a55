"""The public API end to end: two mock targets on the seed config, idempotency, resume after SIGKILL.

Everything is read back through ``MlflowClient`` (what a user or the UI sees), never from our objects.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mlflow_nemo_judge.config import load_config, sha256_json
from mlflow_nemo_judge.errors import ConfigError, TrackingError
from mlflow_nemo_judge.http.cache import cache_key
from mlflow_nemo_judge.pipeline import Evaluation, evaluate, resume

pytestmark = pytest.mark.usefixtures("judge_cache")

TASK = "consult_summary_eval"
KEYS = [f"{TASK}/completeness/completeness", f"{TASK}/correctness/correctness"]
REPO = Path(__file__).resolve().parents[1]


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _artifacts(cl: Any, run_id: str, path: str = "nemo_judge") -> set[str]:
    out: set[str] = set()
    for f in cl.list_artifacts(run_id, path):
        out |= _artifacts(cl, run_id, f.path) if f.is_dir else {f.path}
    return out


def _json_artifact(cl: Any, run_id: str, path: str, tmp_path: Path) -> Any:
    return json.loads(Path(cl.download_artifacts(run_id, path, str(tmp_path))).read_text())


def _score_metrics(cl: Any, run_id: str) -> dict[str, float]:
    m = cl.get_run(run_id).data.metrics
    return {k: v for k, v in m.items() if not k.startswith("usage/") and k != "progress"}


def _traces(uri: str, experiment_id: str, run_id: str) -> list[Any]:
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        return list(mlflow.search_traces(locations=[experiment_id], run_id=run_id, return_type="list"))
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


def _env_key_config(cfg: dict[str, Any], var: str) -> dict[str, Any]:
    """The seed config with its judge key read from ``var`` instead of written literally."""
    cfg = copy.deepcopy(cfg)
    for metric in cfg["tasks"][TASK]["metrics"].values():
        ep = metric["params"]["model"]["api_endpoint"]
        ep.pop("api_key", None)
        ep["api_key_env"] = var
    return cfg


# ------------------------------------------------------------------------------ the acceptance test


def test_two_targets_make_a_parent_and_two_complete_child_runs(seed_eval, mlflow_uri, tmp_path):
    cfg = seed_eval["config"]
    ev = evaluate(
        cfg,
        [seed_eval["faithful"], seed_eval["poor"]],
        experiment="two-targets",
        tracking_uri=mlflow_uri,
        progress_bar=False,
        trace_samples=2,
    )
    assert isinstance(ev, Evaluation)
    assert len(ev.run_ids) == 2 and ev.parent_run_id and ev.reused == [False, False]
    cl = _client(mlflow_uri)
    config = load_config(cfg)

    parent = cl.get_run(ev.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["nemo_judge.role"] == "parent"
    assert parent.data.tags["nemo_judge.config_sha256"] == config.sha256()
    assert {
        "nemo_judge/comparison.json",
        "nemo_judge/plots/comparison.png",
        "nemo_judge/config.json",
        "nemo_judge/targets.json",
    } <= _artifacts(cl, ev.parent_run_id)
    comparison = _json_artifact(cl, ev.parent_run_id, "nemo_judge/comparison.json", tmp_path / "cmp")
    assert comparison["data"][0][comparison["columns"].index("target")] == "mock/faithful-summarizer"
    kids = cl.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{ev.parent_run_id}'")
    assert sorted(r.info.run_id for r in kids) == sorted(ev.run_ids)

    means: dict[str, dict[str, float]] = {}
    for run_id, model_id, res in zip(
        ev.run_ids, ["mock/faithful-summarizer", "mock/poor-summarizer"], ev.results, strict=True
    ):
        run = cl.get_run(run_id)
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert run.info.status == "FINISHED"
        # lifecycle and identity tags
        assert tags["mlflow.parentRunId"] == ev.parent_run_id
        assert tags["nemo_judge.backend"] == "local" and tags["nemo_judge.state"] == "finished"
        assert tags["nemo_judge.target"] == model_id
        assert tags["nemo_judge.config_sha256"] == config.sha256()
        assert tags["nemo_judge.samples"] == "table"
        # "<model without vendor> · <data>": the part that tells runs apart first (lists truncate)
        assert run.info.run_name == f"{model_id.split('/')[-1]} · doctor_consults"
        note = tags["mlflow.note.content"]
        assert model_id in note and "mock/judge" in note and "doctor_consults.jsonl" in note
        # params: flattened settings and content hashes
        assert params["config_sha256"] == config.sha256()
        assert params["backend"] == "local"
        assert params["target/model_id"] == model_id
        assert params["target/url"].endswith("/v1/chat/completions")
        assert params[f"task/{TASK}/dataset/limit"] == "25"
        assert params[f"task/{TASK}/dataset/files_url"].endswith("doctor_consults.jsonl")
        assert params[f"task/{TASK}/dataset/num_rows"] == "25"
        assert params[f"task/{TASK}/inference/max_tokens"] == "200"
        assert params[f"task/{TASK}/metric/completeness/type"] == "llm-judge"
        assert params[f"task/{TASK}/metric/completeness/judge/model_id"] == "mock/judge"
        assert (
            params[f"task/{TASK}/metric/correctness/score/correctness/parser/pattern"] == r"RATING:\s*(\d+)"
        )
        judge_template = cfg["tasks"][TASK]["metrics"]["completeness"]["params"]["template"]
        assert params[f"task/{TASK}/metric/completeness/template_sha256"] == sha256_json(judge_template)
        assert params[f"task/{TASK}/template_sha256"] == sha256_json(cfg["tasks"][TASK]["params"]["template"])
        assert not any("sk-test-not-a-real-key" in v for v in params.values())
        # metrics: mean + stats per score, usage, progress
        for key in KEYS:
            score = res.tasks[TASK][key.split("/")[1]][key.split("/")[2]]
            assert metrics[key] == pytest.approx(score.value)
            assert metrics[f"{key}/count"] == 25 and metrics[f"{key}/nan_count"] == 0
            assert metrics[f"{key}/ci95_low"] <= metrics[key] <= metrics[f"{key}/ci95_high"]
            for stat in ("stddev", "stderr", "min", "max"):
                assert f"{key}/{stat}" in metrics
        assert metrics["usage/requests"] == 75 and metrics["usage/samples"] == 25
        assert metrics["usage/samples_per_second"] > 0
        assert cl.get_metric_history(run_id, "progress")[-1].value == 100
        means[model_id] = {k: metrics[k] for k in KEYS}
        # artifacts
        arts = _artifacts(cl, run_id)
        assert {
            "nemo_judge/config.json",
            "nemo_judge/target.json",
            "nemo_judge/results.json",
            "nemo_judge/samples.json",
            "nemo_judge/samples.jsonl",
            f"nemo_judge/prompts/{TASK}/target.md",
            f"nemo_judge/prompts/{TASK}/completeness.md",
            f"nemo_judge/prompts/{TASK}/correctness.md",
            f"nemo_judge/plots/{TASK}/completeness.png",
            f"nemo_judge/plots/{TASK}/correctness.png",
        } <= arts
        logged_cfg = _json_artifact(cl, run_id, "nemo_judge/config.json", tmp_path / run_id)
        assert (
            logged_cfg["tasks"][TASK]["metrics"]["completeness"]["params"]["model"]["api_endpoint"]["api_key"]
            == "******"
        )
        assert _json_artifact(cl, run_id, "nemo_judge/results.json", tmp_path / run_id) == res.to_nemo_dict()
        md = Path(
            cl.download_artifacts(
                run_id, f"nemo_judge/prompts/{TASK}/completeness.md", str(tmp_path / run_id)
            )
        )
        assert "RATING: <number>" in md.read_text() and "{{ sample.output_text }}" in md.read_text()
        # the per-sample table (log_table: listed for the UI's evaluation view)
        assert {"path": "nemo_judge/samples.json", "type": "table"} in json.loads(
            tags["mlflow.loggedArtifacts"]
        )
        table = _json_artifact(cl, run_id, "nemo_judge/samples.json", tmp_path / run_id)
        cols = table["columns"]
        assert len(table["data"]) == 25
        for col in (
            "item_id",
            "item_content",
            "output_text",
            "completeness/completeness",
            "completeness/raw_judge_output",
            "completeness/error",
            "correctness/correctness",
        ):
            assert col in cols
        assert "item_summary" not in cols  # only the inputs the templates use
        first = dict(zip(cols, table["data"][0], strict=True))
        assert first["item_id"] == "D001" and "RATING" in first["completeness/raw_judge_output"]
        # dataset input and the LoggedModel it is linked to
        (ds_input,) = run.inputs.dataset_inputs
        assert ds_input.dataset.name == "doctor_consults"
        assert ds_input.dataset.digest == params[f"task/{TASK}/dataset/digest"]
        assert "doctor_consults.jsonl" in ds_input.dataset.source
        assert json.loads(ds_input.dataset.profile)["num_rows"] == 25
        assert {t.key: t.value for t in ds_input.tags}["mlflow.data.context"] == "evaluation"
        (model_input,) = run.inputs.model_inputs
        model = cl.get_logged_model(model_input.model_id)
        assert model.name == model_id.replace("/", "-")
        assert model.params["model_id"] == model_id and model.params["endpoint_url"].endswith(
            "/chat/completions"
        )
        assert model.tags["mlflow.model.isExternal"] == "true"
        linked = {m.key: m for m in model.metrics if m.run_id == run_id}
        assert set(KEYS) <= set(linked)
        assert linked[KEYS[0]].dataset_name == "doctor_consults"
        # per-sample traces (the first 2 samples here) with one LLM-judge Feedback per score
        assert tags["nemo_judge.traces"] == "2"
        traces = _traces(mlflow_uri, run.info.experiment_id, run_id)
        assert len(traces) == 2
        for trace in traces:
            assert trace.info.trace_metadata["mlflow.modelId"] == model_input.model_id
            assert [s.name for s in trace.data.spans][1:] == [
                "target",
                "judge/completeness",
                "judge/correctness",
            ]
            fbs = {a.name: a for a in trace.info.assessments if a.feedback is not None}
            # "<metric>/<score>": never one of MLflow's built-in scorer names (tracking/trace_names.py)
            assert set(fbs) == {"completeness/completeness", "correctness/correctness"}
            for fb in fbs.values():
                assert fb.source.source_type == "LLM_JUDGE" and fb.source.source_id == "mock/judge"
                assert fb.value in (1, 2, 3, 4, 5) and "RATING" in fb.rationale

    for key in KEYS:
        assert means["mock/faithful-summarizer"][key] > means["mock/poor-summarizer"][key]
    models = cl.search_logged_models(experiment_ids=[parent.info.experiment_id])
    assert len(models) == 2


# ------------------------------------------------------------------------------------- idempotency


def test_identical_rerun_is_reused_and_force_makes_a_new_run(seed_eval, mlflow_uri):
    args = dict(experiment="idem", tracking_uri=mlflow_uri, limit=5, progress_bar=False)
    first = evaluate(seed_eval["config"], seed_eval["faithful"], **args)
    n_requests = seed_eval["server"].request_count
    again = evaluate(seed_eval["config"], seed_eval["faithful"], **args)
    assert again.run_ids == first.run_ids and again.reused == [True] and first.reused == [False]
    assert seed_eval["server"].request_count == n_requests  # nothing was called again
    assert again.result.to_nemo_dict() == first.result.to_nemo_dict()
    assert len(list(again.result.iter_samples())) == 5  # samples read back from the run
    assert again.result.usage.requests == first.result.usage.requests
    # a different limit is a different evaluation
    other = evaluate(seed_eval["config"], seed_eval["faithful"], **{**args, "limit": 4})
    assert other.run_ids != first.run_ids and other.reused == [False]
    forced = evaluate(seed_eval["config"], seed_eval["faithful"], force=True, **args)
    assert forced.run_ids != first.run_ids and forced.reused == [False]
    cl = _client(mlflow_uri)
    runs = cl.search_runs([first.experiment_id])
    assert len(runs) == 3
    # the LoggedModel is per target: all three runs report to the same one
    assert len({cl.get_run(r.info.run_id).inputs.model_inputs[0].model_id for r in runs}) == 1


def test_a_routing_header_or_query_value_is_part_of_the_identity_a_key_is_not(seed_eval, mlflow_uri):
    # Two deployments behind one gateway URL, told apart by a header (or an api-version): the second is
    # a new evaluation, not a reuse of the first (the redacted documents of both look the same).
    args = dict(experiment="route", tracking_uri=mlflow_uri, limit=3, progress_bar=False)
    base = seed_eval["faithful"]
    ep = base["model"]["api_endpoint"]

    def routed(route: str, key: str, version: str) -> dict[str, Any]:
        url = f"{ep['url']}?api-version={version}"
        headers = {"X-Route": route, "X-Api-Key": key}
        return {**base, "model": {"api_endpoint": {**ep, "url": url, "headers": headers}}}

    first = evaluate(seed_eval["config"], routed("blue", "key-one-1111", "1"), **args)
    rotated = evaluate(seed_eval["config"], routed("blue", "key-two-2222", "1"), **args)
    assert rotated.reused == [True] and rotated.run_ids == first.run_ids  # a rotated key: same evaluation
    n_requests = seed_eval["server"].request_count
    other = evaluate(seed_eval["config"], routed("green", "key-one-1111", "1"), **args)
    assert other.reused == [False] and other.run_ids != first.run_ids
    assert seed_eval["server"].request_count > n_requests  # the header is in the cache key too
    version = evaluate(seed_eval["config"], routed("blue", "key-one-1111", "2"), **args)
    assert version.reused == [False] and version.run_ids not in (first.run_ids, other.run_ids)


def test_two_target_rerun_reuses_parent_and_children(seed_eval, mlflow_uri):
    args = dict(experiment="idem-two", tracking_uri=mlflow_uri, limit=3, progress_bar=False)
    first = evaluate(seed_eval["config"], [seed_eval["faithful"], seed_eval["poor"]], **args)
    again = evaluate(seed_eval["config"], [seed_eval["faithful"], seed_eval["poor"]], **args)
    assert again.parent_run_id == first.parent_run_id and again.run_ids == first.run_ids
    assert again.reused == [True, True]


def test_no_tracking_runs_without_mlflow(seed_eval, mlflow_uri):
    ev = evaluate(seed_eval["config"], seed_eval["faithful"], tracking=False, limit=3, progress_bar=False)
    assert ev.run_ids == [] and ev.parent_run_id is None and ev.experiment_id is None
    stats = ev.result.tasks[TASK]["completeness"]["completeness"].stats
    assert stats is not None and stats.count == 3
    assert _client(mlflow_uri).search_runs(["0"]) == []


def test_invalid_config_fails_before_any_run_is_created(seed_eval, mlflow_uri):
    cfg = copy.deepcopy(seed_eval["config"])
    cfg["tasks"][TASK]["metrics"]["completeness"]["params"]["scores"]["completeness"]["parser"]["pattern"] = (
        "("
    )
    with pytest.raises(ConfigError):
        evaluate(cfg, seed_eval["faithful"], experiment="bad", tracking_uri=mlflow_uri)
    assert _client(mlflow_uri).get_experiment_by_name("bad") is None


def test_register_model_with_alias(seed_eval, mlflow_uri):
    ev = evaluate(
        seed_eval["config"],
        [seed_eval["faithful"], seed_eval["poor"]],
        experiment="reg",
        tracking_uri=mlflow_uri,
        limit=3,
        register_model="summarizers",
        alias="champion",
        progress_bar=False,
    )
    cl = _client(mlflow_uri)
    versions = cl.search_model_versions("name='summarizers'")
    assert len(versions) == 2
    champion = cl.get_model_version_by_alias("summarizers", "champion")
    faithful_model = cl.get_run(ev.run_ids[0]).inputs.model_inputs[0].model_id
    assert champion.source == f"models:/{faithful_model}"
    assert float(champion.tags[KEYS[0]]) == pytest.approx(cl.get_run(ev.run_ids[0]).data.metrics[KEYS[0]])
    # rerunning does not register duplicates
    evaluate(
        seed_eval["config"],
        [seed_eval["faithful"], seed_eval["poor"]],
        experiment="reg",
        tracking_uri=mlflow_uri,
        limit=3,
        register_model="summarizers",
        alias="champion",
        progress_bar=False,
    )
    assert len(cl.search_model_versions("name='summarizers'")) == 2


# ----------------------------------------------------------------------------------------- resume


_CHILD = """
import json, sys
from mlflow_nemo_judge.pipeline import evaluate
cfg, target, uri = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
evaluate(cfg, target, experiment="resume", tracking_uri=uri, limit=12, parallelism=2, progress_bar=False)
print("FINISHED-UNEXPECTEDLY")
"""


def _progress_logged(uri: str, experiment: str) -> bool:
    """True once the running evaluation has logged a progress point (some samples are complete)."""
    cl = _client(uri)
    exp = cl.get_experiment_by_name(experiment)
    runs = cl.search_runs([exp.experiment_id]) if exp else []
    return bool(runs) and bool(cl.get_metric_history(runs[0].info.run_id, "progress"))


def _keys_of(entries: Any, server: Any) -> list[str]:
    """Cache keys of answered requests, computed exactly as the client does (url, model, body sans model)."""
    out = []
    for e in entries:
        if e.status == 200:
            body = {k: v for k, v in e.body.items() if k != "model"}
            out.append(cache_key(f"http://{server.host}:{server.port}{e.path}", e.model, body))
    return out


def test_sigkilled_run_resumes_into_the_same_run_with_cached_calls(
    seed_eval, mlflow_uri, judge_cache, tmp_path, monkeypatch
):
    server = seed_eval["server"]
    monkeypatch.setenv("NJ_TEST_JUDGE_KEY", "judge-key-from-env-0001")
    cfg = _env_key_config(seed_eval["config"], "NJ_TEST_JUDGE_KEY")
    # Slow enough that the child is still calling when its run exists: with early start the calls begin
    # while MLflow is still being imported (2 calls per model at once, as the child sets).
    latency = 0.6
    server.set_latency(latency)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(cfg), json.dumps(seed_eval["faithful"]), mlflow_uri],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not _progress_logged(mlflow_uri, "resume"):
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "the evaluation subprocess made no progress"
            time.sleep(0.1)
        # Freeze the endpoint (new calls hang unanswered), wait until every answered call is in the cache
        # (each put is committed at once: no commit timer to wait for), then kill: no call answered
        # before the kill may be repeated. Calls already inside their latency still get answered,
        # so the check must also hold once they are through.
        server.set_latency(120)
        frozen = time.monotonic()
        while True:
            with sqlite3.connect(judge_cache / "responses.sqlite") as con:
                cached_now = {k for (k,) in con.execute("SELECT key FROM responses")}
            settled = time.monotonic() - frozen > latency + 0.05
            if settled and set(_keys_of(server.requests, server)) <= cached_now:
                break
            assert time.monotonic() - frozen < 10, "answered calls did not reach the cache"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    server.set_latency(0)
    before = server.requests
    answered_before = _keys_of(before, server)
    assert 0 < len(answered_before) < 36

    cl = _client(mlflow_uri)
    exp = cl.get_experiment_by_name("resume")
    (run,) = cl.search_runs([exp.experiment_id])
    assert run.info.status == "RUNNING"  # what a killed process leaves behind
    assert run.data.tags["nemo_judge.state"] == "running"
    with sqlite3.connect(judge_cache / "responses.sqlite") as con:
        cached = {k for (k,) in con.execute("SELECT key FROM responses")}
    assert set(answered_before) <= cached

    ev = resume(run.info.run_id, tracking_uri=mlflow_uri)
    assert ev.run_ids == [run.info.run_id] and ev.reused == [False]
    assert len(cl.search_runs([exp.experiment_id])) == 1
    after = server.requests[len(before) :]
    answered_after = _keys_of(after, server)
    # no identical call is answered twice, and each call was made exactly once across kill and resume
    assert len(set(answered_after)) == len(answered_after)
    assert not set(answered_after) & set(answered_before)
    assert len(answered_before) + len(answered_after) == 36  # 12 target calls + 2 x 12 judge calls
    usage = ev.result.usage
    assert usage.cache_hits == len(answered_before) > 0
    assert usage.requests == 36 - len(answered_before)

    resumed = cl.get_run(run.info.run_id)
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["nemo_judge.resume_count"] == "1"
    progress = cl.get_metric_history(run.info.run_id, "progress")
    assert progress[-1].value == 100 and len(progress) >= 2
    assert [p.step for p in progress] == sorted(p.step for p in progress)

    # an uninterrupted run, with its own cache, scores exactly the same
    monkeypatch.setenv("NEMO_JUDGE_CACHE_DIR", str(tmp_path / "other-cache"))
    fresh = evaluate(
        cfg,
        seed_eval["faithful"],
        experiment="uninterrupted",
        tracking_uri=mlflow_uri,
        limit=12,
        progress_bar=False,
    )
    assert fresh.result.usage.cache_hits == 0
    expected = _score_metrics(cl, fresh.run_ids[0])
    got = _score_metrics(cl, run.info.run_id)
    assert set(got) == set(expected) and all(
        (math.isnan(got[k]) and math.isnan(expected[k])) or got[k] == pytest.approx(expected[k])
        for k in expected
    )


def test_resume_needs_the_config_when_a_literal_key_was_redacted(seed_eval, mlflow_uri):
    ev = evaluate(
        seed_eval["config"],
        seed_eval["faithful"],
        experiment="lit",
        tracking_uri=mlflow_uri,
        limit=2,
        progress_bar=False,
    )
    cl = _client(mlflow_uri)
    run_id = ev.run_ids[0]
    cl.update_run(run_id, status="RUNNING")  # as a killed process would leave it
    with pytest.raises(TrackingError, match=r"api_key.*pass the original config"):
        resume(run_id, tracking_uri=mlflow_uri)
    other = copy.deepcopy(seed_eval["config"])
    other["name"] = "something-else"
    with pytest.raises(TrackingError, match="not the one"):
        resume(run_id, tracking_uri=mlflow_uri, config=other)
    done = resume(run_id, tracking_uri=mlflow_uri, config=seed_eval["config"])
    assert done.run_ids == [run_id] and cl.get_run(run_id).info.status == "FINISHED"
    # a finished run is returned as it is
    assert resume(run_id, tracking_uri=mlflow_uri).reused == [True]


def test_resume_of_a_parent_finishes_its_children(seed_eval, mlflow_uri, monkeypatch):
    monkeypatch.setenv("NJ_TEST_JUDGE_KEY", "judge-key-from-env-0002")
    cfg = _env_key_config(seed_eval["config"], "NJ_TEST_JUDGE_KEY")
    ev = evaluate(
        cfg,
        [seed_eval["faithful"], seed_eval["poor"]],
        experiment="p-resume",
        tracking_uri=mlflow_uri,
        limit=2,
        progress_bar=False,
    )
    cl = _client(mlflow_uri)
    assert ev.parent_run_id is not None
    for rid in (ev.parent_run_id, ev.run_ids[1]):
        cl.update_run(rid, status="RUNNING")
    again = resume(ev.parent_run_id, tracking_uri=mlflow_uri)
    assert again.run_ids == ev.run_ids and again.reused == [True, False]
    assert {cl.get_run(r).info.status for r in (ev.parent_run_id, *ev.run_ids)} == {"FINISHED"}
    done = resume(ev.parent_run_id, tracking_uri=mlflow_uri)
    assert done.run_ids == ev.run_ids and done.reused == [True, True]  # in the targets' order


def test_resume_refuses_a_run_not_made_by_us(mlflow_uri):
    cl = _client(mlflow_uri)
    run = cl.create_run("0")
    with pytest.raises(TrackingError, match="not made by mlflow-nemo-judge"):
        resume(run.info.run_id, tracking_uri=mlflow_uri)
    with pytest.raises(TrackingError, match="not found"):
        resume("0123456789abcdef0123456789abcdef", tracking_uri=mlflow_uri)


def test_resume_finds_relative_dataset_paths_from_the_config_folder(
    seed_eval, mlflow_uri, tmp_path, monkeypatch, consults_path
):
    monkeypatch.setenv("NJ_TEST_JUDGE_KEY", "judge-key-from-env-0003")
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "consults.jsonl").write_bytes(consults_path.read_bytes())
    cfg = _env_key_config(seed_eval["config"], "NJ_TEST_JUDGE_KEY")
    cfg["tasks"][TASK]["dataset"]["files_url"] = "consults.jsonl"  # relative to the config file
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "target.json").write_text(json.dumps(seed_eval["poor"]))
    monkeypatch.chdir(folder)
    ev = evaluate(
        folder / "config.json",
        folder / "target.json",
        experiment="rel",
        tracking_uri=mlflow_uri,
        limit=2,
        progress_bar=False,
    )
    cl = _client(mlflow_uri)
    run_id = ev.run_ids[0]
    tags = cl.get_run(run_id).data.tags
    # Portable paths in the tags: the config's from the working folder, the target's from the config's.
    assert tags["nemo_judge.config_path"] == "config.json" and tags["nemo_judge.target_path"] == "target.json"
    cl.update_run(run_id, status="KILLED")
    monkeypatch.chdir(tmp_path)  # elsewhere: "consults.jsonl" does not resolve against the cwd
    again = resume(run_id, tracking_uri=mlflow_uri)
    assert (
        again.run_ids == [run_id] and again.result.usage.cache_hits == 6 and again.result.usage.requests == 0
    )
    assert cl.get_run(run_id).info.status == "FINISHED"
