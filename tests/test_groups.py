"""Config groups: nested groups pooled recursively, refused shapes with their config paths, group-level
metrics refused locally, nested group results from NeMo, and the MLflow keys of nested groups."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from mlflow_nemo_judge.backends.nemo.results import build_result
from mlflow_nemo_judge.config import load_config, load_target
from mlflow_nemo_judge.config.groups import group_specs, top_level_members
from mlflow_nemo_judge.engine import run_local
from mlflow_nemo_judge.errors import ConfigError
from mlflow_nemo_judge.plan import build_plan
from mlflow_nemo_judge.results import EvalResult
from mlflow_nemo_judge.tracking.params import score_metrics

# Per task: (matches, rows). a: 1 of 2, b: 4 of 4, c: 0 of 1.
ROWS = {"a": (1, 2), "b": (4, 4), "c": (0, 1)}
CHECK = {"type": "string-check", "params": {"check": ["{{ item.out }}", "equals", "{{ item.ref }}"]}}
TARGET = {"type": "rows", "rows": [{"unused": 1}]}


def _config(tmp_path: Path, groups: dict[str, Any] | None) -> dict[str, Any]:
    tasks = {}
    for name, (hits, n) in ROWS.items():
        path = tmp_path / f"{name}.jsonl"
        rows = [{"out": "x", "ref": "x" if i < hits else "y"} for i in range(n)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tasks[name] = {"type": "data", "dataset": {"files_url": str(path)}, "metrics": {"m": CHECK}}
    cfg: dict[str, Any] = {"type": "custom", "tasks": tasks}
    if groups is not None:
        cfg["groups"] = groups
    return cfg


def _err(cfg: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    return info.value


NESTED = {
    "outer": {"tasks": ["a"], "groups": {"inner": {"tasks": ["b"]}, "tail": None}},
    "tail": {"tasks": ["c"]},
}


# ------------------------------------------------------------------------------------- local runs


def test_nested_groups_pool_every_member_sample_recursively(tmp_path: Path) -> None:
    res = run_local(_config(tmp_path, NESTED), TARGET, cache=False, progress_bar=False)
    outer = res.groups["outer"]["m"]["string-check"]
    # a + b (inline subgroup) + c (reference to the top-level group 'tail'): 5 matches in 7 samples,
    # not the mean of the three task means (0.5, 1.0, 0.0 -> 0.5).
    assert outer.stats is not None and outer.stats.count == 7
    assert outer.value is not None and math.isclose(outer.value, 5 / 7)
    inner = res.subgroups[("outer", "inner")]["m"]["string-check"]
    assert inner.value == 1.0 and inner.stats is not None and inner.stats.count == 4
    assert res.subgroups[("outer", "tail")]["m"]["string-check"].value == 0.0
    assert res.groups["tail"]["m"]["string-check"].value == 0.0
    doc = res.to_nemo_dict()["groups"]
    assert doc["outer"]["groups"]["inner"]["metrics"]["m"]["scores"]["string-check"]["value"] == 1.0
    assert set(doc["outer"]["groups"]) == {"inner", "tail"} and "groups" not in doc["tail"]


def test_a_task_reached_twice_counts_once(tmp_path: Path) -> None:
    groups = {"g": {"tasks": ["a", "b"], "groups": {"again": {"tasks": ["b"]}}}}
    res = run_local(_config(tmp_path, groups), TARGET, cache=False, progress_bar=False)
    score = res.groups["g"]["m"]["string-check"]
    assert score.stats is not None and score.stats.count == 6  # a (2) + b (4), b not twice
    assert score.value is not None and math.isclose(score.value, 5 / 6)


def test_group_level_metrics_are_refused_locally_with_their_path(tmp_path: Path) -> None:
    groups = {"g": {"tasks": ["a"], "groups": {"sub": {"tasks": ["b"], "metrics": {"acc": CHECK}}}}}
    cfg = load_config(_config(tmp_path, groups))  # valid NeMo config: loads, and nemo would submit it
    with pytest.raises(ConfigError) as info:
        build_plan(cfg, load_target(TARGET))
    assert info.value.path == "groups.g.groups.sub.metrics.acc"
    assert "string-check" in info.value.message and "--backend nemo" in info.value.message


# ------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("groups", "path", "words"),
    [
        ({"g": {"tasks": ["a", "nope"]}}, "groups.g.tasks[1]", "'nope' is not a task"),
        ({"g": {"groups": {"x": {"tasks": ["nope"]}}}}, "groups.g.groups.x.tasks[0]", "not a task"),
        ({"g": {"groups": {"missing": None}}}, "groups.g.groups.missing", "names no group"),
        ({"g": {"groups": {"g": None}}}, "groups.g.groups.g", "cycle: g -> g"),
        (
            {"p": {"groups": {"q": {}}}, "q": {"tasks": ["a"], "groups": {"p": None}}},
            "groups.q.groups.p",
            "cycle: p -> q -> p",
        ),
        ({"g": {"tasks": []}}, "groups.g", "needs member"),
        ({"g": {"groups": {"x": {"metrics": {"m": CHECK}}}}}, "groups.g.groups.x", "needs member"),
        ({"g": None}, "groups.g", "must be a mapping"),
    ],
)
def test_bad_groups_are_refused_at_load_with_the_config_path(
    tmp_path: Path, groups: dict[str, Any], path: str, words: str
) -> None:
    err = _err(_config(tmp_path, groups))
    assert err.path == path and words in err.message


def test_specs_list_parents_first_with_recursive_members(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, NESTED))
    specs = {s.path: s for s in group_specs(cfg.groups, cfg.tasks)}
    assert list(specs) == [("outer",), ("outer", "inner"), ("outer", "tail"), ("tail",)]
    assert specs[("outer",)].tasks == ("a", "b", "c")
    assert specs[("outer", "tail")].where == "groups.tail"  # a reference reports where it is defined
    assert top_level_members(cfg.to_dict()["groups"]) == {"outer": ["a", "b", "c"], "tail": ["c"]}
    # A config echoed back by a job is never refused afterwards: its own tasks are kept.
    assert top_level_members({"g": {"tasks": ["zz"], "groups": {"x": None}}}) == {"g": ["zz"]}


# ------------------------------------------------------------------------------------- nemo results


def _score(value: float, count: int) -> dict[str, Any]:
    return {"value": value, "stats": {"count": count, "sum": value * count, "mean": value}}


def test_nested_group_results_from_nemo_are_mapped_and_kept(tmp_path: Path) -> None:
    half = _score(0.5, 4)  # the values 0, 1, 0, 1
    results = {
        "tasks": {"a": {"metrics": {"m": {"scores": {"string-check": _score(0.5, 2)}}}}},
        "groups": {
            "outer": {
                "metrics": {"m": {"scores": {"string-check": _score(0.7, 7)}}},
                "groups": {
                    "inner": {
                        # count/sum/mean/sum_squared only: the stddev and CI are derived, as for tasks
                        "metrics": {
                            "m": {
                                "scores": {
                                    "string-check": {**half, "stats": {**half["stats"], "sum_squared": 2.0}}
                                }
                            }
                        },
                        "groups": {"deep": {"metrics": {"m": {"scores": {"string-check": _score(0.25, 4)}}}}},
                    }
                },
            },
            "flat": {"metrics": {}, "groups": None},
        },
    }
    res = build_result(results, None, work_dir=tmp_path)
    assert res.groups["outer"]["m"]["string-check"].value == 0.7
    inner = res.subgroups[("outer", "inner")]["m"]["string-check"]
    assert inner.value == 0.5 and inner.stats is not None and inner.stats.stddev == 0.5
    assert inner.stats.ci95_low is not None and inner.stats.ci95_low < 0.5 < (inner.stats.ci95_high or 0)
    assert res.subgroups[("outer", "inner", "deep")]["m"]["string-check"].value == 0.25
    assert res.groups["flat"] == {}
    back = res.to_nemo_dict()["groups"]["outer"]["groups"]["inner"]
    assert back["groups"]["deep"]["metrics"]["m"]["scores"]["string-check"]["value"] == 0.25
    assert EvalResult.from_nemo_dict(res.to_nemo_dict()).subgroups.keys() == res.subgroups.keys()


# ------------------------------------------------------------------------------------- MLflow keys


def test_nested_group_keys_repeat_the_groups_segment_and_cannot_collide() -> None:
    doc = {
        "tasks": {},
        "groups": {
            # a group whose metric is named 'groups' with a score named like the subgroup
            "o": {
                "metrics": {"groups": {"scores": {"x": _score(0.1, 3)}}},
                "groups": {"x": {"metrics": {"m": {"scores": {"s": _score(0.9, 3)}}}}},
            }
        },
    }
    keys = {m.key: m for m in score_metrics(EvalResult.from_nemo_dict(doc))}
    assert keys["groups/o/groups/x"].value == 0.1  # o's metric 'groups', score 'x'
    assert keys["groups/o/groups/x/count"].value == 3
    assert keys["groups/o/groups/x/m/s"].value == 0.9  # subgroup x's metric m, score s
    assert keys["groups/o/groups/x/m/s/count"].value == 3
    assert all(m.task is None for m in keys.values())
