import json

import pytest

from mlflow_nemo_judge.config import MASK, load_config, load_target, redact
from mlflow_nemo_judge.errors import ConfigError, SecretError
from tests.fixtures.seed_config import seed_config, seed_target


def test_seed_config_round_trips_byte_for_byte():
    d = seed_config()
    cfg = load_config(d)
    assert json.dumps(cfg.to_dict()) == json.dumps(d)
    assert cfg.tasks is not None and list(cfg.tasks) == ["consult_summary_eval"]


def test_numbers_keep_their_type_and_unknown_fields_are_kept():
    d = {
        "type": "custom",
        "params": {"temperature": 1, "top_p": 0.5, "request_timeout": 10, "future_knob": [1, 2]},
        "tasks": {
            "t": {
                "type": "data",
                "new_field": {"x": 1},
                "metrics": {"m": {"type": "em", "params": {"reference": "{{ item.a }}"}}},
            }
        },
        "custom_fields": {"team": "a"},
    }
    out = load_config(d).to_dict()
    assert json.dumps(out, sort_keys=True) == json.dumps(d, sort_keys=True)


def test_yaml_and_json_files(tmp_path):
    d = seed_config()
    jp = tmp_path / "c.json"
    jp.write_text(json.dumps(d))
    import yaml

    yp = tmp_path / "c.yaml"
    yp.write_text(yaml.safe_dump(d, allow_unicode=True))
    assert load_config(jp).to_dict() == d
    assert load_config(yp).to_dict() == d


def test_missing_file_and_bad_yaml_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: cannot parse config"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(lst)


def test_structural_errors_name_the_config_path():
    d = seed_config()
    del d["tasks"]["consult_summary_eval"]["metrics"]["completeness"]["type"]
    with pytest.raises(ConfigError) as ei:
        load_config(d)
    assert ei.value.path == "tasks.consult_summary_eval.metrics.completeness.type"
    with pytest.raises(ConfigError, match="tasks"):
        load_config({"type": "custom"})


def test_redaction_masks_every_secret_and_keeps_env_names():
    d = seed_config(openai_api_key="sk-SECRET123")
    red = load_config(d).redacted()
    text = json.dumps(red)
    assert "sk-SECRET123" not in text
    assert text.count(MASK) == 2
    t = load_target(
        {
            "type": "model",
            "model": {
                "api_endpoint": {
                    "url": "http://x/v1",
                    "model_id": "m",
                    "api_key_env": "MY_KEY",
                    "headers": {"X-Gateway": "tok-XYZ"},
                }
            },
        }
    )
    red_t = json.dumps(t.redacted())
    assert "MY_KEY" in red_t and "tok-XYZ" not in red_t
    assert redact({"nested": [{"hf_token": "hf_abc"}]}) == {"nested": [{"hf_token": MASK}]}


def test_sha_is_stable_across_key_rotation():
    a = load_config(seed_config(openai_api_key="k1")).sha256()
    b = load_config(seed_config(openai_api_key="k2")).sha256()
    c = load_config(seed_config(judge_model="other")).sha256()
    assert a == b != c


def test_api_key_env_resolution(monkeypatch):
    t = load_target(
        {
            "type": "model",
            "model": {"api_endpoint": {"url": "http://x", "model_id": "m", "api_key_env": "NJ_TEST_KEY"}},
        }
    )
    ep = t.endpoint
    assert ep is not None
    monkeypatch.delenv("NJ_TEST_KEY", raising=False)
    with pytest.raises(SecretError) as ei:
        ep.resolve_api_key("target.model.api_endpoint")
    assert ei.value.path == "target.model.api_endpoint.api_key_env"
    assert "NJ_TEST_KEY" in str(ei.value)
    monkeypatch.setenv("NJ_TEST_KEY", "value-1")
    assert ep.resolve_api_key() == "value-1"


def test_target_validation():
    t = load_target(seed_target())
    assert t.display_name == "meta/llama-3.1-70b-instruct"
    with pytest.raises(ConfigError) as ei:
        load_target({"type": "model"})
    assert ei.value.path == "target.model"
    with pytest.raises(ConfigError) as ei:
        load_target({"type": "model", "model": {"api_endpoint": {"url": "http://x"}}})
    assert ei.value.path == "target.model.api_endpoint.model_id"
    rows = load_target({"type": "rows", "rows": [{"a": 1}]})
    assert rows.display_name == "rows-target"


def test_credentials_in_urls_are_redacted():
    from mlflow_nemo_judge.config import redact_url, url_secrets

    url = "https://user:hunter2pass@host.example/openai/v1/chat/completions?api-version=2024-06&api-key=AZKEY123"
    # Every query value and the whole userinfo: a gateway may call its credential anything.
    assert set(url_secrets(url)) == {"user", "hunter2pass", "2024-06", "AZKEY123"}
    red = redact_url(url)
    assert (
        red
        == "https://******:******@host.example/openai/v1/chat/completions?api-version=******&api-key=******"
    )
    t = load_target({"type": "model", "model": {"api_endpoint": {"url": url, "model_id": "m"}}})
    assert "AZKEY123" not in json.dumps(t.redacted())


# ------------------------------------------------------------------------------------ typed models


def _seed_metric(d, name="completeness", task="consult_summary_eval"):
    return d["tasks"][task]["metrics"][name]


def test_seed_config_is_typed_down_to_the_parsers():
    from mlflow_nemo_judge.config import APIEndpoint, JudgeMetric, ModelSpec, RegexParser, RequestTemplate

    cfg = load_config(seed_config(judge_model="judge-x"))
    task = cfg.tasks["consult_summary_eval"]
    assert isinstance(task.params.template, RequestTemplate)
    assert task.params.template.messages[1].content == "Full Consult: {{ item.content }}"
    assert task.params.template.model_extra == {"max_tokens": 200}  # body fields pass through as written
    metric = task.metrics["completeness"]
    assert isinstance(metric, JudgeMetric)
    assert isinstance(metric.params.model, ModelSpec)
    assert isinstance(metric.params.model.api_endpoint, APIEndpoint)
    assert metric.params.model.api_endpoint.model_id == "judge-x"
    score = metric.params.scores["completeness"]
    assert score.type == "int"
    assert isinstance(score.parser, RegexParser) and score.parser.pattern == r"RATING:\s*(\d+)"
    assert cfg.judge_models() == {
        ("consult_summary_eval", "completeness"): "judge-x",
        ("consult_summary_eval", "correctness"): "judge-x",
    }


def test_json_parser_prompt_params_and_simple_metrics_are_typed():
    from mlflow_nemo_judge.config import (
        BleuMetric,
        CheckMetric,
        JsonParser,
        OtherMetric,
        ReferenceMetric,
    )
    from mlflow_nemo_judge.config.metrics import ToolCallingMetric

    d = seed_config()
    judge = _seed_metric(d)["params"]
    judge["scores"]["completeness"]["parser"] = {"type": "json", "json_path": "$.rating"}
    judge["model"]["prompt"] = {
        "system_prompt": "detailed thinking on",
        "inference_params": {"temperature": 1, "max_tokens": 1024, "request_timeout": 10},
        "reasoning_params": {"end_token": "</think>", "effort": "low"},
    }
    metrics = d["tasks"]["consult_summary_eval"]["metrics"]
    metrics["sc"] = {"type": "string-check", "params": {"check": ["{{ sample.output_text }}", "equals", "x"]}}
    metrics["b"] = {"type": "bleu", "params": {"references": ["{{ item.a }}"], "candidate": "{{ item.b }}"}}
    metrics["f"] = {"type": "f1", "params": {"reference": "{{ item.a }}"}}
    metrics["tc"] = {"type": "tool-calling", "params": {"tool_calls_ground_truth": "{{ item.t | tojson }}"}}
    cfg = load_config(d)
    m = cfg.tasks["consult_summary_eval"].metrics
    parser = m["completeness"].params.scores["completeness"].parser
    assert isinstance(parser, JsonParser) and parser.json_path == "$.rating"
    prompt = m["completeness"].params.model.prompt
    assert prompt.system_prompt == "detailed thinking on"
    assert prompt.reasoning_params.end_token == "</think>" and prompt.reasoning_params.effort == "low"
    assert prompt.inference_params.temperature == 1 and type(prompt.inference_params.temperature) is int
    assert isinstance(m["sc"], CheckMetric) and m["sc"].params.check[1] == "equals"
    assert isinstance(m["b"], BleuMetric) and m["b"].params.candidate == "{{ item.b }}"
    assert isinstance(m["f"], ReferenceMetric) and m["f"].params.reference == "{{ item.a }}"
    assert isinstance(m["tc"], ToolCallingMetric) and m["tc"].params_dict() == metrics["tc"]["params"]
    # A metric type NeMo has and we do not model loads, its params a plain dict.
    metrics["ta"] = {"type": "topic-adherence", "params": {"metric_mode": "f1"}}
    m = load_config(d).tasks["consult_summary_eval"].metrics
    assert isinstance(m["ta"], OtherMetric) and m["ta"].params == metrics["ta"]["params"]
    cfg = load_config(d)
    assert json.dumps(cfg.to_dict()) == json.dumps(d)


def test_judge_model_by_reference_and_unknown_config_types_load():
    d = seed_config()
    _seed_metric(d)["params"]["model"] = "my-namespace/my-judge"
    cfg = load_config(d)
    assert _seed_metric(cfg.model_dump())["params"]["model"] == "my-namespace/my-judge"
    assert cfg.judge_models()[("consult_summary_eval", "completeness")] == "my-namespace/my-judge"
    academic = {"type": "gsm8k", "params": {"num_fewshot": 5}, "tasks": {"g": {"type": "gsm8k"}}}
    assert load_config(academic).to_dict() == academic


def test_key_order_as_written_round_trips():
    d = seed_config()
    task = d["tasks"]["consult_summary_eval"]
    template = task["params"]["template"]
    task["params"]["template"] = {"max_tokens": template["max_tokens"], "messages": template["messages"]}
    score = _seed_metric(d)["params"]["scores"]["completeness"]
    score["parser"] = {"pattern": score["parser"]["pattern"], "type": "regex"}
    d["tasks"]["consult_summary_eval"] = {"metrics": task.pop("metrics"), **task}
    assert json.dumps(load_config(d).to_dict()) == json.dumps(d)


def _load_err(d):
    with pytest.raises(ConfigError) as ei:
        load_config(d)
    return ei.value


def _qa_config():
    """The seed config with its task renamed to a capitalised name, as users often write them."""
    d = seed_config()
    d["tasks"] = {"QA": d["tasks"].pop("consult_summary_eval")}
    return d


QA = "tasks.QA.metrics.completeness.params"
PARSER_ERRORS = [
    ("regex without pattern", {"type": "regex"}, f"{QA}.scores.completeness.parser.pattern", "required"),
    ("json without json_path", {"type": "json"}, f"{QA}.scores.completeness.parser.json_path", "required"),
    (
        "unknown parser type",
        {"type": "xml"},
        f"{QA}.scores.completeness.parser.type",
        "unknown parser type 'xml'",
    ),
    ("parser without type", {"pattern": "(x)"}, f"{QA}.scores.completeness.parser.type", "'regex', 'json'"),
    ("parser not a mapping", "RATING", f"{QA}.scores.completeness.parser", "must be a mapping"),
    (
        "pattern not a string",
        {"type": "regex", "pattern": 3},
        f"{QA}.scores.completeness.parser.pattern",
        "string",
    ),
]


@pytest.mark.parametrize("name,parser,path,fragment", PARSER_ERRORS, ids=[c[0] for c in PARSER_ERRORS])
def test_parser_union_errors_name_the_full_path(name, parser, path, fragment):
    d = _qa_config()
    d["tasks"]["QA"]["metrics"]["completeness"]["params"]["scores"]["completeness"]["parser"] = parser
    err = _load_err(d)
    assert err.path == path, str(err)
    assert fragment in err.message


def test_capitalised_task_names_and_tag_like_names_stay_in_error_paths():
    d = _qa_config()
    del d["tasks"]["QA"]["dataset"]["files_url"]
    assert _load_err(d).path == "tasks.QA.dataset.files_url"
    d = _qa_config()
    d["tasks"]["QA"]["params"]["template"]["messages"][1] = {"content": "x"}
    assert _load_err(d).path == "tasks.QA.params.template.messages[1].role"
    # A score called like a union tag ("json", "str", "Score") is a config key and stays in the path.
    d = _qa_config()
    scores = d["tasks"]["QA"]["metrics"]["completeness"]["params"]["scores"]
    scores["Score"] = scores["json"] = {"type": "int", "parser": {"type": "json"}}
    assert _load_err(d).path == f"{QA}.scores.Score.parser.json_path"
    d = _qa_config()
    d["tasks"]["QA"]["metrics"]["completeness"]["params"]["model"]["api_endpoint"] = {"url": "http://x"}
    assert _load_err(d).path == f"{QA}.model.api_endpoint.model_id"
    d = _qa_config()
    d["params"] = {"request_timeout": "soon"}
    assert _load_err(d).path == "params.request_timeout"


def test_target_errors_name_the_path_below_the_model():
    with pytest.raises(ConfigError) as ei:
        load_target(
            {"type": "model", "model": {"api_endpoint": {"url": "http://x", "model_id": "m"}, "prompt": 3}}
        )
    assert ei.value.path == "target.model.prompt" and "mapping" in ei.value.message
    with pytest.raises(ConfigError) as ei:
        load_target({"type": "dataset", "dataset": {"limit": 2}})
    assert ei.value.path == "target.dataset.files_url"


# ------------------------------------------------------------------------------------ misspellings


def _warnings_of(load, d):
    import warnings

    from mlflow_nemo_judge.errors import ConfigWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        obj = load(d)
    return obj, [str(w.message) for w in caught if issubclass(w.category, ConfigWarning)]


def test_misspelled_known_keys_warn_once_each_and_are_kept():
    d = seed_config()
    task = d["tasks"]["consult_summary_eval"]
    task["dataset"]["limt"] = 5
    d["params"] = {"paralellism": 4}
    _seed_metric(d)["params"]["scroes"] = {}
    cfg, msgs = _warnings_of(load_config, d)
    assert len(msgs) == 3, msgs
    joined = "\n".join(msgs)
    assert "tasks.consult_summary_eval.dataset.limt" in joined and "did you mean 'limit'?" in joined
    assert "params.paralellism" in joined and "did you mean 'parallelism'?" in joined
    assert "tasks.consult_summary_eval.metrics.completeness.params.scroes" in joined
    assert "did you mean 'scores'?" in joined
    # Kept and passed through: the dump is still the dict read.
    assert json.dumps(cfg.to_dict()) == json.dumps(d)
    assert cfg.params.parallelism is None and cfg.params.model_extra == {"paralellism": 4}


def test_misspelling_in_a_target_and_a_file_names_both(tmp_path):
    p = tmp_path / "target.json"
    p.write_text(
        json.dumps(
            {"type": "model", "model": {"api_endpoint": {"url": "http://x", "model_id": "m", "api_kye": "k"}}}
        )
    )
    _, msgs = _warnings_of(load_target, p)
    assert len(msgs) == 1 and str(p) in msgs[0]
    assert "target.model.api_endpoint.api_kye" in msgs[0] and "did you mean 'api_key'?" in msgs[0]


def test_unknown_keys_that_are_not_near_misses_do_not_warn():
    d = seed_config()
    d["custom_fields"] = {"team": "a"}
    d["tasks"]["consult_summary_eval"]["dataset"]["namespace"] = "ns"
    _seed_metric(d)["params"]["extra"] = {"judge_sanity_check": False}
    _seed_metric(d)["params"]["model"]["prompt"] = {"inference_params": {"max_new_tokens": 5, "top_k": 2}}
    d["tasks"]["consult_summary_eval"]["metrics"]["tc"] = {"type": "tool-calling", "params": {"scroes": 1}}
    cfg, msgs = _warnings_of(load_config, d)
    assert msgs == []
    assert json.dumps(cfg.to_dict()) == json.dumps(d)
