"""Issue 12 item 6: where the package and NeMo Evaluator v1 would silently differ, it now warns, aligns or
refuses up front (extensions warned with --backend nemo, reasoning_params as NeMo documents them, the
cached-output field, BLEU/ROUGE/EM/F1 without a candidate, the job wait bound, hf:// endpoint)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlflow_nemo_judge import settings
from mlflow_nemo_judge.backends.nemo import NemoBackend
from mlflow_nemo_judge.backends.nemo.divergence import divergences
from mlflow_nemo_judge.config import load_config, load_target
from mlflow_nemo_judge.data.hub import hf_endpoint
from mlflow_nemo_judge.data.source import DatasetSource
from mlflow_nemo_judge.errors import ConfigError
from mlflow_nemo_judge.plan import build_plan
from mlflow_nemo_judge.plan_metrics import judge_spec
from mlflow_nemo_judge.scoring.parsing import strip_reasoning
from tests.fixtures.seed_config import seed_config

JUDGE = {"api_endpoint": {"url": "http://127.0.0.1:9/v1/chat/completions", "model_id": "j", "api_key": "k"}}


def _data_config(tmp_path: Path, metrics: dict[str, Any], rows: str = '{"a": "x", "ref": "x"}\n') -> Any:
    data = tmp_path / "d.jsonl"
    data.write_text(rows)
    return load_config(
        {
            "type": "custom",
            "tasks": {"t": {"type": "data", "dataset": {"files_url": str(data)}, "metrics": metrics}},
        }
    )


# --- (a) extensions warned with --backend nemo -------------------------------------------------------


def test_each_extension_is_named_by_its_config_path() -> None:
    cfg = seed_config(files_url="hf://datasets/ns/data")
    metrics = cfg["tasks"]["consult_summary_eval"]["metrics"]
    judge = metrics["completeness"]["params"]
    judge["model"] = copy.deepcopy(judge["model"])  # the seed's judges share one model dict
    judge["model"]["api_endpoint"]["headers"] = {"X-Gateway": "g"}
    judge["scores"]["completeness"]["parser"] = {"type": "json", "json_path": "score"}
    judge["scores"]["completeness"]["type"] = "bool"
    metrics["r"] = {"type": "rouge", "params": {"reference": "{{ item.ref }}", "candidate": "{{ item.a }}"}}
    metrics["b"] = {"type": "bleu", "params": {"references": ["{{ item.ref }}"]}}  # documented: no warning
    target = {
        "type": "model",
        "model": {"api_endpoint": {"url": "u", "model_id": "m", "headers": {"A": "b"}}},
    }
    paths = sorted(p for p, _ in divergences(cfg, target))
    base = "tasks.consult_summary_eval.metrics"
    assert paths == sorted(
        [
            f"{base}.completeness.params.model.api_endpoint.headers",
            f"{base}.completeness.params.scores.completeness.parser.type",
            f"{base}.completeness.params.scores.completeness.type",
            f"{base}.r.params.reference",
            f"{base}.r.params.candidate",
            "target.model.api_endpoint.headers",
        ]
    )


def test_a_documented_config_has_no_divergence() -> None:
    assert divergences(seed_config(files_url="hf://datasets/ns/data")) == []


def test_nemo_prepare_warns_once_per_extension_and_still_submits_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = seed_config(files_url="hf://datasets/ns/data")
    cfg["tasks"]["consult_summary_eval"]["metrics"]["em"] = {
        "type": "em",
        "params": {"reference": "{{ item.x }}"},
    }
    config = load_config(cfg)
    target = load_target(
        {"type": "model", "model": {"api_endpoint": {"url": "http://t/v1", "model_id": "t"}}}
    )
    backend = NemoBackend(
        "http://nemo.test", http=httpx.Client(transport=httpx.MockTransport(lambda r: None))
    )  # type: ignore[arg-type,return-value]
    with caplog.at_level(logging.WARNING, logger="mlflow_nemo_judge.backends.nemo"):
        backend.prepare(config, target)
    lines = [r.getMessage() for r in caplog.records if "local-only extension" in r.getMessage()]
    assert lines == [
        "--backend nemo: tasks.consult_summary_eval.metrics.em.params.reference is a local-only extension; "
        "NeMo v1 documents no params for 'em' (reference is the successor platform's field): NeMo may "
        "ignore it and score against its own default"
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records if "local-only" in r.getMessage())
    backend.close()


# --- (c) reasoning_params as NeMo documents them -----------------------------------------------------


def test_no_end_token_leaves_think_blocks_alone_like_nemo() -> None:
    text = "<think>RATING: 1?</think>RATING: 5"
    assert strip_reasoning(text, None) == (text, None)


def test_include_if_not_finished_decides_kept_or_nan() -> None:
    unfinished = "<think>RATING: 2 is tempting but"
    assert strip_reasoning(unfinished, "</think>") == (unfinished, None)  # NeMo's default: kept
    assert strip_reasoning(unfinished, "</think>", include_if_not_finished=True) == (unfinished, None)
    text, err = strip_reasoning(unfinished, "</think>", include_if_not_finished=False)
    assert text == "" and err is not None and "include_if_not_finished is false" in err
    # A finished reply is cut after the end token whatever the flag says.
    assert strip_reasoning("a</think> RATING: 4", "</think>", include_if_not_finished=False) == (
        "RATING: 4",
        None,
    )


def test_effort_is_sent_to_the_judge_and_the_flag_reaches_the_spec() -> None:
    cfg = seed_config(files_url="hf://datasets/ns/data")
    params = cfg["tasks"]["consult_summary_eval"]["metrics"]["completeness"]["params"]
    params["model"]["prompt"] = {
        "reasoning_params": {"effort": "low", "end_token": "</think>", "include_if_not_finished": False}
    }
    metric = load_config(cfg).tasks["consult_summary_eval"].metrics["completeness"]  # type: ignore[index]
    spec = judge_spec("tasks.consult_summary_eval.metrics.completeness", metric.params, resolve_secrets=False)  # type: ignore[union-attr]
    assert spec.inference["reasoning_effort"] == "low"
    assert spec.include_if_not_finished is False and spec.end_token == "</think>"


# --- (d) the cached-output field ---------------------------------------------------------------------


def test_answer_column_is_never_the_cached_output(tmp_path: Path) -> None:
    data = tmp_path / "math.jsonl"
    data.write_text('{"question": "1+1", "answer": "2"}\n')
    cfg = {
        "type": "custom",
        "tasks": {
            "t": {
                "type": "data",
                "metrics": {
                    "ok": {"type": "string-check", "params": {"check": ["{{ item.answer }}", "equals", "2"]}}
                },
            }
        },
    }
    target = load_target({"type": "cached_outputs", "cached_outputs": {"files_url": str(data)}})
    with pytest.raises(ConfigError) as info:
        build_plan(load_config(cfg), target, resolve_secrets=False)
    msg = str(info.value)
    assert "cached outputs need an output field" in msg and "'answer' is read as a reference" in msg
    assert "output_text" in msg and "answer, question" in msg


# --- (e) BLEU/ROUGE/EM/F1 on a data task without a candidate ------------------------------------------


@pytest.mark.parametrize(
    ("mtype", "params"),
    [
        ("bleu", {"references": ["{{ item.ref }}"]}),
        ("rouge", {"reference": "{{ item.ref }}"}),
        ("em", {"reference": "{{ item.ref }}"}),
        ("f1", {"reference": "{{ item.ref }}"}),
    ],
)
def test_data_task_metric_without_candidate_is_a_plan_error(
    tmp_path: Path, mtype: str, params: dict[str, Any]
) -> None:
    config = _data_config(tmp_path, {"m": {"type": mtype, "params": params}})
    rows = load_target({"type": "rows", "rows": [{"a": "x", "ref": "x"}]})
    with pytest.raises(ConfigError) as info:
        build_plan(config, rows, resolve_secrets=False)
    assert info.value.path == "tasks.t.metrics.m.params.candidate"
    assert "'data' task makes no model call" in str(info.value)


def test_data_task_metric_with_candidate_plans(tmp_path: Path) -> None:
    config = _data_config(
        tmp_path,
        {"m": {"type": "em", "params": {"reference": "{{ item.ref }}", "candidate": "{{ item.a }}"}}},
    )
    rows = load_target({"type": "rows", "rows": [{"a": "x", "ref": "x"}]})
    plan = build_plan(config, rows, resolve_secrets=False)
    assert plan.tasks[0].metrics[0].type == "em"


# --- (f) the job wait is bounded ----------------------------------------------------------------------


def test_job_timeout_default_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEMO_JUDGE_JOB_TIMEOUT", raising=False)
    assert settings.job_timeout_default() == 14400.0
    monkeypatch.setenv("NEMO_JUDGE_JOB_TIMEOUT", "0")
    assert settings.job_timeout_default() is None
    monkeypatch.setenv("NEMO_JUDGE_JOB_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="NEMO_JUDGE_JOB_TIMEOUT"):
        settings.job_timeout_default()
    monkeypatch.setenv("NEMO_JUDGE_JOB_TIMEOUT", "30")
    backend = NemoBackend("http://nemo.test")
    assert backend.timeout == 30.0
    assert NemoBackend("http://nemo.test", timeout=5.0).timeout == 5.0


# --- (b) hf:// goes to the configured NeMo Data Store ----------------------------------------------------


def test_hf_defaults_to_the_nemo_data_store_when_nemo_urls_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_ENDPOINT", "NEMO_DATASTORE_URL", "NEMO_EVALUATOR_URL"):
        monkeypatch.delenv(name, raising=False)
    source = DatasetSource("hf://datasets/ns/repo")
    assert hf_endpoint(source) is None  # nothing configured: huggingface_hub's default
    monkeypatch.setenv("NEMO_EVALUATOR_URL", "http://nemo:7331/v1")
    assert hf_endpoint(source) == "http://nemo:7331/v1/hf"  # the Data Store's default, as the client's
    monkeypatch.setenv("NEMO_DATASTORE_URL", "http://nds:3000/v1")
    assert hf_endpoint(source) == "http://nds:3000/v1/hf"
