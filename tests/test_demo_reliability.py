"""``demo`` (its judge-reliability part): every reliability figure from the MOCK judges, honest about what is mocked.

The mock judges are unreliable on purpose (``testing/mock_llm/judges.py``), so the figures must find
exactly that: the noisy judge flips and the deterministic one does not, the lenient judge scores higher,
the biased pairwise judge is position-inconsistent, and the synthetic human labels follow their rule.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from mlflow_nemo_judge.demo import _COMPLETENESS, demo_dataset
from mlflow_nemo_judge.testing.mock_llm.models import generate

S = "consult_summary_eval/completeness/completeness"
R = f"reliability/{S}"


@pytest.fixture(autouse=True)
def _cache(judge_cache: Any) -> None:
    """Every test gets a private response cache (the fixture sets NEMO_JUDGE_CACHE_DIR)."""


def test_synthetic_human_labels_follow_their_documented_rule() -> None:
    rows = [json.loads(line) for line in demo_dataset().read_text(encoding="utf-8").splitlines()]
    moved = []
    for row in rows:
        user = f"\nFull Consult: {row['content']}\nSummary: {row['summary']}\n"
        match = re.search(r"RATING:\s*(\d+)", generate("mock/judge", _COMPLETENESS, user))
        assert match
        expected = int(match.group(1))
        if int(row["ID"][1:]) % 7 == 0 and expected != 3:  # D007, D014...: one point towards the middle
            expected += -1 if expected > 3 else 1
            moved.append(row["ID"])
        assert row["human_completeness"] == expected, row["ID"]
    assert moved == ["D007", "D014", "D021", "D028"]
    readme = (demo_dataset().parent / "README.md").read_text(encoding="utf-8")
    assert "SYNTHETIC" in readme and "multiple of 7" in readme


def test_reliability_demo_shows_every_figure_and_finds_the_planted_faults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlflow_nemo_judge.demo_reliability import run_reliability_demo

    said: list[str] = []
    rel, pw = run_reliability_demo(tracking=False, say=said.append)
    out = capsys.readouterr().out
    # Repeats: only the noisy judge changes its mind; the pooled ICC is high but below 1.
    assert rel[f"{R}/repeats"] == 3
    assert rel[f"{R}/judge/mock_judge/flip_rate"] == 0.0
    assert rel[f"{R}/judge/mock_judge-noisy/flip_rate"] > 0.2
    assert 0 < rel[f"{R}/flip_rate"] < rel[f"{R}/judge/mock_judge-noisy/flip_rate"]
    assert 0.5 < rel[f"{R}/icc"] < 1.0
    # Panel: the lenient judge is higher on average; agreement is imperfect.
    assert rel[f"{R}/judges"] == 3
    assert rel[f"{R}/judge/mock_judge-lenient/mean"] > rel[f"{R}/judge/mock_judge/mean"]
    assert rel[f"{R}/alpha"] < 1.0
    assert rel[f"{R}/kappa/mock_judge__mock_judge-noisy"] < 1.0
    # Humans: 30 labelled items; the deterministic judge differs from them on the 4 moved rows only.
    assert rel[f"{R}/human/n"] == 30
    assert rel[f"{R}/human/judge/mock_judge/exact"] == pytest.approx(26 / 30)
    assert rel[f"{R}/human/judge/mock_judge-lenient/exact"] < rel[f"{R}/human/judge/mock_judge/exact"]
    # Pairwise: the faithful summariser wins, and the position bias shows as inconsistency.
    pair = "pairwise/consult_summary_eval/faithful-summarizer_vs_poor-summarizer"
    assert pw[f"{pair}/win_rate"] > 0.6
    assert 0 < pw[f"{pair}/position_inconsistency"] < 0.6
    assert pw["pairwise/consult_summary_eval/rank/faithful-summarizer"] == 1
    for figure in ("flip rate", "ICC(1,1)", "Krippendorff α", "κ mock_judge vs mock_judge-noisy", "human κ"):
        assert figure in out, figure
    for figure in ("win rate", "position inconsistency", "Bradley–Terry rank 1: faithful-summarizer"):
        assert figure in out, figure
    told = "\n".join(said)
    assert "NOISY on purpose" in told and "BIASED on purpose" in told and "POSITION-BIASED" in told
    assert "SYNTHETIC" in told and "not human ratings" in told


def test_demo_reliability_flag_logs_the_figures_to_mlflow(
    mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient

    from mlflow_nemo_judge.demo import run_demo

    assert run_demo(tracking_uri=mlflow_uri, quiet=True, reliability=True, limit=10) == 0
    out = capsys.readouterr().out
    assert "Leaderboard (from MLflow)" in out and "Judge reliability" in out
    client = MlflowClient(tracking_uri=mlflow_uri)
    (exp,) = [e for e in client.search_experiments() if e.name == "mlflow-nemo-judge-demo"]
    runs = client.search_runs([exp.experiment_id])
    rel = [r for r in runs if f"{R}/alpha" in r.data.metrics]
    assert len(rel) == 1 and rel[0].data.metrics[f"{R}/human/n"] == 10
    parents = [r for r in runs if any(k.startswith("pairwise/") for k in r.data.metrics)]
    assert len(parents) == 1
    assert parents[0].data.metrics["pairwise/consult_summary_eval/rank/faithful-summarizer"] == 1
    # The plain demo's two runs (both metrics, no reliability block) carry no reliability figures.
    plain = [r for r in runs if "consult_summary_eval/correctness/correctness" in r.data.metrics]
    assert len(plain) == 2
    assert not any(k.startswith(("reliability/", "pairwise/")) for r in plain for k in r.data.metrics)
