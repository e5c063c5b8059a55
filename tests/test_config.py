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
    assert set(url_secrets(url)) == {"hunter2pass", "AZKEY123"}
    red = redact_url(url)
    assert "hunter2pass" not in red and "AZKEY123" not in red and "api-version=2024-06" in red
    t = load_target({"type": "model", "model": {"api_endpoint": {"url": url, "model_id": "m"}}})
    assert "AZKEY123" not in json.dumps(t.redacted())
