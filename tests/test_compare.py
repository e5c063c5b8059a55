"""compare: leaderboard rows read back from MLflow, paired tests on the per-sample tables, rendering."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlflow_nemo_judge import compare as cmp
from mlflow_nemo_judge.compare import leaderboard as compare
from mlflow_nemo_judge.compare import paired
from mlflow_nemo_judge.pipeline import evaluate

TASK = "consult_summary_eval"
KEYS = [f"{TASK}/completeness/completeness", f"{TASK}/correctness/correctness"]


@pytest.fixture(scope="module")
def runs(_migrated_mlflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One two-target evaluation (limit 10) and one faithful-only run logged as JSONL instead of a table."""
    from mlflow_nemo_judge.testing.mock_llm import MockLLMServer
    from tests.conftest import mock_target
    from tests.fixtures.paths import shared_data
    from tests.fixtures.seed_config import seed_config

    data = shared_data()
    d = tmp_path_factory.mktemp("compare")
    shutil.copyfile(_migrated_mlflow_db, d / "mlflow.db")
    uri = f"sqlite:///{d}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp, MockLLMServer() as server:
        mp.chdir(d)
        mp.setenv("NEMO_JUDGE_CACHE_DIR", str(d / "cache"))
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        cfg = seed_config(
            judge_url=f"{server.base_url}/chat/completions", judge_model="mock/judge", files_url=str(data)
        )
        faithful = mock_target(server, "mock/faithful-summarizer")
        poor = mock_target(server, "mock/poor-summarizer")
        both = evaluate(
            cfg, [faithful, poor], experiment="cmp", tracking_uri=uri, limit=10, progress_bar=False
        )
        jsonl = evaluate(
            cfg,
            faithful,
            experiment="cmp-jsonl",
            tracking_uri=uri,
            limit=10,
            table_max_rows=3,
            progress_bar=False,
        )
        yield {"uri": uri, "both": both, "jsonl": jsonl}


def test_leaderboard_has_one_row_per_target_with_cis_and_counts(runs):
    from mlflow.tracking import MlflowClient

    df = compare("cmp", tracking_uri=runs["uri"])
    assert list(df["target"]) == ["mock/faithful-summarizer", "mock/poor-summarizer"]  # best first
    assert set(df["run_id"]) == set(runs["both"].run_ids)  # the parent run is not a row
    assert list(df["config"]) == ["doctor_consult_summary_eval"] * 2
    cl = MlflowClient(tracking_uri=runs["uri"])
    for _, row in df.iterrows():
        metrics = cl.get_run(row["run_id"]).data.metrics
        for key in KEYS:
            assert row[key] == pytest.approx(metrics[key])
            assert row[f"{key}/ci95_low"] == pytest.approx(metrics[f"{key}/ci95_low"])
            assert row[f"{key}/count"] == 10 and row[f"{key}/nan_count"] == 0
    assert not any(c.startswith("usage/") or c == "progress" for c in df.columns)
    assert cmp.score_keys(df) == KEYS


def test_leaderboard_filters_metrics_by_key_or_pattern(runs):
    df = compare("cmp", tracking_uri=runs["uri"], metrics=[KEYS[1]])
    assert cmp.score_keys(df) == [KEYS[1]]
    df = compare(run_ids=[runs["both"].run_ids[1]], tracking_uri=runs["uri"], metrics=[f"{TASK}/complete*"])
    assert cmp.score_keys(df) == [KEYS[0]] and list(df["target"]) == ["mock/poor-summarizer"]


def test_paired_difference_ci_and_p_value_on_shared_items(runs):
    from mlflow_nemo_judge.scoring.paired_tests import paired_test

    a, b = runs["both"].run_ids
    df = paired(a, b, tracking_uri=runs["uri"])
    assert list(df["metric"]) == KEYS
    res_a, res_b = runs["both"].results
    for _, row in df.iterrows():
        metric, score = row["metric"].split("/")[1:]
        va = {s.item_id: s.metrics[metric].scores[score] for s in res_a.iter_samples()}
        vb = {s.item_id: s.metrics[metric].scores[score] for s in res_b.iter_samples()}
        ids = sorted(va)
        assert row["n"] == 10
        assert row["mean_a"] == pytest.approx(sum(va.values()) / 10)
        assert row["mean_diff"] == pytest.approx(sum(vb[i] - va[i] for i in ids) / 10)
        assert row["mean_diff"] < 0 and row["ci95_low"] <= row["mean_diff"] <= row["ci95_high"] < 0
        # 1-5 judge ratings: the test fit for ordinal scores (Wilcoxon signed-rank, or the exact sign
        # test when every difference is equal: 2*0.5^10, never the old p = 0)
        ref = paired_test([va[i] for i in ids], [vb[i] for i in ids])
        assert row["test"] == ref.test and ("Wilcoxon" in ref.test or "sign test" in ref.test)
        assert row["p_value"] == pytest.approx(ref.p_value) and 0 < row["p_value"] < 0.05
        assert row["effect_size"] == pytest.approx(ref.effect_size) and row["effect_size"] < 0
        assert row["effect_size_name"] == "matched-pairs rank-biserial r"


def test_paired_reads_jsonl_runs_like_table_runs(runs):
    uri = runs["uri"]
    from_table = paired(runs["both"].run_ids[0], runs["both"].run_ids[1], tracking_uri=uri)
    from_jsonl = paired(runs["jsonl"].run_ids[0], runs["both"].run_ids[1], tracking_uri=uri)
    assert from_jsonl.equals(from_table)
    same = paired(runs["jsonl"].run_ids[0], runs["both"].run_ids[0], tracking_uri=uri, metrics=[KEYS[0]])
    assert list(same["metric"]) == [KEYS[0]]
    assert same.iloc[0]["mean_diff"] == 0 and same.iloc[0]["p_value"] == 1.0 and same.iloc[0]["n"] == 10


def test_large_runs_log_jsonl_instead_of_a_table(runs):
    from mlflow.tracking import MlflowClient

    cl = MlflowClient(tracking_uri=runs["uri"])
    run_id = runs["jsonl"].run_ids[0]
    assert cl.get_run(run_id).data.tags["nemo_judge.samples"] == "jsonl"
    names = {f.path for f in cl.list_artifacts(run_id, "nemo_judge")}
    assert "nemo_judge/samples.jsonl" in names and "nemo_judge/samples.json" not in names


def test_format_table_prints_one_aligned_line_per_target_and_score(runs):
    df = compare("cmp", tracking_uri=runs["uri"])
    text = cmp.format_table(df)
    lines = text.splitlines()
    assert lines[0].split() == ["target", "run", "score", "mean", "95%", "CI", "n", "NaN"]
    assert set(lines[1]) <= {"-", " "}
    assert len(lines) == 2 + 2 * len(KEYS)
    assert lines[2].startswith("mock/faithful-summarizer") and KEYS[0] in lines[2]
    row = df.iloc[0]
    assert (
        f"{row[KEYS[0]]:.3f}  [{row[KEYS[0] + '/ci95_low']:.3f}, {row[KEYS[0] + '/ci95_high']:.3f}]"
        in lines[2]
    )
    # every row's "mean" column ends at the same position (right-aligned, fixed width)
    end = lines[0].index("mean") + len("mean")
    assert all(line[end - 1] != " " for line in lines[2:])


def test_format_table_of_a_paired_frame(runs):
    df = paired(*runs["both"].run_ids, tracking_uri=runs["uri"])
    lines = cmp.format_table(df).splitlines()
    assert lines[0].split()[:5] == ["compared", "score", "mean", "diff", "95%"]
    assert len(lines) == 2 + len(KEYS) and str(df.iloc[0]["test"]).split(",")[0] in lines[2]


def test_write_chart_writes_pngs(runs, tmp_path):
    df = compare("cmp", tracking_uri=runs["uri"])
    out = cmp.write_chart(df, tmp_path / "board.png")
    pd_out = cmp.write_chart(paired(*runs["both"].run_ids, tracking_uri=runs["uri"]), tmp_path / "paired.png")
    for p in (out, pd_out):
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_frame_sorts_nan_last_and_keeps_missing_scores_as_nan():
    entries = [
        cmp.Entry("a", "r1", scores={"t/m/s": {"mean": None, "count": 0.0, "nan_count": 3.0}}),
        cmp.Entry("b", "r2", scores={"t/m/s": {"mean": 2.0, "ci95_low": 1.0, "ci95_high": 3.0}}),
        cmp.Entry("c", "r3", scores={"t/m/s": {"mean": 4.0}, "t/m/other": {"mean": 1.0}}),
    ]
    df = cmp.frame(entries)
    assert list(df["target"]) == ["c", "b", "a"]
    assert math.isnan(df.iloc[2]["t/m/s"]) and df.iloc[2]["t/m/s/nan_count"] == 3
    assert math.isnan(df.iloc[1]["t/m/other"])
    assert "NaN" in cmp.format_table(df) and cmp.format_table(cmp.frame([])) == "(no runs)"
