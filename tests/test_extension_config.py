"""The ``mlflow_nemo_judge:`` config block: strict validation with paths, round trip, identity, settings."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from mlflow_nemo_judge.config import load_config
from mlflow_nemo_judge.config.extension import Extension, pairwise_tasks
from mlflow_nemo_judge.config.reliability_settings import (
    judge_label,
    judge_labels,
    local_only,
    metric_settings,
)
from mlflow_nemo_judge.errors import ConfigError
from tests.fixtures.seed_config import seed_config

TASK = "consult_summary_eval"
KEY = f"{TASK}/completeness"
REL = "mlflow_nemo_judge.reliability"
EP = {"api_endpoint": {"url": "http://judge.test/v1", "model_id": "mock/judge"}}
EP2 = {"api_endpoint": {"url": "http://judge.test/v1", "model_id": "mock/judge-noisy", "api_key_env": "X"}}
PAIRWISE = {
    "model": {"api_endpoint": {"url": "http://judge.test/v1", "model_id": "mock/judge-pairwise"}},
    "template": {"messages": [{"role": "user", "content": "A: {{ output_a }} B: {{ output_b }}"}]},
    "parser": {"type": "regex", "pattern": r"WINNER:\s*(A|B|TIE)"},
}


def _cfg(block: Any, score_type: str = "int") -> dict[str, Any]:
    cfg = seed_config(files_url="data.jsonl")
    cfg["tasks"][TASK]["metrics"]["completeness"]["params"]["scores"]["completeness"]["type"] = score_type
    cfg["mlflow_nemo_judge"] = block
    return cfg


def _error(block: Any, **kw: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(_cfg(block, **kw))
    return info.value


FULL = {
    "reliability": {
        "repeats": 3,
        "reducer": "mean",
        "temperature": 1,  # an int stays an int in the round trip
        "seed": 7,
        "metrics": {
            KEY: {
                "repeats": 5,
                "reducer": "median",
                "panel": [EP, EP2],
                "human_labels": {"completeness": "human_completeness"},
                "levels": {"completeness": "ordinal"},
            }
        },
    },
    "pairwise": {TASK: {**PAIRWISE, "tie_values": ["TIE", "C"], "inference_params": {"temperature": 0}}},
}


def test_the_block_round_trips_as_written_and_counts_in_the_identity():
    cfg = _cfg(FULL)
    loaded = load_config(cfg)
    assert json.dumps(loaded.to_dict()) == json.dumps(cfg)  # byte for byte, key order and number types
    assert isinstance(loaded.extension(), Extension)
    without = copy.deepcopy(cfg)
    del without["mlflow_nemo_judge"]
    assert load_config(without).extension() is None
    fewer = copy.deepcopy(cfg)
    fewer["mlflow_nemo_judge"]["reliability"]["metrics"][KEY]["repeats"] = 4
    shas = {load_config(c).sha256() for c in (cfg, without, fewer)}
    assert len(shas) == 3  # with repeats, without, and with other repeats: three evaluations


def test_a_yaml_file_error_names_the_file_and_the_path(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(_cfg({"reliability": {"repeats": 0}})))
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert info.value.path == f"{REL}.repeats" and str(p) in str(info.value)


@pytest.mark.parametrize(
    ("block", "path", "words"),
    [
        ({"reliabilty": {}}, "mlflow_nemo_judge.reliabilty", "unknown key 'reliabilty'"),
        ({"reliability": {"repeat": 3}}, f"{REL}.repeat", "known keys: repeats"),
        ({"reliability": {"metrics": {KEY: {"panl": [EP, EP2]}}}}, f"{REL}.metrics.{KEY}.panl", "panel"),
        ({"reliability": {"repeats": 0}}, f"{REL}.repeats", "between 1 and 100"),
        ({"reliability": {"repeats": 101}}, f"{REL}.repeats", "between 1 and 100"),
        ({"reliability": {"repeats": "3"}}, f"{REL}.repeats", "integer"),
        ({"reliability": {"reducer": "mode"}}, f"{REL}.reducer", "'majority'"),
        ({"reliability": {"temperature": 3}}, f"{REL}.temperature", "between 0 and 2"),
        ({"reliability": {"seed": -1}}, f"{REL}.seed", ">= 0"),
        ({"reliability": {"metrics": {"t/m": {}}}}, f"{REL}.metrics.t/m", "names no llm-judge metric"),
        ({"reliability": {"metrics": {KEY: {"panel": [EP]}}}}, f"{REL}.metrics.{KEY}.panel", "at least 2"),
        (
            {"reliability": {"metrics": {KEY: {"panel": [EP, "ns/model"]}}}},
            f"{REL}.metrics.{KEY}.panel[1]",
            "mapping",
        ),
        (
            {"reliability": {"metrics": {KEY: {"human_labels": {"nope": "h"}}}}},
            f"{REL}.metrics.{KEY}.human_labels.nope",
            "no score 'nope'",
        ),
        (
            {"reliability": {"metrics": {KEY: {"levels": {"completeness": "ratio"}}}}},
            f"{REL}.metrics.{KEY}.levels.completeness",
            "'ordinal'",
        ),
        ({"pairwise": {"nope": PAIRWISE}}, "mlflow_nemo_judge.pairwise.nope", "names no task"),
        (
            {"pairwise": {TASK: {k: v for k, v in PAIRWISE.items() if k != "parser"}}},
            f"mlflow_nemo_judge.pairwise.{TASK}.parser",
            "required",
        ),
        (
            {"pairwise": {TASK: {**PAIRWISE, "parser": {"type": "regex", "pattern": "WINNER: A"}}}},
            f"mlflow_nemo_judge.pairwise.{TASK}.parser.pattern",
            "no capture group",
        ),
        (
            {"pairwise": {TASK: {**PAIRWISE, "template": {"max_tokens": 5}}}},
            f"mlflow_nemo_judge.pairwise.{TASK}.template",
            "messages",
        ),
        (
            {"pairwise": {TASK: {**PAIRWISE, "tie_values": []}}},
            f"mlflow_nemo_judge.pairwise.{TASK}.tie_values",
            "non-empty",
        ),
        (
            {"pairwise": {TASK: {**PAIRWISE, "judge": {}}}},
            f"mlflow_nemo_judge.pairwise.{TASK}.judge",
            "known",
        ),
        ("yes", "mlflow_nemo_judge", "mapping"),
    ],
)
def test_invalid_blocks_are_refused_with_their_path(block, path, words):
    err = _error(block)
    assert err.path == path
    assert words in err.message


def test_majority_needs_discrete_scores():
    err = _error({"reliability": {"metrics": {KEY: {"reducer": "majority"}}}}, score_type="float")
    assert err.path == f"{REL}.metrics.{KEY}.reducer" and "discrete" in err.message
    err = _error({"reliability": {"reducer": "majority"}}, score_type="float")
    assert err.path == f"{REL}.reducer"
    # the metric's own reducer wins over the block's
    load_config(
        _cfg({"reliability": {"reducer": "majority", "metrics": {KEY: {"reducer": "mean"}}}}, "float")
    )
    load_config(_cfg({"reliability": {"reducer": "majority"}}, score_type="bool"))


def test_settings_resolve_block_metric_and_override():
    cfg = load_config(_cfg(FULL))
    s = metric_settings(cfg)
    mine, other = s[(TASK, "completeness")], s[(TASK, "correctness")]
    assert (mine.repeats, mine.reducer, mine.seed, mine.temperature) == (5, "median", 7, 1.0)
    assert mine.judges == ["mock_judge", "mock_judge-noisy"] and mine.judgments == 10
    assert mine.human_labels == {"completeness": "human_completeness"}
    assert (other.repeats, other.reducer, other.judges, other.panel) == (3, "mean", ["gpt-4_1"], None)
    assert metric_settings(cfg, judge_repeats=2)[(TASK, "completeness")].repeats == 2
    plain = load_config(seed_config(files_url="d.jsonl"))
    one = metric_settings(plain)[(TASK, "completeness")]
    assert (one.repeats, one.seed, one.temperature, one.levels) == (
        1,
        None,
        None,
        {"completeness": "ordinal"},
    )
    assert metric_settings(plain, judge_repeats=3)[(TASK, "completeness")].seed == 0
    levels = {
        t: metric_settings(load_config(_cfg({}, t)))[(TASK, "completeness")].levels["completeness"]
        for t in ("bool", "int", "float")
    }
    assert levels == {"bool": "nominal", "int": "ordinal", "float": "interval"}


def test_judge_labels_and_pairwise_tasks():
    assert judge_label("mock/judge-noisy") == "mock_judge-noisy"
    assert judge_label("meta/llama-3.1:70b") == "meta_llama-3_1_70b"
    assert judge_labels(["a/b", "a/b", "a_b", "c"]) == ["a_b", "a_b-2", "a_b-3", "c"]
    tasks = pairwise_tasks(load_config(_cfg(FULL)))
    assert list(tasks) == [TASK] and tasks[TASK].ties == ["TIE", "C"]
    assert pairwise_tasks(load_config(seed_config(files_url="d.jsonl"))) == {}


def test_local_only_names_what_nemo_does_not_apply():
    said = local_only(load_config(_cfg(FULL)))
    assert any(f"{KEY} x5" in s for s in said) and any("pairwise" in s for s in said)
    only_labels = {"reliability": {"metrics": {KEY: {"human_labels": {"completeness": "h"}}}}}
    assert local_only(load_config(_cfg(only_labels))) == []  # human agreement runs on NeMo results too
