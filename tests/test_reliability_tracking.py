"""The reliability figures where people look: in MLflow and in ``compare``.

End to end on the loopback MOCK models (``mock/judge`` beside ``mock/judge-noisy``, a noisy-on-purpose
test double, as a panel judged 3 times, with a synthetic "human" label column written by this test) and
a temp sqlite store: the child run's ``reliability/…`` metrics (equal to its ``report.json``), its
files, the per-judgment and human table columns, one judge span per judgment and the human labels as
Expectations; the parent's pairwise figures and files (``mock/judge-pairwise``); ``compare`` printing
both; the leaderboard without reliability columns; an untracked run returning both reports; and bad
input (one target with a pairwise block, ``--judge-repeats 0``) refused before anything exists.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from mlflow_nemo_judge.cli import main
from mlflow_nemo_judge.errors import ConfigError
from mlflow_nemo_judge.pipeline import evaluate
from mlflow_nemo_judge.results import Judgment, MetricOutcome, SampleRecord
from tests.conftest import mock_target
from tests.fixtures.paths import USELESS_IDS

pytestmark = pytest.mark.usefixtures("judge_cache")

TASK = "consult_summary_eval"
S = f"{TASK}/completeness/completeness"
LIMIT = 8
JUDGES = ("mock_judge", "mock_judge-noisy")


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _artifacts(cl: Any, run_id: str, folder: str = "nemo_judge") -> set[str]:
    out: set[str] = set()
    for f in cl.list_artifacts(run_id, folder):
        out |= _artifacts(cl, run_id, f.path) if f.is_dir else {f.path}
    return out


def _human_label(item_id: str) -> int:
    """A synthetic "human" rating (written by this test, not by any person): the useless summaries 1,
    the others 4 or 5."""
    return 1 if item_id in USELESS_IDS else 4 + int(item_id[-1]) % 2


@pytest.fixture
def labelled(consults_path: Path, tmp_path: Path) -> Path:
    """The seed consults with a ``human_completeness`` column (synthetic, see ``_human_label``)."""
    dst = tmp_path / "consults_labelled.jsonl"
    rows = [json.loads(line) for line in consults_path.read_text().splitlines() if line.strip()]
    dst.write_text(
        "".join(json.dumps({**r, "human_completeness": _human_label(r["ID"])}) + "\n" for r in rows)
    )
    return dst


def _config(seed_eval: dict[str, Any], data: Path, *, panel: bool = True, pairwise: bool = False) -> Any:
    cfg = json.loads(json.dumps(seed_eval["config"]))
    cfg["tasks"][TASK]["dataset"]["files_url"] = str(data)
    url = seed_eval["server"].base_url + "/chat/completions"
    metric: dict[str, Any] = {"human_labels": {"completeness": "human_completeness"}}
    if panel:
        metric["panel"] = [
            {"api_endpoint": {"url": url, "model_id": "mock/judge"}},
            {"api_endpoint": {"url": url, "model_id": "mock/judge-noisy"}},
        ]
    ext: dict[str, Any] = {
        "reliability": {"repeats": 3, "temperature": 0.9, "metrics": {f"{TASK}/completeness": metric}}
    }
    if pairwise:
        ext["pairwise"] = {
            TASK: {
                "model": {"api_endpoint": {"url": url, "model_id": "mock/judge-pairwise"}},
                "template": {
                    "messages": [
                        {"role": "system", "content": "Which summary is better? Answer WINNER: A, B or TIE"},
                        {
                            "role": "user",
                            "content": "Consult: {{ item.content }}\n\nA: {{ output_a }}\n\nB: {{ output_b }}",
                        },
                    ]
                },
                "parser": {"type": "regex", "pattern": r"WINNER:\s*(A|B|TIE)"},
            }
        }
    cfg["mlflow_nemo_judge"] = ext
    return cfg


# ------------------------------------------------------------------------ pure: table and trace


def _judged_record() -> SampleRecord:
    judgments = [
        Judgment("mock_judge", r, {"completeness": 4.0}, raw="RATING: 4", seed=r, temperature=0.9)
        for r in range(2)
    ] + [Judgment("mock_judge-noisy", 0, {"completeness": float("nan")}, raw="??", error="no RATING")]
    out = MetricOutcome(
        scores={"completeness": 4.0}, raw="RATING: 4", judgments=judgments, human={"completeness": 5.0}
    )
    return SampleRecord(
        task=TASK,
        index=0,
        item_id="D001",
        item={"content": "c"},
        output_text="s",
        metrics={"completeness": out},
    )


def test_table_row_keeps_every_judgment_and_the_human_label() -> None:
    from mlflow_nemo_judge.tracking.params import table_row

    row = table_row(_judged_record(), None)
    cols = list(row)
    assert cols[:4] == [
        "item_id",
        "output_text",
        "completeness/completeness",
        "completeness/completeness/human",
    ]
    assert row["completeness/completeness/human"] == 5.0
    assert row["completeness/completeness/mock_judge/r1"] == 4.0
    assert row["completeness/completeness/mock_judge/r2"] == 4.0
    assert row["completeness/completeness/mock_judge-noisy/r1"] is None  # NaN judgment: empty cell
    assert not [c for c in cols if "." in c]
    plain = SampleRecord(task=TASK, index=0, item_id="x", item={}, metrics={"m": MetricOutcome({"s": 1.0})})
    assert [c for c in table_row(plain, None) if c.startswith("m/")] == [
        "m/s",
        "m/raw_judge_output",
        "m/error",
    ]


def test_trace_has_one_span_per_judgment_and_human_expectations() -> None:
    from mlflow_nemo_judge.tracking.trace_samples import _trace_sample

    sample = _trace_sample(_judged_record(), {(TASK, "completeness"): "mock/judge"}, [])
    spans = {s.name: s for s in sample.spans if s.name != "target"}
    assert set(spans) == {
        "judge/completeness/mock_judge/r1",
        "judge/completeness/mock_judge/r2",
        "judge/completeness/mock_judge-noisy/r1",
    }
    r2 = spans["judge/completeness/mock_judge/r2"]
    assert r2.inputs["judge"] == "mock_judge" and r2.inputs["repeat"] == 2 and r2.inputs["seed"] == 1
    assert r2.outputs["scores"] == {"completeness": 4.0}
    assert spans["judge/completeness/mock_judge-noisy/r1"].error == "no RATING"
    assert "model" not in r2.inputs  # params.model did not answer for a panel member: the label does
    (fb,) = sample.feedbacks  # the headline, as the run's metric, from the panel
    assert fb.name == "completeness/completeness" and fb.value == 4.0
    assert fb.judge == "panel: mock_judge, mock_judge-noisy"
    assert [(e.name, e.value) for e in sample.expectations] == [("human/completeness", 5.0)]


def test_leaderboard_entries_skip_reliability_and_pairwise_keys() -> None:
    from mlflow_nemo_judge import compare, tracking

    run = tracking.RunSummary(
        "r1",
        "n",
        "0",
        "FINISHED",
        0,
        {tracking.TAG_TARGET: "t"},
        {
            S: 4.0,
            f"{S}/ci95_low": 3.0,
            f"reliability/{S}/flip_rate": 0.25,
            f"reliability/{S}/icc": 0.8,
            f"reliability/{S}/icc/ci95_low": 0.5,
            f"pairwise/{TASK}/a_vs_b/win_rate": 0.5,
            "usage/judge_calls": 3.0,
        },
    )
    (entry,) = compare.entries_from_runs([run])
    assert list(entry.scores) == [S]


# ------------------------------------------------------------------------------- end to end


@pytest.mark.timeout(240)
def test_repeats_panel_and_human_labels_in_mlflow(
    seed_eval: dict[str, Any], labelled: Path, mlflow_uri: str, tmp_path: Path
) -> None:
    from mlflow_nemo_judge import compare, tracking

    ev = evaluate(
        _config(seed_eval, labelled),
        seed_eval["poor"],  # its summaries vary in quality: the judges have something to agree on
        experiment="reliability",
        tracking_uri=mlflow_uri,
        limit=LIMIT,
        trace_samples=2,
        progress_bar=False,
    )
    (run_id,) = ev.run_ids
    cl = _client(mlflow_uri)
    run = cl.get_run(run_id)
    m = run.data.metrics

    # The §4 figures, in the same batch as the scores (one timestamp), never NaN.
    rel = {k: v for k, v in m.items() if k.startswith("reliability/")}
    assert m[f"reliability/{S}/repeats"] == 3 and m[f"reliability/{S}/judges"] == 2
    # Repeat figures pool the judges: one row per (item, judge).
    assert m[f"reliability/{S}/items"] == LIMIT * len(JUDGES) and m[f"reliability/{S}/human/n"] == LIMIT
    for fig in ("flip_rate", "repeat_spread", "human/spearman", "human/exact", "human/within1"):
        assert f"reliability/{S}/{fig}" in m, fig
    for j in JUDGES:
        assert f"reliability/{S}/judge/{j}/mean" in m and f"reliability/{S}/judge/{j}/flip_rate" in m
    assert f"reliability/{S}/kappa/{JUDGES[0]}__{JUDGES[1]}" in m
    assert 0 < m[f"reliability/{S}/judge/mock_judge-noisy/flip_rate"] <= 1  # noisy on purpose
    assert m[f"reliability/{S}/judge/mock_judge/flip_rate"] == 0  # the plain mock judge never wavers
    assert not [k for k, v in rel.items() if math.isnan(v)]
    history = cl.get_metric_history(run_id, f"reliability/{S}/flip_rate")
    assert history[0].timestamp == cl.get_metric_history(run_id, S)[0].timestamp

    # The report on the Evaluation, and read back from report.json, is what the metrics say.
    assert ev.reliability[0] is not None and ev.reliability[0].metrics() == rel
    back = tracking.load_reliability(run_id, mlflow_uri)
    assert back is not None and back.metrics() == rel

    files = _artifacts(cl, run_id)
    base = f"nemo_judge/reliability/{S}"
    for f in (
        "nemo_judge/reliability/report.md",
        "nemo_judge/reliability/report.json",
        f"{base}/confusion.csv",
    ):
        assert f in files, f
    assert [f for f in files if f.startswith(f"nemo_judge/reliability/plots/{S}/") and f.endswith(".png")]

    # The per-sample table: the headline, the human label and every judgment of every judge.
    table = json.loads(
        Path(cl.download_artifacts(run_id, "nemo_judge/samples.json", str(tmp_path / "t"))).read_text()
    )
    cols = table["columns"]
    want = ["completeness/completeness/human"] + [
        f"completeness/completeness/{j}/r{r}" for j in JUDGES for r in (1, 2, 3)
    ]
    assert set(want) <= set(cols) and len(table["data"]) == LIMIT
    rows = [dict(zip(cols, r, strict=True)) for r in table["data"]]
    assert [r["completeness/completeness/human"] for r in rows] == [_human_label(r["item_id"]) for r in rows]
    noisy = [[r[f"completeness/completeness/mock_judge-noisy/r{k}"] for k in (1, 2, 3)] for r in rows]
    assert any(len(set(v)) > 1 for v in noisy)  # the repeats really differ, and each is kept

    # Traces: one judge span per judgment (judge and repeat in the name), human labels as Expectations.
    traces = list(cl.search_traces(locations=[run.info.experiment_id], run_id=run_id))
    assert len(traces) == 2
    for t in traces:
        names = {s.name for s in t.data.spans}
        assert {f"judge/completeness/{j}/r{r}" for j in JUDGES for r in (1, 2, 3)} <= names
        # The block's repeats apply to every llm-judge metric; without a panel its judge is params.model.
        assert {f"judge/correctness/mock_judge/r{r}" for r in (1, 2, 3)} <= names
        item_id = t.info.tags["nemo_judge.item_id"]
        exp = {a.name: a for a in t.info.assessments if a.name.startswith("human/")}
        assert exp["human/completeness"].expectation.value == _human_label(item_id)

    # The leaderboard holds scores only.
    board = compare.leaderboard(run_ids=[run_id], tracking_uri=mlflow_uri)
    assert S in board.columns and not [c for c in board.columns if "reliability" in c]
    frame = compare.reliability_frame([run_id], mlflow_uri)
    assert len(frame) == 1 and frame.iloc[0][f"{S}/repeats"] == 3


@pytest.mark.timeout(300)
def test_two_targets_pairwise_on_the_parent_and_in_compare(
    seed_eval: dict[str, Any], labelled: Path, mlflow_uri: str, capsys: Any
) -> None:
    from mlflow_nemo_judge import tracking

    ev = evaluate(
        _config(seed_eval, labelled, panel=False, pairwise=True),
        [seed_eval["faithful"], seed_eval["poor"]],
        experiment="pairwise",
        tracking_uri=mlflow_uri,
        limit=LIMIT,
        progress_bar=False,
    )
    cl = _client(mlflow_uri)
    parent = cl.get_run(ev.parent_run_id)
    m = parent.data.metrics
    pair = f"pairwise/{TASK}/faithful-summarizer_vs_poor-summarizer"
    pw = {k: v for k, v in m.items() if k.startswith("pairwise/")}
    assert m[f"{pair}/wins"] + m[f"{pair}/ties"] + m[f"{pair}/losses"] + m[f"{pair}/unjudged"] == LIMIT
    assert m[f"{pair}/win_rate"] > 0.5  # the faithful summaries win against the poor ones
    assert m[f"{pair}/win_rate/ci95_low"] <= m[f"{pair}/win_rate"] <= m[f"{pair}/win_rate/ci95_high"]
    assert f"{pair}/position_inconsistency" in m
    assert m[f"pairwise/{TASK}/rank/faithful-summarizer"] == 1
    strengths = [m[f"pairwise/{TASK}/strength/{x}"] for x in ("faithful-summarizer", "poor-summarizer")]
    assert sum(strengths) == pytest.approx(1.0)
    assert ev.pairwise is not None and ev.pairwise.metrics() == pw
    back = tracking.load_pairwise(ev.parent_run_id, mlflow_uri)
    assert back is not None and back.metrics() == pw
    files = _artifacts(cl, ev.parent_run_id)
    for f in ("report.md", "report.json", f"{TASK}/judgments.jsonl", f"{TASK}/win_matrix.png"):
        assert f"nemo_judge/pairwise/{f}" in files, f
    # The children's headline reliability figures on the parent: metrics and a table.
    assert "nemo_judge/reliability/children.md" in files and "nemo_judge/reliability/children.json" in files
    for kid, label in zip(ev.run_ids, ["faithful-summarizer", "poor-summarizer"], strict=True):
        kid_m = cl.get_run(kid).data.metrics
        assert m[f"{label}/reliability/{S}/flip_rate"] == kid_m[f"reliability/{S}/flip_rate"]
        assert not [k for k in kid_m if k.startswith("pairwise/")]  # the pairwise report is the parent's
    assert len(ev.reliability) == 2 and all(r is not None for r in ev.reliability)

    capsys.readouterr()
    a, b = ev.run_ids
    assert main(["compare", "--run", a, "--run", b, "--tracking-uri", mlflow_uri, "--min-effect", "0.5"]) == 0
    out = capsys.readouterr().out
    board, _, rest = out.partition("judge reliability")
    assert "reliability/" not in board.replace("the reliability/", "")
    reliability, _, pairwise = rest.partition("pairwise judging")
    lines = reliability.splitlines()
    head = next(line.split() for line in lines if line.startswith("target"))
    assert head[:5] == ["target", "run", "score", "k", "flip"]
    for kid in (a, b):  # a line per run and score: k = 3 repeats, flip rate 0 for the steady mock judge
        (line,) = [x.split() for x in lines if x.startswith("mock/") and kid[:8] in x and S in x]
        assert line[3:5] == ["3", "0.000"]
    wins = m[f"{pair}/wins"]
    (pline,) = [x for x in pairwise.splitlines() if "faithful-summarizer vs poor-summarizer" in x]
    assert f"{m[f'{pair}/win_rate']:.3f} [" in pline and f"{int(wins)}/" in pline
    assert "warning" in board  # --min-effect: the power warning column of the paired comparison

    assert main(["compare", "--run", a, "--run", b, "--tracking-uri", mlflow_uri, "--output", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {r["run_id"] for r in doc["reliability"]} == {a, b}
    assert doc["pairwise"][0]["run_id"] == ev.parent_run_id
    assert not [k for r in doc["leaderboard"] for k in r if k.startswith(("reliability/", "pairwise/"))]


@pytest.mark.timeout(240)
def test_untracked_run_returns_both_reports(
    seed_eval: dict[str, Any], labelled: Path, tmp_path: Path
) -> None:
    ev = evaluate(
        _config(seed_eval, labelled, panel=False, pairwise=True),
        [seed_eval["faithful"], seed_eval["poor"]],
        tracking=False,
        limit=4,
        progress_bar=False,
    )
    assert ev.run_ids == [] and ev.parent_run_id is None
    assert len(ev.reliability) == 2
    for rep in ev.reliability:
        assert rep is not None and rep.metrics()[f"reliability/{S}/repeats"] == 3
    assert ev.pairwise is not None
    assert ev.pairwise.metrics()[f"pairwise/{TASK}/faithful-summarizer_vs_poor-summarizer/win_rate"] > 0.5
    assert not (tmp_path / "mlruns").exists()


def test_one_target_with_a_pairwise_block_is_refused_before_any_run(
    seed_eval: dict[str, Any], labelled: Path, mlflow_uri: str
) -> None:
    with pytest.raises(ConfigError) as info:
        evaluate(
            _config(seed_eval, labelled, panel=False, pairwise=True),
            seed_eval["faithful"],
            experiment="never",
            tracking_uri=mlflow_uri,
        )
    assert info.value.path == "mlflow_nemo_judge.pairwise" and "two or more targets" in str(info.value)
    assert _client(mlflow_uri).get_experiment_by_name("never") is None
    assert seed_eval["server"].request_count == 0  # no model was called


@pytest.mark.parametrize("k", ["0", "101"])
def test_judge_repeats_out_of_range_is_bad_input(
    seed_eval: dict[str, Any], tmp_path: Path, capsys: Any, k: str
) -> None:
    cfg, tgt = tmp_path / "c.json", tmp_path / "t.json"
    cfg.write_text(json.dumps(seed_eval["config"]))
    tgt.write_text(json.dumps(mock_target(seed_eval["server"], "mock/faithful-summarizer")))
    code = main(["run", str(cfg), "--target", str(tgt), "--judge-repeats", k, "--no-tracking", "-q"])
    assert code == 2
    assert "--judge-repeats" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_retry_errors_recomputes_the_report_from_the_whole_result(
    seed_eval: dict[str, Any], labelled: Path, mlflow_uri: str
) -> None:
    """The judge refuses two samples (every repeat): their repeats are missing from the first report;
    ``--retry-errors`` judges only them again and the report, recomputed from the full result (kept
    and re-run samples), covers every item; a reuse afterwards returns the report the run logged."""
    from mlflow_nemo_judge import tracking
    from mlflow_nemo_judge.engine import RunOptions
    from mlflow_nemo_judge.pipeline import resume
    from tests.test_retry_errors import BROKEN_ROWS, _BrokenJudgeForSomeRows
    from tests.test_retry_errors import _client as http

    cfg = _config(seed_eval, labelled, panel=False)
    n = 10
    ev = evaluate(
        cfg,
        seed_eval["faithful"],
        experiment="retry-reliability",
        limit=n,
        progress_bar=False,
        http_client=http(_BrokenJudgeForSomeRows()),
    )
    (run_id,) = ev.run_ids
    cl = _client(mlflow_uri)
    first = cl.get_run(run_id).data.metrics
    assert first[f"reliability/{S}/items"] == n - len(BROKEN_ROWS)  # no finite repeat on the refused ones

    fixed = _BrokenJudgeForSomeRows()
    fixed.broken = False
    again = resume(
        run_id, config=cfg, options=RunOptions(http_client=http(fixed), progress_bar=False), retry_errors=True
    )
    done = cl.get_run(run_id).data.metrics
    assert done[f"reliability/{S}/items"] == n and done[f"reliability/{S}/human/n"] == n
    rel = {k: v for k, v in done.items() if k.startswith("reliability/")}
    assert again.reliability[0] is not None and again.reliability[0].metrics() == rel
    loaded = tracking.load_reliability(run_id, mlflow_uri)
    assert loaded is not None and loaded.metrics() == rel  # report.json was replaced too

    reused = resume(run_id, config=cfg)  # FINISHED: nothing to do, the logged report comes back
    assert reused.reused == [True] and reused.reliability[0] is not None
    assert reused.reliability[0].metrics() == rel


@pytest.mark.timeout(120)
def test_cli_judge_repeats_reaches_the_judge_and_the_printed_report(
    seed_eval: dict[str, Any], tmp_path: Path, capsys: Any
) -> None:
    """``run --judge-repeats 2`` on a config without any reliability block: each llm-judge metric is
    judged twice per sample (the mock server sees it), and the report is printed (table and JSON)."""
    cfg, tgt = tmp_path / "c.json", tmp_path / "t.json"
    cfg.write_text(json.dumps(seed_eval["config"]))
    tgt.write_text(json.dumps(mock_target(seed_eval["server"], "mock/poor-summarizer")))
    server = seed_eval["server"]
    server.clear_log()
    args = ["run", str(cfg), "--target", str(tgt), "--judge-repeats", "2", "--no-tracking", "--limit", "3"]
    assert main([*args, "--output", "json", "-q"]) == 0
    doc = json.loads(capsys.readouterr().out)
    judged = [r for r in server.requests if r.model == "mock/judge"]
    assert len(judged) == 3 * 2 * 2  # rows × metrics × repeats
    figures = doc["runs"][0]["reliability"]
    assert figures[f"reliability/{S}/repeats"] == 2 and figures[f"reliability/{S}/items"] == 3
    assert doc["pairwise"] is None

    assert main([*args, "--no-cache", "-q"]) == 0
    out = capsys.readouterr().out
    head = next(line.split() for line in out.splitlines() if line.startswith("target"))
    assert head[:5] == ["target", "run", "score", "k", "flip"]
    assert [line for line in out.splitlines() if S in line and line.split()[3] == "2"]


@pytest.mark.timeout(120)
def test_judge_repeats_flag_is_part_of_the_run_identity_and_its_config(
    seed_eval: dict[str, Any], mlflow_uri: str
) -> None:
    """``--judge-repeats`` is written into the config: a run with 2 repeats is a different evaluation
    from the finished one with 1 (not a reuse), its config.json says so, and its report has the repeats."""
    from mlflow_nemo_judge import tracking

    cfg = json.loads(json.dumps(seed_eval["config"]))
    tgt = mock_target(seed_eval["server"], "mock/faithful-summarizer")
    kw: dict[str, Any] = {"tracking_uri": mlflow_uri, "experiment": "repeats-flag", "limit": 4}
    plain = evaluate(cfg, tgt, **kw)
    assert plain.reliability == [None]
    calls = seed_eval["server"].request_count
    twice = evaluate(cfg, tgt, judge_repeats=2, **kw)
    assert twice.reused == [False] and twice.run_ids != plain.run_ids
    # per sample 2 judge metrics x 2 repeats (each repeat sends its own seed, so none is a cache hit);
    # the target's replies come from the response cache (the same requests as the first run)
    assert seed_eval["server"].request_count - calls == 4 * 2 * 2
    cl = _client(mlflow_uri)
    logged = json.loads(Path(cl.download_artifacts(twice.run_ids[0], "nemo_judge/config.json")).read_text())
    assert logged["mlflow_nemo_judge"]["reliability"]["repeats"] == 2
    m = cl.get_run(twice.run_ids[0]).data.metrics
    assert m[f"reliability/{S}/repeats"] == 2
    assert tracking.load_reliability(twice.run_ids[0]) is not None
    again = evaluate(cfg, tgt, judge_repeats=2, **kw)
    assert again.reused == [True] and again.run_ids == twice.run_ids


def test_a_human_label_column_in_no_row_is_bad_input(
    seed_eval: dict[str, Any], labelled: Path, tmp_path: Path, capsys: Any
) -> None:
    """A misspelt label column would measure "judge-human agreement" over no labels: refused up front,
    naming the config path and the column, before any model call (validate and run alike)."""
    cfg = _config(seed_eval, labelled, panel=False)
    cfg["mlflow_nemo_judge"]["reliability"]["metrics"][f"{TASK}/completeness"]["human_labels"] = {
        "completeness": "human_completenes"
    }
    cpath, tpath = tmp_path / "c.json", tmp_path / "t.json"
    cpath.write_text(json.dumps(cfg))
    tpath.write_text(json.dumps(mock_target(seed_eval["server"], "mock/faithful-summarizer")))
    for cmd in (["validate"], ["run", "--no-tracking"]):
        code = main([cmd[0], str(cpath), "--target", str(tpath), *cmd[1:], "-q"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"mlflow_nemo_judge.reliability.metrics.{TASK}/completeness.human_labels.completeness" in err
        assert "'human_completenes' has no value in any of the" in err
    assert seed_eval["server"].request_count == 0
