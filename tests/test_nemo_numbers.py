"""A nemo run keeps NeMo's own numbers; the package's recomputation from the per-sample data sits beside
them (``recomputed/…`` metrics, ``nemo_judge/recomputed.json``) and a disagreement is flagged (tag
``nemo_judge.recomputed_differs``, one WARNING line). The local backend records none of this."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest

from mlflow_nemo_judge.backends.nemo.results import build_result
from mlflow_nemo_judge.compare import entries_from_runs, leaderboard
from mlflow_nemo_judge.recomputed import same_value
from mlflow_nemo_judge.results import EvalResult, Score, ScoreStats
from mlflow_nemo_judge.scoring.stats import ci_from_stats
from mlflow_nemo_judge.tracking.names import MAX_TAG_VALUE, TAG_RECOMPUTED_DIFFERS
from mlflow_nemo_judge.tracking.params import score_metrics
from mlflow_nemo_judge.tracking.recomputed import recomputed_files, recomputed_metrics, recomputed_tags
from mlflow_nemo_judge.tracking.store import RunSummary

TASK, METRIC = "consult", "completeness"
KEY = f"{TASK}/{METRIC}/{METRIC}"


def _service(value: float | None, stats: dict[str, Any] | None, groups: dict[str, Any] | None = None) -> dict:
    score: dict[str, Any] = {"value": value}
    if stats is not None:
        score["stats"] = stats
    return {
        "tasks": {TASK: {"metrics": {METRIC: {"scores": {METRIC: score}}}}},
        "groups": groups or {},
    }


def _samples(values: list[float | None], task: str = TASK) -> dict[str, list[dict[str, Any]]]:
    return {
        task: [
            {
                "item": {"id": f"{task}-{i}"},
                "sample": {"output_text": f"answer {i}"},
                "metrics": {METRIC: {"scores": {METRIC: {"value": v, "stats": None}}}},
            }
            for i, v in enumerate(values)
        ]
    }


PER_SAMPLE = [5.0, 3.0, None, 4.0, 4.0]  # mean 4.0 over 4 scored, 1 NaN, population stddev sqrt(0.5)
FULL = {"count": 4, "sum": 18.0, "mean": 4.5, "stddev": 1.0, "stderr": 0.5, "min": 3.0, "max": 5.0}


def _score(res: EvalResult, tree: str = "tasks") -> Score:
    if tree == "recomputed":
        assert res.recomputed is not None
        return res.recomputed.tasks[TASK][METRIC][METRIC]
    return res.tasks[TASK][METRIC][METRIC]


# ---------------------------------------------------------------------------------- results mapping


def test_the_service_value_and_stats_are_kept_and_the_recomputation_sits_beside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mlflow_nemo_judge"):
        res = build_result(_service(4.5, FULL), _samples(PER_SAMPLE), work_dir=tmp_path, job={"id": "eval-1"})
    theirs = _score(res)
    assert theirs.value == 4.5 and theirs.stats is not None
    st = theirs.stats
    assert (st.count, st.sum, st.mean, st.stddev, st.stderr, st.min, st.max) == (4, 18.0, 4.5, 1.0, 0.5, 3, 5)
    # Not reported by the service, so not filled in from the per-sample data either.
    assert st.nan_count is None and st.variance is None
    # Our CI is the one stat it never reports: derived from its own count/mean/stderr.
    assert (st.ci95_low, st.ci95_high) == pytest.approx(ci_from_stats(4.5, 4, stderr=0.5))
    assert res.to_nemo_dict()["tasks"][TASK]["metrics"][METRIC]["scores"][METRIC]["value"] == 4.5

    ours = _score(res, "recomputed")
    assert ours.value == 4.0 and ours.stats is not None
    assert (ours.stats.count, ours.stats.nan_count, ours.stats.min, ours.stats.max) == (4, 1, 3.0, 5.0)
    assert ours.stats.stddev == pytest.approx(math.sqrt(0.5))
    assert ours.stats.ci95_low is not None and ours.stats.ci95_low < 4.0 < ours.stats.ci95_high  # type: ignore[operator]

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    line = warnings[0].getMessage()
    assert "eval-1" in line and KEY in line and "service 4.5" in line and "per-sample 4.0" in line
    assert "\n" not in line
    assert [d.path for d in res.recomputed.differences(res.tasks, res.groups)] == [KEY]  # type: ignore[union-attr]


def test_agreeing_numbers_warn_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # 4.0 + one ulp-scale wobble: a service summing in another order is not a disagreement.
    service = _service(4.0 + 1e-12, {**FULL, "sum": 16.0, "mean": 4.0})
    with caplog.at_level(logging.WARNING, logger="mlflow_nemo_judge"):
        res = build_result(service, _samples(PER_SAMPLE), work_dir=tmp_path)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert res.recomputed is not None and res.recomputed.differences(res.tasks, res.groups) == []
    assert recomputed_tags(res) == {TAG_RECOMPUTED_DIFFERS: "none"}
    # The service's stddev (1.0) is kept although the samples' is sqrt(0.5): only values are compared.
    assert _score(res).stats.stddev == 1.0  # type: ignore[union-attr]


def test_minimal_service_stats_are_not_completed_from_the_samples(tmp_path: Path) -> None:
    """The 2025-05 server returns count/sum/mean only: no spread, so no interval is invented for NeMo's
    numbers; the recomputation beside them has its own."""
    res = build_result(
        _service(4.0, {"count": 4, "sum": 16.0, "mean": 4.0}), _samples(PER_SAMPLE), work_dir=tmp_path
    )
    st = _score(res).stats
    assert st is not None and (st.count, st.sum, st.mean) == (4, 16.0, 4.0)
    assert st.stddev is None and st.ci95_low is None and st.nan_count is None
    keys = {m.key for m in score_metrics(res)}
    assert keys == {KEY, f"{KEY}/count"}
    rec = recomputed_metrics(res)
    assert rec[f"recomputed/{KEY}"] == 4.0 and rec[f"recomputed/{KEY}/nan_count"] == 1.0
    assert f"recomputed/{KEY}/ci95_low" in rec and f"recomputed/{KEY}/ci95_high" in rec


def test_a_stddev_from_variance_or_sum_squared_is_derived_from_the_service_stats(tmp_path: Path) -> None:
    res = build_result(
        _service(4.0, {"count": 4, "sum": 16.0, "mean": 4.0, "sum_squared": 68.0}), None, work_dir=tmp_path
    )
    st = _score(res).stats
    assert st is not None and st.stddev == pytest.approx(1.0)  # sqrt(68/4 - 16)
    assert (st.ci95_low, st.ci95_high) == pytest.approx(ci_from_stats(4.0, 4, stddev=1.0))
    assert res.recomputed is None  # no per-sample data: nothing to recompute, nothing to flag
    assert recomputed_metrics(res) == {} and recomputed_tags(res) == {} and recomputed_files(res) == {}


def test_a_corpus_level_score_is_not_recomputed(tmp_path: Path) -> None:
    """A score without stats (bleu ``corpus``) is not a mean of per-sample values."""
    res = build_result(_service(31.5, None), _samples([10.0, 20.0]), work_dir=tmp_path)
    assert _score(res).value == 31.5
    assert res.recomputed is not None and res.recomputed.tasks == {}
    assert recomputed_tags(res) == {TAG_RECOMPUTED_DIFFERS: "none"}


def test_groups_keep_the_service_value_and_pool_the_members_beside(tmp_path: Path) -> None:
    group = {"all": {"metrics": {METRIC: {"scores": {METRIC: {"value": 9.0, "stats": {"count": 6}}}}}}}
    samples = {**_samples([1.0, 2.0], "a"), **_samples([3.0, 4.0, None], "b")}
    service = {
        "tasks": {
            t: {"metrics": {METRIC: {"scores": {METRIC: {"value": v, "stats": {"count": n}}}}}}
            for t, v, n in (("a", 1.5, 2), ("b", 3.5, 2))
        },
        "groups": group,
    }
    res = build_result(service, samples, work_dir=tmp_path, group_tasks={"all": ["a", "b"]})
    assert res.groups["all"][METRIC][METRIC].value == 9.0
    assert res.recomputed is not None
    pooled = res.recomputed.groups["all"][METRIC][METRIC]
    assert pooled.value == 2.5 and pooled.stats is not None and pooled.stats.nan_count == 1
    assert recomputed_tags(res) == {TAG_RECOMPUTED_DIFFERS: f"groups/all/{METRIC}/{METRIC}"}
    rec = recomputed_metrics(res)
    assert rec[f"recomputed/groups/all/{METRIC}/{METRIC}"] == 2.5
    assert rec[f"recomputed/a/{METRIC}/{METRIC}"] == 1.5
    doc = json.loads(recomputed_files(res)["recomputed.json"])
    assert doc["differs"] == [{"path": f"groups/all/{METRIC}/{METRIC}", "service": 9.0, "recomputed": 2.5}]
    assert doc["groups"]["all"]["metrics"][METRIC]["scores"][METRIC]["value"] == 2.5


def test_all_nan_is_the_same_on_both_sides_and_a_number_against_none_differs(tmp_path: Path) -> None:
    assert same_value(None, float("nan")) and not same_value(None, 0.0) and not same_value(4.0, 4.1)
    res = build_result(_service(None, {"count": 0}), _samples([None, None]), work_dir=tmp_path)
    assert recomputed_tags(res) == {TAG_RECOMPUTED_DIFFERS: "none"}
    assert math.isnan(recomputed_metrics(res)[f"recomputed/{KEY}"])
    res = build_result(_service(0.0, {"count": 2}), _samples([None, None]), work_dir=tmp_path / "b")
    assert recomputed_tags(res) == {TAG_RECOMPUTED_DIFFERS: KEY}


def test_a_long_differs_tag_is_cut_between_keys_and_says_so(tmp_path: Path) -> None:
    metrics = {
        f"m{i:03d}_" + "x" * 60: {"scores": {"s": {"value": 1.0, "stats": {"count": 1}}}} for i in range(200)
    }
    samples = {
        TASK: [{"item": {"id": "1"}, "metrics": {m: {"scores": {"s": {"value": 2.0}}} for m in metrics}}]
    }
    res = build_result({"tasks": {TASK: {"metrics": metrics}}, "groups": {}}, samples, work_dir=tmp_path)
    tag = recomputed_tags(res)[TAG_RECOMPUTED_DIFFERS]
    assert len(tag) <= MAX_TAG_VALUE and tag.endswith("more; all in nemo_judge/recomputed.json)")
    listed = tag.split(" … ")[0].split(",")
    assert all(k.startswith(f"{TASK}/m") and k.endswith("/s") for k in listed)
    assert f"(+{200 - len(listed)} more" in tag


def test_the_leaderboard_reads_the_service_scores_only() -> None:
    metrics = {
        KEY: 4.5,
        f"{KEY}/count": 4.0,
        f"{KEY}/ci95_low": 3.9,
        f"recomputed/{KEY}": 4.0,
        f"recomputed/{KEY}/count": 4.0,
        f"recomputed/groups/all/{METRIC}/{METRIC}": 4.0,
        "usage/samples": 5.0,
    }
    run = RunSummary("r1", "run", "0", "FINISHED", 0, {"nemo_judge.target": "t"}, metrics)
    (entry,) = entries_from_runs([run])
    assert list(entry.scores) == [KEY]
    assert entry.scores[KEY]["mean"] == 4.5 and entry.scores[KEY]["count"] == 4.0


def test_a_local_result_records_no_recomputation(tmp_path: Path) -> None:
    res = EvalResult(tasks={TASK: {METRIC: {METRIC: Score(4.0, ScoreStats(count=4, mean=4.0))}}})
    assert res.recomputed is None
    assert recomputed_metrics(res) == {} and recomputed_tags(res) == {} and recomputed_files(res) == {}


# ------------------------------------------------------------------------------ end to end on the fake


def _setup(srv: Any, limit: int = 5) -> tuple[dict[str, Any], dict[str, Any]]:
    from tests.fixtures.paths import shared_data
    from tests.fixtures.seed_config import seed_config

    url = f"{srv.base_url}/chat/completions"
    cfg = seed_config(files_url=str(shared_data()), judge_url=url, judge_model="mock/judge")
    cfg["tasks"]["consult_summary_eval"]["dataset"]["limit"] = limit
    tgt = {"type": "model", "model": {"api_endpoint": {"url": url, "model_id": "mock/poor-summarizer"}}}
    return cfg, tgt


E2E = "consult_summary_eval"
SHIFTED = f"{E2E}/completeness/completeness"
KEPT = f"{E2E}/correctness/correctness"


def _shift_completeness(doc: dict[str, Any]) -> None:
    """The service reports completeness 0.25 above what its own per-sample results average to."""
    score = doc["tasks"][E2E]["metrics"]["completeness"]["scores"]["completeness"]
    score["value"] += 0.25
    score["stats"]["mean"] += 0.25


def _artifact(cl: Any, run_id: str, path: str, tmp: Path) -> Any:
    return json.loads(Path(cl.download_artifacts(run_id, path, str(tmp))).read_text(encoding="utf-8"))


def test_a_nemo_run_keeps_the_service_numbers_and_flags_the_recomputation(
    mlflow_uri: str, judge_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from mlflow.tracking import MlflowClient

    from mlflow_nemo_judge.pipeline import evaluate
    from mlflow_nemo_judge.testing.fake_nemo import FakeNemoService
    from mlflow_nemo_judge.testing.mock_llm import MockLLMServer

    with MockLLMServer() as srv, FakeNemoService(queue_delay=0.0) as fake:
        fake.result_hook = _shift_completeness
        cfg, tgt = _setup(srv)
        with caplog.at_level(logging.WARNING, logger="mlflow_nemo_judge"):
            ev = evaluate(
                cfg,
                tgt,
                experiment="numbers",
                tracking_uri=mlflow_uri,
                backend="nemo",
                backend_options={"evaluator_url": fake.base_url, "poll_interval": 0.05},
            )
        served = next(iter(fake.results.values()))
    reported = served["tasks"][E2E]["metrics"]["completeness"]["scores"]["completeness"]
    per_sample = [r.metrics["completeness"].scores["completeness"] for r in ev.result.iter_samples()]
    finite = [v for v in per_sample if not math.isnan(v)]
    mean = sum(finite) / len(finite)
    assert not same_value(reported["value"], mean)

    cl = MlflowClient(mlflow_uri)
    run = cl.get_run(ev.run_ids[0])
    m, tags = run.data.metrics, run.data.tags
    # The run's score is what NeMo's API returned, stats included (count and stddev as served).
    assert m[SHIFTED] == pytest.approx(reported["value"], abs=1e-12)
    assert m[f"{SHIFTED}/count"] == reported["stats"]["count"]
    assert m[f"{SHIFTED}/stddev"] == pytest.approx(reported["stats"]["stddev"])
    assert f"{SHIFTED}/ci95_low" in m  # derived from the service's own count/mean/stderr
    # Beside it, the package's recomputation from the per-sample data.
    assert m[f"recomputed/{SHIFTED}"] == pytest.approx(mean)
    assert m[f"recomputed/{SHIFTED}/count"] == len(finite)
    assert m[f"recomputed/{KEPT}"] == pytest.approx(m[KEPT])
    assert tags[TAG_RECOMPUTED_DIFFERS] == SHIFTED

    doc = _artifact(cl, run.info.run_id, "nemo_judge/recomputed.json", tmp_path / "a")
    (diff,) = doc["differs"]
    assert diff["path"] == SHIFTED and diff["service"] == pytest.approx(reported["value"])
    assert diff["recomputed"] == pytest.approx(mean)
    results = _artifact(cl, run.info.run_id, "nemo_judge/results.json", tmp_path / "b")
    assert results["tasks"][E2E]["metrics"]["completeness"]["scores"]["completeness"]["value"] == (
        pytest.approx(reported["value"])
    )

    warned = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and SHIFTED in r.getMessage()
    ]
    assert len(warned) == 1 and "per-sample" in warned[0]

    board = leaderboard("numbers", tracking_uri=mlflow_uri)
    assert not [c for c in board.columns if "recomputed" in c]
    assert board.iloc[0][SHIFTED] == pytest.approx(reported["value"])


def test_agreeing_nemo_run_says_none_and_a_local_run_records_no_recomputation(
    mlflow_uri: str, judge_cache: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from mlflow_nemo_judge.pipeline import evaluate
    from mlflow_nemo_judge.testing.fake_nemo import FakeNemoService
    from mlflow_nemo_judge.testing.mock_llm import MockLLMServer

    with MockLLMServer() as srv, FakeNemoService(queue_delay=0.0) as fake:
        cfg, tgt = _setup(srv, limit=3)
        local = evaluate(cfg, tgt, experiment="agree", tracking_uri=mlflow_uri)
        remote = evaluate(
            cfg,
            tgt,
            experiment="agree",
            tracking_uri=mlflow_uri,
            backend="nemo",
            backend_options={"evaluator_url": fake.base_url, "poll_interval": 0.05},
        )
    cl = MlflowClient(mlflow_uri)
    lrun, rrun = cl.get_run(local.run_ids[0]), cl.get_run(remote.run_ids[0])
    assert rrun.data.tags[TAG_RECOMPUTED_DIFFERS] == "none"
    for key in (SHIFTED, KEPT):
        assert rrun.data.metrics[f"recomputed/{key}"] == pytest.approx(rrun.data.metrics[key])
    assert TAG_RECOMPUTED_DIFFERS not in lrun.data.tags
    assert not [k for k in lrun.data.metrics if k.startswith("recomputed/")]
    names = {f.path for f in cl.list_artifacts(lrun.info.run_id, "nemo_judge")}
    assert "nemo_judge/recomputed.json" not in names
    assert "nemo_judge/recomputed.json" in {f.path for f in cl.list_artifacts(rrun.info.run_id, "nemo_judge")}
