"""The tool-calling metric: NeMo's score names and semantics, response-reading judge templates, and
NVIDIA's published tool-calling config (rewritten: tests/fixtures/tool_calling.py) run locally."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import httpx
import pytest

from mlflow_nemo_judge.config import load_config, load_target
from mlflow_nemo_judge.engine import run_local
from mlflow_nemo_judge.errors import ConfigError, ConfigWarning
from mlflow_nemo_judge.plan import build_plan
from mlflow_nemo_judge.scoring.templating import build_context
from mlflow_nemo_judge.scoring.tool_calling import compare, ground_truth_calls, score
from mlflow_nemo_judge.testing.mock_llm import MockLLMServer
from tests.conftest import mock_target
from tests.fixtures.tool_calling import EXPECTED, TOOL_ROWS, tool_calling_config

NAME, ARGS = "function_name_accuracy", "function_name_and_args_accuracy"


def _call(name: str, args: Any) -> dict[str, Any]:
    return {"id": "c", "type": "function", "function": {"name": name, "arguments": args}}


def _response(*calls: dict[str, Any], content: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = list(calls)
    return {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}


GT = {"get_weather": {"city": "Oslo"}, "get_time": {"city": "Oslo"}}


# ------------------------------------------------------------------------------------ the comparison


def test_order_of_calls_is_ignored():
    calls = [_call("get_time", '{"city": "Oslo"}'), _call("get_weather", '{"city": "Oslo"}')]
    assert compare(GT, calls) == (1.0, 1.0, None)


def test_arguments_compare_parsed_json_and_a_name_mismatch_fails_both():
    wrong_arg = [_call("get_weather", '{"city": "Bergen"}'), _call("get_time", '{"city": "Oslo"}')]
    assert compare(GT, wrong_arg) == (1.0, 0.0, None)
    missing = [_call("get_weather", '{"city": "Oslo"}')]
    assert compare(GT, missing) == (0.0, 0.0, None)
    extra = [*missing, _call("get_time", '{"city": "Oslo"}'), _call("book_taxi", "{}")]
    assert compare(GT, extra) == (0.0, 0.0, None)
    # Key order and whitespace in the JSON string do not matter; values and types do.
    assert compare({"f": {"a": 1, "b": [1, 2]}}, [_call("f", '{ "b":[1,2],"a":1 }')]) == (1.0, 1.0, None)
    assert compare({"f": {"a": 1}}, [_call("f", '{"a": "1"}')])[1] == 0.0


def test_names_are_case_sensitive_and_repeats_collapse():
    assert compare({"get_weather": {}}, [_call("Get_Weather", "{}")])[:2] == (0.0, 0.0)
    twice = [_call("get_weather", '{"city": "A"}'), _call("get_weather", '{"city": "Oslo"}')]
    assert compare({"get_weather": {"city": "Oslo"}}, twice) == (1.0, 1.0, None)  # the last one counts


def test_malformed_model_arguments_make_the_args_score_nan_not_zero():
    name, args, why = compare({"f": {}}, [_call("f", "{not json")])
    assert name == 1.0 and math.isnan(args) and why and "not JSON" in why
    # arguments as an object, not the JSON string OpenAI sends: not what NeMo parses either.
    assert math.isnan(compare({"f": {}}, [_call("f", {"a": 1})])[1])
    # null arguments are no arguments.
    assert compare({"f": {}}, [_call("f", None)]) == (1.0, 1.0, None)


def test_no_tool_calls_is_a_wrong_answer_and_an_empty_ground_truth_a_right_one():
    ctx = build_context({"tool_calls": [{"function": {"name": "f", "arguments": {}}}]})
    ctx["sample"] = {"output_text": "hello", "response": _response(content="hello")}
    out = score({"tool_calls_ground_truth": "{{ item.tool_calls | tojson }}"}, ctx, "m.params")
    assert out.scores == {NAME: 0.0, ARGS: 0.0} and out.error is None
    none = build_context({"tool_calls": []}, {"output_text": "hi", "response": _response(content="hi")})
    out = score({"tool_calls_ground_truth": "{{ item.tool_calls | tojson }}"}, none, "m.params")
    assert out.scores == {NAME: 1.0, ARGS: 1.0}


def test_bad_ground_truth_or_response_is_the_rows_error_with_nan():
    with pytest.raises(ValueError, match="list of tool calls"):
        ground_truth_calls({"function": {"name": "f", "arguments": {}}})
    with pytest.raises(ValueError, match=r"\[0\]"):
        ground_truth_calls([{"name": "f"}])
    assert ground_truth_calls('[{"function": {"name": "f", "arguments": {"x": 1}}}]') == {"f": {"x": 1}}
    ctx = build_context({"tool_calls": [{"function": {"name": "f", "arguments": {}}}]})
    ctx["sample"] = {"output_text": "x", "response": {"choices": [{"index": 0, "text": "x"}]}}
    out = score({"tool_calls_ground_truth": "{{ item.tool_calls | tojson }}"}, ctx, "m.params")
    assert all(math.isnan(v) for v in out.scores.values()) and "message" in (out.error or "")


def test_offline_rows_are_read_from_the_items_response():
    row = {
        "response": _response(_call("f", '{"x": 1}')),
        "expected": [{"function": {"name": "f", "arguments": {"x": 1}}}],
    }
    out = score({"tool_calls_ground_truth": "{{ item.expected | tojson }}"}, build_context(row), "m.params")
    assert out.scores == {NAME: 1.0, ARGS: 1.0}


# ------------------------------------------------------------------------------ plan and validation


def _plan(cfg: dict[str, Any], target: dict[str, Any]) -> Any:
    return build_plan(load_config(cfg), load_target(target))


def test_the_published_shape_validates_with_a_response_reading_judge(mock_llm):
    cfg = tool_calling_config(f"{mock_llm.base_url}/chat/completions")
    with pytest.warns(ConfigWarning, match=r"tool-calling-accuracy\.params\.model: ignored"):
        plan = _plan(cfg, mock_target(mock_llm, "mock/tool-caller"))
    (task,) = plan.tasks
    metric = next(m for m in task.metrics if m.type == "tool-calling")
    assert metric.score_names == [NAME, ARGS] and metric.judge is None and "model" not in metric.params
    assert mock_llm.request_count == 0  # validated without a model call


def test_the_ignored_judge_model_needs_no_api_key(mock_llm, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_FOR_TOOLS", raising=False)
    cfg = tool_calling_config(f"{mock_llm.base_url}/chat/completions")
    metrics = cfg["tasks"]["travel-tools"]["metrics"]
    del metrics["call-review"]
    metrics["tool-calling-accuracy"]["params"]["model"]["api_endpoint"]["api_key_env"] = (
        "NO_SUCH_KEY_FOR_TOOLS"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        _plan(cfg, mock_target(mock_llm, "mock/tool-caller"))


def test_ground_truth_is_required_and_checked_on_every_row(mock_llm, tmp_path):
    cfg = tool_calling_config(f"{mock_llm.base_url}/chat/completions")
    metrics = cfg["tasks"]["travel-tools"]["metrics"]
    del metrics["call-review"]
    del metrics["tool-calling-accuracy"]["params"]["model"]
    target = mock_target(mock_llm, "mock/tool-caller")
    bad = dict(metrics["tool-calling-accuracy"]["params"])
    metrics["tool-calling-accuracy"]["params"] = {}
    with pytest.raises(ConfigError, match="tool_calls_ground_truth") as err:
        _plan(cfg, target)
    assert err.value.path.endswith("tool-calling-accuracy.params.tool_calls_ground_truth")
    metrics["tool-calling-accuracy"]["params"] = bad
    rows = [json.loads(line) for line in TOOL_ROWS.read_text().splitlines()]
    rows[2]["tool_calls"] = {"function": {"name": "f", "arguments": {}}}  # not a list
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg["tasks"]["travel-tools"]["dataset"]["files_url"] = str(data)
    with pytest.raises(ConfigError, match=r"row 3.*list of tool calls"):
        _plan(cfg, target)


def test_a_response_reading_judge_on_cached_outputs_fails_before_any_call(mock_llm, tmp_path):
    data = tmp_path / "cached.jsonl"
    data.write_text(json.dumps({"output": "hello", "tool_calls": []}) + "\n")
    cfg = tool_calling_config(f"{mock_llm.base_url}/chat/completions", files_url=str(data))
    task = cfg["tasks"]["travel-tools"]
    task["type"] = "data"
    del task["params"]
    del task["metrics"]["tool-calling-accuracy"]
    with pytest.raises(ConfigError, match=r"no sample\.response without a model call"):
        _plan(cfg, {"type": "cached_outputs", "cached_outputs": {"files_url": str(data)}})


# ------------------------------------------------------------------------------ the mock tool-caller


def test_mock_tool_caller_answers_with_tool_calls(mock_llm):
    row = json.loads(TOOL_ROWS.read_text().splitlines()[1])
    body = {"model": "mock/tool-caller", "messages": row["messages"], "tools": row["tools"]}
    reply = httpx.post(f"{mock_llm.base_url}/chat/completions", json=body).json()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    calls = [
        (c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in choice["message"]["tool_calls"]
    ]
    assert calls == [("get_weather", {"city": "Oslo"}), ("get_local_time", {"city": "Oslo"})]
    plain = httpx.post(f"{mock_llm.base_url}/chat/completions", json={**body, "tools": None}).json()
    assert plain["choices"][0]["message"]["content"].startswith("No tool to call:")


# ------------------------------------------------------------------------------------- end to end


def test_published_tool_calling_config_runs_locally_with_nemo_score_names(tmp_path):
    with MockLLMServer() as srv:
        cfg = tool_calling_config(f"{srv.base_url}/chat/completions")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConfigWarning)
            res = run_local(cfg, mock_target(srv, "mock/tool-caller"), cache=False, progress_bar=False)
        tool_requests = [r for r in srv.requests if r.model == "mock/tool-caller"]
    assert len(tool_requests) == 4 and all(r.body.get("tools") for r in tool_requests)
    samples = sorted(res.iter_samples(), key=lambda s: s.index)
    for score_name, expected in EXPECTED.items():
        got = [s.metrics["tool-calling-accuracy"].scores[score_name] for s in samples]
        assert got == expected, score_name
    for s in samples:  # the judge read the model's tool calls from sample.response and was parsed
        assert s.target_error is None
        assert not math.isnan(s.metrics["call-review"].scores["rating"]), s.metrics["call-review"]
    doc = res.to_nemo_dict()["tasks"]["travel-tools"]["metrics"]["tool-calling-accuracy"]["scores"]
    assert doc[NAME]["value"] == pytest.approx(0.75) and doc[NAME]["stats"]["count"] == 4
    assert doc[ARGS]["value"] == pytest.approx(0.5)
