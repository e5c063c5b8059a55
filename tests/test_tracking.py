"""tracking: what goes into MLflow (keys, params, prompts, tables, metrics) and the run lifecycle
(FAILED with a redacted traceback, KILLED on Ctrl-C), plus a scan of the whole store for secrets."""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mlflow_nemo_judge import tracking
from mlflow_nemo_judge.backends.base import Prepared, RunEvents
from mlflow_nemo_judge.config import MASK, load_config, load_target
from mlflow_nemo_judge.pipeline import evaluate
from mlflow_nemo_judge.results import EvalResult, MetricOutcome, SampleRecord, Score, ScoreStats, Usage
from tests.conftest import mock_target
from tests.fixtures.seed_config import seed_config, seed_target

pytestmark = pytest.mark.usefixtures("judge_cache")

TASK = "consult_summary_eval"


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


# ------------------------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("t/m/s", "t/m/s"),
        ("t/pass@1/score", "t/pass_at_1/score"),
        ("a=b/[0]/c,d", "a_b/_0_/c_d"),
        ("/lead//double/trail/", "lead/double/trail"),
        ("t/../x", "t/__/x"),
        ("judge/cfg:temp v1.0-a", "judge/cfg_temp v1.0-a"),
    ],
)
def test_sanitize_key_maps_into_mlflows_charset(key, expected):
    assert tracking.sanitize_key(key) == expected


def test_sanitize_key_shortens_long_keys_uniquely():
    a, b = "t/" + "x" * 300, "t/" + "x" * 299 + "y"
    ka, kb = tracking.sanitize_key(a), tracking.sanitize_key(b)
    assert len(ka) <= 250 and len(kb) <= 250 and ka != kb


def test_sanitized_keys_are_accepted_by_mlflow(mlflow_uri):
    from mlflow.entities import Metric

    cl = _client(mlflow_uri)
    run = cl.create_run("0")
    keys = [tracking.sanitize_key(k) for k in ("t/pass@1/x", "a=b,c[0]", "é/ü:ö", "/x//y/", "t/" + "z" * 400)]
    cl.log_batch(run.info.run_id, metrics=[Metric(k, 1.0, 0, 0) for k in keys])
    assert set(cl.get_run(run.info.run_id).data.metrics) == set(keys)


def test_logged_model_names_avoid_forbidden_characters():
    assert tracking.logged_model_name("meta/llama-3.1-70b:instruct") == "meta-llama-3-1-70b-instruct"


# ---------------------------------------------------------------------------------------- secrets


def test_collect_secrets_finds_literal_header_and_env_keys(monkeypatch):
    monkeypatch.setenv("NJ_T_KEY", "env-secret-value-1234")
    cfg = load_config(seed_config(openai_api_key="sk-literal-abcdef"))
    tgt = load_target(
        {
            "type": "model",
            "model": {
                "api_endpoint": {
                    "url": "http://x/v1",
                    "model_id": "m",
                    "api_key_env": "NJ_T_KEY",
                    "headers": {"X-Token": "hdr-secret-99"},
                }
            },
        }
    )
    secrets = tracking.collect_secrets(cfg, tgt)
    assert set(secrets) == {"sk-literal-abcdef", "env-secret-value-1234", "hdr-secret-99"}
    text = "failed with sk-literal-abcdef and Bearer env-secret-value-1234 (hdr-secret-99)"
    assert tracking.redact_text(text, secrets) == f"failed with {MASK} and Bearer {MASK} ({MASK})"


# ----------------------------------------------------------------------------------------- params


def test_params_are_flat_secret_free_and_hash_the_prompts(monkeypatch):
    monkeypatch.setenv("NJ_T_KEY", "env-secret-value-1234")
    raw = seed_config(openai_api_key="sk-literal-abcdef", files_url="data.jsonl")
    raw["params"] = {"parallelism": 4, "temperature": 0.0, "extra": {"seed": 7}}
    cfg = load_config(raw)
    tgt = load_target(
        {
            "type": "model",
            "model": {
                "api_endpoint": {
                    "url": "http://t/v1/chat/completions",
                    "model_id": "org/model",
                    "api_key_env": "NJ_T_KEY",
                    "headers": {"X-Token": "hdr-secret-99"},
                }
            },
        }
    )
    p = tracking.build_params(cfg, tgt, backend="local", limit=5, parallelism=None)
    assert p["config_sha256"] == cfg.sha256() and p["target_sha256"] == tgt.sha256()
    assert p["target/model_id"] == "org/model" and p["target/api_key_env"] == "NJ_T_KEY"
    assert (
        p["params/parallelism"] == "4" and p["params/temperature"] == "0.0" and p["params/extra/seed"] == "7"
    )
    assert p["run/limit"] == "5" and p["run/parallelism"] == "4"  # the effective value
    assert p[f"task/{TASK}/dataset/files_url"] == "data.jsonl"
    assert p[f"task/{TASK}/metric/completeness/judge/url"] == "https://api.openai.com/v1/chat/completions"
    assert p[f"task/{TASK}/metric/completeness/score/completeness/type"] == "int"
    assert len(p[f"task/{TASK}/metric/correctness/template_sha256"]) == 64
    assert (
        p[f"task/{TASK}/metric/correctness/template_sha256"]
        != p[f"task/{TASK}/metric/completeness/template_sha256"]
    )
    blob = json.dumps(p)
    for secret in ("sk-literal-abcdef", "env-secret-value-1234", "hdr-secret-99", MASK):
        assert secret not in blob
    assert not any(k.rsplit("/", 1)[-1] == "api_key" or "headers" in k for k in p)
    assert all(len(k) <= 250 for k in p)


def test_long_params_go_to_artifacts_never_truncated():
    short, files = tracking.split_long_params({"a": "x" * 6000, "b": "y" * 6001})
    assert short["a"] == "x" * 6000
    assert files == {"params/b.txt": "y" * 6001}
    assert short["b"].startswith("see artifact nemo_judge/params/b.txt (6001 chars")


def test_long_param_is_logged_as_an_artifact(seed_eval, mlflow_uri, tmp_path):
    cfg = copy.deepcopy(seed_eval["config"])
    cfg["description"] = "d" * 7000
    ev = evaluate(
        cfg, seed_eval["faithful"], experiment="long", tracking_uri=mlflow_uri, limit=2, progress_bar=False
    )
    cl = _client(mlflow_uri)
    value = cl.get_run(ev.run_ids[0]).data.params["config/description"]
    assert value.startswith("see artifact nemo_judge/params/config/description.txt")
    local = cl.download_artifacts(ev.run_ids[0], "nemo_judge/params/config/description.txt", str(tmp_path))
    assert Path(local).read_text() == "d" * 7000


# ------------------------------------------------------------------------------- prompts, tables


def test_prompt_documents_render_templates_as_markdown():
    cfg = load_config(seed_config())
    docs = tracking.prompt_documents(cfg)
    assert set(docs) == {
        f"prompts/{TASK}/target.md",
        f"prompts/{TASK}/completeness.md",
        f"prompts/{TASK}/correctness.md",
    }
    judge = docs[f"prompts/{TASK}/completeness.md"]
    assert (
        "Judge model `gpt-4.1`" in judge and "RATING: <number>" in judge and "RATING:\\\\s*(\\\\d+)" in judge
    )
    assert "### message 2: user" in judge and "{{ sample.output_text }}" in judge
    assert "| `max_tokens` | `200` |" in docs[f"prompts/{TASK}/target.md"]


def test_prompt_fences_survive_backticks_in_templates():
    raw = seed_config()
    raw["tasks"][TASK]["params"]["template"]["messages"][0]["content"] = "use ```code``` here"
    doc = tracking.prompt_documents(load_config(raw))[f"prompts/{TASK}/target.md"]
    assert "````jinja\nuse ```code``` here\n````" in doc


def test_template_fields_are_the_row_fields_the_prompts_read():
    raw = seed_config()
    raw["tasks"][TASK]["metrics"]["completeness"]["params"]["template"]["messages"][1]["content"] += (
        "{{ item['Reference Summary'] }} {{ specialty }}"
    )
    fields = tracking.template_fields(load_config(raw))
    assert fields == {TASK: {"content", "Reference Summary", "specialty"}}


def test_table_row_has_inputs_output_scores_raw_and_error():
    rec = SampleRecord(
        task="t",
        index=3,
        item_id="C004",
        item={"content": "consult", "summary": "ref", "Age": 40},
        output_text="out",
        metrics={"m": MetricOutcome({"s": float("nan")}, raw="no score", error="bad")},
    )
    row = tracking.table_row(rec, {"content", "age"})
    assert row == {
        "task": "t",
        "index": 3,
        "item_id": "C004",
        "item_content": "consult",
        "item_Age": 40,
        "output_text": "out",
        "target_error": None,
        "m/s": None,
        "m/raw_judge_output": "no score",
        "m/error": "bad",
    }
    # What a reader scans first comes first: the item, the output, the scores.
    assert list(row)[:3] == ["item_id", "output_text", "m/s"]


# ---------------------------------------------------------------------------------------- metrics


def test_score_metrics_keys_stats_and_nan_means():
    res = EvalResult(
        tasks={
            "t": {
                "m@1": {
                    "pass@1": Score(
                        0.5, ScoreStats(count=4, nan_count=1, stddev=0.5, ci95_low=0.1, ci95_high=0.9)
                    )
                },
                "judge": {"r": Score(None, ScoreStats(count=0, nan_count=3))},
            }
        },
        groups={"g": {"judge": {"r": Score(2.0, ScoreStats(count=1, nan_count=0))}}},
    )
    got = {m.key: m for m in tracking.score_metrics(res)}
    assert got["t/m_at_1/pass_at_1"].value == 0.5 and got["t/m_at_1/pass_at_1"].headline
    assert (
        got["t/m_at_1/pass_at_1/ci95_high"].value == 0.9 and not got["t/m_at_1/pass_at_1/ci95_high"].headline
    )
    assert math.isnan(got["t/judge/r"].value)
    assert got["t/judge/r/count"].value == 0 and got["t/judge/r/nan_count"].value == 3
    assert "t/judge/r/stddev" not in got  # unknown stats are not invented
    assert got["groups/g/judge/r"].task is None
    assert (
        tracking.usage_metrics(Usage(requests=3, wall_seconds=2.0, samples=4))["usage/samples_per_second"]
        == 2.0
    )


def test_all_nan_scores_are_logged_as_nan_with_counts(seed_eval, mlflow_uri):
    cfg = copy.deepcopy(seed_eval["config"])
    cfg["tasks"][TASK]["metrics"]["correctness"]["params"]["model"] = {
        "api_endpoint": {
            "url": f"{seed_eval['server'].base_url}/chat/completions",
            "model_id": "mock/judge-malformed",
        }
    }
    ev = evaluate(
        cfg,
        seed_eval["faithful"],
        experiment="nan",
        tracking_uri=mlflow_uri,
        limit=3,
        progress_bar=False,
        trace_samples=1,
    )
    m = _client(mlflow_uri).get_run(ev.run_ids[0]).data.metrics
    key = f"{TASK}/correctness/correctness"
    assert math.isnan(m[key]) and m[f"{key}/count"] == 0 and m[f"{key}/nan_count"] == 3
    assert f"{key}/stddev" not in m
    assert m[f"{TASK}/completeness/completeness/count"] == 3
    # the unparseable score is a Feedback carrying the error (and the raw text), not a value
    import mlflow

    (trace,) = mlflow.search_traces(locations=[ev.experiment_id], run_id=ev.run_ids[0], return_type="list")
    fbs = {a.name: a for a in trace.info.assessments}
    bad, good = fbs["correctness/correctness"], fbs["completeness/completeness"]
    assert bad.value is None and bad.error is not None
    assert bad.source.source_id == "mock/judge-malformed" and bad.rationale
    assert good.error is None and good.value >= 1


# -------------------------------------------------------------------------------------- progress


class _RecordingClient:
    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.threads: set[int] = set()
        self.logged = threading.Event()

    def log_batch(self, run_id: str, metrics: Any = (), **_: Any) -> None:
        self.threads.add(threading.get_ident())
        self.batches.append(list(metrics))
        self.logged.set()


def test_progress_is_coalesced_and_written_off_the_callers_thread():
    cl = _RecordingClient()
    # An interval longer than the test: nothing is written unless flushed explicitly.
    prog = tracking._ProgressLogger(cl, "r", n_tasks=2, step0=5, interval=3600)
    for i in range(1, 1001):
        prog("a", i, 1000)
    assert cl.batches == []  # a thousand callbacks, no MLflow call on the engine's thread
    assert prog.percent() == pytest.approx(50.0)  # the second task has not started
    prog.flush()
    prog("b", 1, 4)
    prog.flush()
    prog.flush()  # nothing new since the last write: no metric
    prog.close()
    values = [(m.step, m.value) for b in cl.batches for m in b]
    assert values == [(5, 50.0), (6, pytest.approx(62.5))]
    assert prog._thread is None


def test_progress_thread_writes_on_its_own_interval():
    cl = _RecordingClient()
    prog = tracking._ProgressLogger(cl, "r", n_tasks=1, step0=0, interval=0.01)
    prog("a", 1, 2)
    assert cl.logged.wait(30), "the progress thread never wrote"
    prog.close()
    assert threading.get_ident() not in cl.threads
    assert cl.batches[0][0].value == pytest.approx(50.0)


# ------------------------------------------------------------------------------------- lifecycle


class _FakeBackend:
    name = "local"

    def __init__(self, behaviour: str, secret: str = "") -> None:
        self.behaviour, self.secret = behaviour, secret

    def prepare(self, config: Any, target: Any) -> Prepared:
        return Prepared(config, target, [], None)

    async def run(self, prepared: Prepared, events: RunEvents) -> EvalResult:
        assert events.on_job is not None and events.on_progress is not None
        events.on_job({"id": "eval-job-42", "status": "running", "auth": {"api_key": self.secret}})
        events.on_progress(TASK, 1, 4)
        if self.behaviour == "interrupt":
            raise KeyboardInterrupt
        raise RuntimeError(f"endpoint said: invalid key {self.secret} for this model")


@pytest.fixture
def fake_backend(monkeypatch):
    from mlflow_nemo_judge import backends

    def install(behaviour: str, secret: str = "") -> None:
        monkeypatch.setattr(backends, "get_backend", lambda name, **kw: _FakeBackend(behaviour, secret))

    return install


def test_backend_failure_marks_the_run_failed_with_a_redacted_traceback(
    fake_backend, mlflow_uri, tmp_path, consults_path
):
    secret = "sk-this-must-never-be-logged-4242"
    fake_backend("raise", secret)
    with pytest.raises(RuntimeError, match="invalid key"):
        evaluate(
            seed_config(openai_api_key=secret, files_url=str(consults_path)),
            seed_target(),
            experiment="fails",
            tracking_uri=mlflow_uri,
            limit=2,
        )
    cl = _client(mlflow_uri)
    (run,) = cl.search_runs([cl.get_experiment_by_name("fails").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["nemo_judge.state"] == "failed"
    assert (
        run.data.tags["nemo_judge.error"] == f"RuntimeError: endpoint said: invalid key {MASK} for this model"
    )
    assert run.data.tags["nemo_judge.job_id"] == "eval-job-42"
    tb = Path(cl.download_artifacts(run.info.run_id, "nemo_judge/error.txt", str(tmp_path))).read_text()
    assert "Traceback (most recent call last)" in tb and "RuntimeError" in tb and MASK in tb
    assert secret not in tb
    job = json.loads(
        Path(cl.download_artifacts(run.info.run_id, "nemo_judge/job.json", str(tmp_path))).read_text()
    )
    assert job["auth"]["api_key"] == MASK


def test_keyboard_interrupt_marks_the_run_killed(fake_backend, mlflow_uri, consults_path, monkeypatch):
    """On the sequential path the run exists before the backend starts (an interrupt during an early
    start, after the run exists, is ``test_tracking_overlap``'s)."""
    monkeypatch.setenv("NEMO_JUDGE_EARLY_START", "0")
    fake_backend("interrupt")
    with pytest.raises(KeyboardInterrupt):
        evaluate(
            seed_config(files_url=str(consults_path)),
            seed_target(),
            experiment="killed",
            tracking_uri=mlflow_uri,
            limit=2,
        )
    cl = _client(mlflow_uri)
    (run,) = cl.search_runs([cl.get_experiment_by_name("killed").experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["nemo_judge.state"] == "killed"


def test_run_is_created_running_before_the_first_model_call(seed_eval, mlflow_uri, monkeypatch):
    """Without early start the backend sees a RUNNING run before any model call; its setup (params,
    artifacts, inputs, the LoggedModel) is all there once the run finished."""
    from mlflow_nemo_judge.backends.local import LocalBackend

    monkeypatch.setenv("NEMO_JUDGE_EARLY_START", "0")

    seen: dict[str, Any] = {}
    real_run = LocalBackend.run

    def spy(self: Any, config: Any, target: Any, **kw: Any) -> EvalResult:
        cl = _client(mlflow_uri)
        (found,) = cl.search_runs([cl.get_experiment_by_name("order").experiment_id])
        seen.update(status=found.info.status, requests=seed_eval["server"].request_count)
        return real_run(self, config, target, **kw)

    monkeypatch.setattr(LocalBackend, "run", spy)
    ev = evaluate(
        seed_eval["config"],
        seed_eval["faithful"],
        experiment="order",
        tracking_uri=mlflow_uri,
        limit=2,
        progress_bar=False,
    )
    assert seen["status"] == "RUNNING" and seen["requests"] == 0
    cl = _client(mlflow_uri)
    run = cl.get_run(ev.run_ids[0])
    assert len(run.data.params) > 20
    artifacts = {f.path for f in cl.list_artifacts(run.info.run_id, "nemo_judge")}
    assert {"nemo_judge/config.json", "nemo_judge/target.json", "nemo_judge/prompts"} <= artifacts
    assert len(run.inputs.dataset_inputs) == 1 and len(run.inputs.model_inputs) == 1


def test_the_setup_is_written_beside_the_first_model_calls(seed_eval, mlflow_uri, monkeypatch):
    """A slow setup write (here: the prompt registry) does not hold back the model calls: the first
    request reaches the endpoint while it is still being written, and the run still gets all of it."""
    from mlflow_nemo_judge.tracking import prompts

    server = seed_eval["server"]
    real = prompts.register_and_link
    during: list[int] = []

    def slow(*a: Any, **kw: Any) -> Any:
        deadline = time.monotonic() + 20
        while server.request_count == 0 and time.monotonic() < deadline:
            time.sleep(0.02)  # finishes only once the evaluation's calls have started
        during.append(server.request_count)
        return real(*a, **kw)

    monkeypatch.setattr(prompts, "register_and_link", slow)
    ev = evaluate(
        seed_eval["config"],
        seed_eval["faithful"],
        experiment="overlap",
        tracking_uri=mlflow_uri,
        limit=3,
        progress_bar=False,
    )
    assert during and during[0] > 0
    run = _client(mlflow_uri).get_run(ev.run_ids[0])
    assert run.info.status == "FINISHED" and run.data.tags.get(tracking.TAG_SETUP) == "true"
    linked = json.loads(run.data.tags.get("mlflow.linkedPrompts", "[]"))
    assert len(linked) == 3  # the slow step's own work reached the run: target + 2 judge prompts


# ------------------------------------------------------------------------------------ secret scan


def test_no_key_reaches_the_mlflow_store(seed_eval, mlflow_uri, tmp_path, monkeypatch, fake_backend):
    server = seed_eval["server"]
    literal_judge = "sk-LITERALJUDGE-8b2d4e6f0a1c"
    literal_target = "nvapi-LITERALTARGET-c0ffee12"
    env_target = "nvapi-ENVTARGET-5f3a9c71d2e8"
    header = "hdr-HEADERSECRET-77aa99bb"
    monkeypatch.setenv("NJ_SCAN_TARGET_KEY", env_target)
    cfg = seed_config(
        openai_api_key=literal_judge,
        judge_url=f"{server.base_url}/chat/completions",
        judge_model="mock/judge",
        files_url=seed_eval["config"]["tasks"][TASK]["dataset"]["files_url"],
    )
    targets = [
        mock_target(
            server,
            "mock/faithful-summarizer",
            api_key_env="NJ_SCAN_TARGET_KEY",
            headers={"X-Tenant-Token": header},
        ),
        mock_target(server, "mock/poor-summarizer", api_key=literal_target),
    ]
    evaluate(
        cfg,
        targets,
        experiment="scan",
        tracking_uri=mlflow_uri,
        limit=3,
        register_model="scanned",
        progress_bar=False,
    )
    assert server.request_count > 0
    fake_backend("raise", env_target)
    with pytest.raises(RuntimeError):
        evaluate(cfg, targets[0], experiment="scan", tracking_uri=mlflow_uri, limit=3, force=True)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and any("nemo_judge" in str(p) for p in files)
    for p in files:
        data = p.read_bytes()
        for secret in (literal_judge, literal_target, env_target, header):
            assert secret.encode() not in data, f"{secret} found in {p}"


def test_tracking_scope_restores_the_process_wide_uri_exactly(monkeypatch, tmp_path):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///outer.db")
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///outer.db")
    with tracking.tracking_scope(f"sqlite:///{tmp_path}/inner.db"):
        assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path}/inner.db"
    assert mlflow.get_tracking_uri() == "sqlite:///outer.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///changed.db")
    assert mlflow.get_tracking_uri() == "sqlite:///changed.db"  # not pinned by the scope


def test_traces_fall_back_to_the_public_span_api(seed_eval, mlflow_uri, monkeypatch):
    """Without MLflow's internal tracing client the same traces and Feedbacks go through the span API."""
    import mlflow

    def unavailable(*args: Any, **kwargs: Any) -> None:
        raise ImportError("no batch writer in this MLflow")

    monkeypatch.setattr(tracking._BatchTraceWriter, "__init__", unavailable)
    ev = evaluate(
        seed_eval["config"],
        seed_eval["poor"],
        experiment="spans",
        tracking_uri=mlflow_uri,
        limit=2,
        progress_bar=False,
        trace_samples=5,
    )
    run = _client(mlflow_uri).get_run(ev.run_ids[0])
    assert run.data.tags["nemo_judge.traces"] == "2"
    traces = mlflow.search_traces(locations=[ev.experiment_id], run_id=ev.run_ids[0], return_type="list")
    assert len(traces) == 2
    for trace in traces:
        assert trace.info.trace_metadata["mlflow.modelId"] == run.inputs.model_inputs[0].model_id
        assert {a.name for a in trace.info.assessments} == {
            "completeness/completeness",
            "correctness/correctness",
        }
        assert {s.name for s in trace.data.spans} == {
            f"{TASK}/{trace.info.tags['nemo_judge.item_id']}",
            "target",
            "judge/completeness",
            "judge/correctness",
        }


def test_a_table_logged_again_replaces_the_old_one(mlflow_uri, tmp_path):
    """log_table appends to an existing file; a resumed run must replace its table, not duplicate rows."""
    import pandas as pd

    cl = _client(mlflow_uri)
    tr = tracking.RunTracker.create(cl, "0", run_name="t", description="d", tags={})
    tr._log_table(pd.DataFrame({"item_id": ["a", "b"], "s": [1.0, 2.0]}), tracking.ART_TABLE)
    tr._log_table(pd.DataFrame({"item_id": ["a", "b", "c"], "s": [1.0, 2.0, None]}), tracking.ART_TABLE)
    frame = tracking.load_samples_frame(tr.run_id, mlflow_uri)
    assert list(frame["item_id"]) == ["a", "b", "c"]
    tags = cl.get_run(tr.run_id).data.tags
    assert json.loads(tags["mlflow.loggedArtifacts"]) == [{"path": tracking.ART_TABLE, "type": "table"}]


def test_experiment_resolution(mlflow_uri, monkeypatch):
    cl = _client(mlflow_uri)
    assert tracking.resolve_experiment(cl, None) == "0"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    env_id = tracking.resolve_experiment(cl, None)
    assert cl.get_experiment(env_id).name == "from-env"
    assert tracking.resolve_experiment(cl, "from-env") == env_id  # found, not created twice
    cl.delete_experiment(env_id)
    with pytest.raises(tracking.TrackingError, match="deleted"):
        tracking.resolve_experiment(cl, "from-env")
