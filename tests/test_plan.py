"""Bad input gets a one-line error naming the config path, before any model call."""

import copy
import json

import pytest

from mlflow_nemo_judge.config import load_config, load_target
from mlflow_nemo_judge.errors import ConfigError, MissingDependencyError
from mlflow_nemo_judge.plan import build_plan
from tests.fixtures.seed_config import seed_config

T = "tasks.consult_summary_eval"
M = f"{T}.metrics.completeness"


@pytest.fixture()
def data_file(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_text(
        "\n".join(json.dumps({"ID": f"r{i}", "content": f"consult {i}", "summary": "s"}) for i in range(5))
    )
    return p


@pytest.fixture()
def target():
    return load_target(
        {"type": "model", "model": {"api_endpoint": {"url": "http://127.0.0.1:9/v1", "model_id": "m"}}}
    )


def _cfg(data_file, mutate=None):
    d = seed_config(files_url=str(data_file))
    if mutate:
        mutate(d)
    return d


def _err(d, target, **kw):
    with pytest.raises(ConfigError) as ei:
        build_plan(load_config(d), target, **kw)
    assert "\n" not in str(ei.value)
    return ei.value


def _metric(d):
    return d["tasks"]["consult_summary_eval"]["metrics"]["completeness"]["params"]


def test_seed_config_plans(data_file, target):
    plan = build_plan(load_config(_cfg(data_file)), target)
    assert [t.name for t in plan.tasks] == ["consult_summary_eval"]
    assert plan.tasks[0].limit == 25 and plan.parallelism == 8
    assert [m.name for m in plan.tasks[0].metrics] == ["completeness", "correctness"]
    assert plan.judge_models == ["gpt-4.1"]


CASES = [
    (
        "unknown task type",
        lambda d: d["tasks"]["consult_summary_eval"].update(type="beir"),
        f"{T}.type",
        "unknown task type",
    ),
    (
        "unknown metric type",
        lambda d: d["tasks"]["consult_summary_eval"]["metrics"]["completeness"].update(type="judge"),
        f"{M}.type",
        "unknown metric type",
    ),
    (
        "unknown parser type",
        lambda d: _metric(d)["scores"]["completeness"]["parser"].update(type="xml"),
        f"{M}.params.scores.completeness.parser.type",
        "unknown parser type",
    ),
    (
        "unknown score type",
        lambda d: _metric(d)["scores"]["completeness"].update(type="decimal"),
        f"{M}.params.scores.completeness.type",
        "unknown score type",
    ),
    (
        "regex does not compile",
        lambda d: _metric(d)["scores"]["completeness"]["parser"].update(pattern="RATING: (\\d+"),
        f"{M}.params.scores.completeness.parser.pattern",
        "",
    ),
    (
        "regex without group",
        lambda d: _metric(d)["scores"]["completeness"]["parser"].update(pattern="RATING: \\d+"),
        f"{M}.params.scores.completeness.parser.pattern",
        "group",
    ),
    (
        "jinja syntax",
        lambda d: _metric(d)["template"]["messages"][1].update(content="{{ item.content "),
        f"{M}.params.template.messages[1].content",
        "syntax",
    ),
    (
        "missing variable",
        lambda d: _metric(d)["template"]["messages"][1].update(content="{{ item.transcript }}"),
        f"{M}.params.template.messages[1].content",
        "available: content, id, summary",
    ),
    (
        "missing target variable",
        lambda d: d["tasks"]["consult_summary_eval"]["params"]["template"]["messages"][1].update(
            content="{{ item.question }}"
        ),
        f"{T}.params.template.messages[1].content",
        "'question'",
    ),
    (
        "non-positive limit",
        lambda d: d["tasks"]["consult_summary_eval"]["dataset"].update(limit=0),
        f"{T}.dataset.limit",
        "positive",
    ),
    (
        "non-positive parallelism",
        lambda d: d.update(params={"parallelism": -2}),
        "params.parallelism",
        "positive",
    ),
    (
        "no metrics",
        lambda d: d["tasks"]["consult_summary_eval"].update(metrics={}),
        f"{T}.metrics",
        "at least one",
    ),
    ("judge without scores", lambda d: _metric(d).update(scores={}), f"{M}.params.scores", "at least one"),
    (
        "bad string-check op",
        lambda d: d["tasks"]["consult_summary_eval"]["metrics"].update(
            sc={"type": "string-check", "params": {"check": ["{{ sample.output_text }}", "matches", "x"]}}
        ),
        f"{T}.metrics.sc.params.check",
        "unknown string-check operator",
    ),
    (
        "bad number-check",
        lambda d: d["tasks"]["consult_summary_eval"]["metrics"].update(
            nc={
                "type": "number-check",
                "params": {"check": ["absolute difference", "1", "2", "epsilon", "x"]},
            }
        ),
        f"{T}.metrics.nc.params.check",
        "",
    ),
    (
        "em without reference",
        lambda d: d["tasks"]["consult_summary_eval"]["metrics"].update(em={"type": "em"}),
        f"{T}.metrics.em.params.reference",
        "required",
    ),
    ("non-custom config", lambda d: d.update(type="gsm8k"), "type", "custom"),
]


@pytest.mark.parametrize("name,mutate,path,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_names_the_config_path(data_file, target, name, mutate, path, fragment):
    err = _err(_cfg(data_file, mutate), target)
    assert err.path == path, str(err)
    assert fragment in str(err)


def test_missing_and_empty_and_broken_datasets(tmp_path, target):
    err = _err(seed_config(files_url=str(tmp_path / "absent.jsonl")), target)
    assert err.path == f"{T}.dataset" and "absent.jsonl" in str(err)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    err = _err(seed_config(files_url=str(empty)), target)
    assert err.path == f"{T}.dataset" and "empty" in str(err)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"content": 1}\n{not json\n')
    # The first row is fine, but every row is read at plan time: the broken line fails naming file and line.
    err = _err(seed_config(files_url=str(broken)), target)
    assert err.path == f"{T}.dataset" and "broken.jsonl:2: invalid JSON" in str(err)


def test_missing_api_key_env_names_the_path(data_file, monkeypatch):
    monkeypatch.delenv("NJ_ABSENT_KEY", raising=False)
    d = _cfg(data_file)
    ep = _metric(d)["model"]["api_endpoint"]
    del ep["api_key"]
    ep["api_key_env"] = "NJ_ABSENT_KEY"
    tgt = load_target({"type": "model", "model": {"api_endpoint": {"url": "http://x/v1", "model_id": "m"}}})
    err = _err(d, tgt)
    assert err.path == f"{M}.params.model.api_endpoint.api_key_env" and "NJ_ABSENT_KEY" in str(err)
    # validate --no-secrets skips the check
    build_plan(load_config(d), tgt, resolve_secrets=False)


def test_data_task_with_sample_reference_explains(data_file, target):
    def to_data(d):
        d["tasks"]["consult_summary_eval"]["type"] = "data"

    err = _err(_cfg(data_file, to_data), load_target({"type": "rows", "rows": [{"x": 1}]}))
    assert "no model call" in str(err)


def test_chat_task_needs_model_target(data_file):
    err = _err(_cfg(data_file), load_target({"type": "rows", "rows": [{"content": "x"}]}))
    assert err.path == f"{T}.type" and "'data'" in str(err)


def test_limits_combine(data_file, target):
    d = _cfg(data_file, lambda d: d.update(params={"limit_samples": 3}))
    assert build_plan(load_config(d), target).tasks[0].limit == 3
    assert build_plan(load_config(_cfg(data_file)), target, limit=2).tasks[0].limit == 2


def test_relative_dataset_paths_resolve_against_the_config_file(tmp_path, target):
    sub = tmp_path / "proj"
    sub.mkdir()
    (sub / "rows.jsonl").write_text(json.dumps({"content": "c"}) + "\n")
    import yaml

    (sub / "config.yaml").write_text(yaml.safe_dump(seed_config(files_url="rows.jsonl")))
    plan = build_plan(load_config(sub / "config.yaml"), target)
    assert list(plan.tasks[0].data.iter_rows(None)) == [{"content": "c"}]


def test_bleu_without_sacrebleu_gives_install_hint(data_file, target, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sacrebleu", None)
    d = _cfg(
        data_file,
        lambda d: d["tasks"]["consult_summary_eval"]["metrics"].update(
            b={"type": "bleu", "params": {"references": ["{{ item.summary }}"]}}
        ),
    )
    with pytest.raises(MissingDependencyError, match=r"mlflow-nemo-judge\[metrics\]"):
        build_plan(load_config(copy.deepcopy(d)), target)


def test_plan_reads_the_typed_judge_settings(data_file, target):
    from mlflow_nemo_judge.config import JudgeMetric

    def prompt(d):
        m = _metric(d)
        m["model"]["prompt"] = {
            "system_prompt": "detailed thinking on",
            "inference_params": {"temperature": 0.5, "max_retries": 2, "request_timeout": 7, "seed": 1},
            "reasoning_params": {"end_token": "</think>"},
        }
        m["scores"]["completeness"]["parser"] = {"type": "json", "json_path": "$.rating", "strict": True}

    plan = build_plan(load_config(_cfg(data_file, prompt)), target)
    mp = plan.tasks[0].metrics[0]
    assert isinstance(mp.config, JudgeMetric)
    judge = mp.judge
    assert judge is not None
    assert judge.system_prompt == "detailed thinking on" and judge.end_token == "</think>"
    # Call settings are split off; an unknown inference param passes through into the request body.
    assert judge.inference == {"temperature": 0.5, "seed": 1}
    assert judge.timeout == 7.0 and judge.max_retries == 2
    assert mp.scores[0].type == "int"
    assert mp.scores[0].parser == {"type": "json", "json_path": "$.rating", "strict": True}
    assert plan.tasks[0].template is not None and plan.tasks[0].template["max_tokens"] == 200


def test_capitalised_task_names_stay_in_plan_errors(data_file, target):
    def rename(d):
        d["tasks"] = {"QA": d["tasks"].pop("consult_summary_eval")}
        d["tasks"]["QA"]["metrics"]["completeness"]["params"]["scores"]["completeness"]["parser"][
            "pattern"
        ] = "x"

    err = _err(_cfg(data_file, rename), target)
    assert err.path == "tasks.QA.metrics.completeness.params.scores.completeness.parser.pattern"
    assert "capture group" in err.message


def test_local_plan_refuses_what_only_nemo_runs(data_file, target):
    d = _cfg(data_file, lambda d: _metric(d).update(model="ns/judge"))
    err = _err(d, target)
    assert err.path == f"{M}.params.model" and "--backend nemo" in err.message
    # A metric type of NeMo's successor platform (tool-calling now runs locally: test_tool_calling).
    tc = {"type": "topic-adherence", "params": {"metric_mode": "f1"}}
    d = _cfg(data_file, lambda d: d["tasks"]["consult_summary_eval"]["metrics"].update(tc=tc))
    load_config(d)  # NeMo's metric types load ...
    err = _err(d, target)  # ... and the local plan says it does not run them
    assert err.path == f"{T}.metrics.tc.type" and "topic-adherence" in err.message
    assert "tool-calling" in err.message  # listed among the supported types


def test_simple_metric_params_are_checked_by_their_typed_model(data_file, target):
    def add(d):
        d["tasks"]["consult_summary_eval"]["metrics"].update(
            sc={"type": "string-check", "params": {"check": ["{{ sample.output_text }}", "contains", "x"]}},
            f1={
                "type": "f1",
                "params": {"reference": "{{ item.summary }}", "candidate": "{{ item.content }}"},
            },
        )

    plan = build_plan(load_config(_cfg(data_file, add)), target)
    by_name = {m.name: m for m in plan.tasks[0].metrics}
    assert by_name["sc"].params == {"check": ["{{ sample.output_text }}", "contains", "x"]}
    assert by_name["f1"].score_names == ["f1"] and by_name["f1"].params["candidate"] == "{{ item.content }}"
    bad = _cfg(data_file, lambda d: d["tasks"]["consult_summary_eval"]["metrics"].update(f1={"type": "f1"}))
    assert _err(bad, target).path == f"{T}.metrics.f1.params.reference"
    typo = {"type": "f1", "params": {"reference": "{{ item.summary }}", "candidate": "{{ item.nope }}"}}
    bad = _cfg(data_file, lambda d: d["tasks"]["consult_summary_eval"]["metrics"].update(f1=typo))
    err = _err(bad, target)
    assert err.path == f"{T}.metrics.f1.params.candidate" and "'nope'" in str(err)
