"""What a user sees in MLflow, read back from the store (sqlite): table columns without dots and in
reading order, short distinguishing run names, the effective parallelism, one dataset digest, portable
paths in tags, the comparison on the parent run (leaderboard and paired test as metrics, tables,
charts), and the link the CLI prints to the result."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from mlflow_nemo_judge.cli import main
from mlflow_nemo_judge.pipeline import evaluate
from mlflow_nemo_judge.tracking import comparison, links, names
from mlflow_nemo_judge.tracking.identity import portable_path, resolve_portable
from tests.conftest import mock_target

pytestmark = pytest.mark.usefixtures("judge_cache")

TASK = "consult_summary_eval"
KEYS = [f"{TASK}/completeness/completeness", f"{TASK}/correctness/correctness"]


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _json_artifact(cl: Any, run_id: str, path: str, dst: Path) -> Any:
    dst.mkdir(parents=True, exist_ok=True)
    return json.loads(Path(cl.download_artifacts(run_id, path, str(dst))).read_text())


@pytest.fixture
def project(
    seed_eval: dict[str, Any], consults_path: Path, mlflow_uri: str, tmp_path: Path, monkeypatch: Any
) -> Path:
    """A project folder as a repository has it: config.json with a relative dataset path and
    ``params.parallelism: 3``, targets under ``targets/``; the working folder is the project (after
    ``mlflow_uri`` moved it to ``tmp_path``)."""
    folder = tmp_path / "project"
    (folder / "targets").mkdir(parents=True)
    (folder / "consults.jsonl").write_bytes(consults_path.read_bytes())
    cfg = json.loads(json.dumps(seed_eval["config"]))
    cfg["tasks"][TASK]["dataset"]["files_url"] = "consults.jsonl"
    cfg["params"] = {**(cfg.get("params") or {}), "parallelism": 3}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "targets" / "faithful.json").write_text(json.dumps(seed_eval["faithful"]))
    (folder / "targets" / "poor.json").write_text(json.dumps(seed_eval["poor"]))
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.timeout(120)
def test_two_targets_read_well_in_mlflow(project: Path, mlflow_uri: str, tmp_path: Path) -> None:
    ev = evaluate(
        project / "config.json",
        [project / "targets" / "faithful.json", project / "targets" / "poor.json"],
        experiment="views",
        tracking_uri=mlflow_uri,
        limit=6,
        cache_dir=project / "cache",
        progress_bar=False,
    )
    cl = _client(mlflow_uri)
    parent = cl.get_run(ev.parent_run_id)
    kids = [cl.get_run(r) for r in ev.run_ids]

    # Run names: the model without its vendor first, then the data; the parent names both models.
    assert [k.info.run_name for k in kids] == [
        "faithful-summarizer · consults",
        "poor-summarizer · consults",
    ]
    assert parent.info.run_name == "faithful-summarizer vs poor-summarizer · consults"

    for run in [parent, *kids]:
        tags, params = run.data.tags, run.data.params
        # The effective parallelism (the config's 3), not how it was chosen.
        assert params["run/parallelism"] == "3" and tags["nemo_judge.parallelism"] == "3"
        # One digest for one dataset: tag, param and description agree.
        digest = params[f"task/{TASK}/dataset/digest"]
        assert tags["nemo_judge.dataset_digest"] == digest
        assert digest in tags["mlflow.note.content"]
        # Portable paths: relative to the working folder / the config's folder, never this machine's.
        assert tags["nemo_judge.config_path"] == "config.json"
        assert tags["nemo_judge.cache_dir"] == "cache"
        ours = {k: v for k, v in tags.items() if k.startswith("nemo_judge.")}
        assert not [v for v in ours.values() if str(tmp_path) in v]
    assert [k.data.tags["nemo_judge.target_path"] for k in kids] == [
        "targets/faithful.json",
        "targets/poor.json",
    ]
    for kid in kids:
        (ds,) = kid.inputs.dataset_inputs
        assert ds.dataset.digest == kid.data.tags["nemo_judge.dataset_digest"]

        # The per-sample table: no dotted column (MLflow's viewer renders it blank), reading order.
        table = _json_artifact(cl, kid.info.run_id, "nemo_judge/samples.json", tmp_path / kid.info.run_id)
        cols = table["columns"]
        assert not [c for c in cols if "." in c]
        assert cols[:4] == ["item_id", "output_text", "completeness/completeness", "correctness/correctness"]
        assert "item_content" in cols and len(table["data"]) == 6

    # The parent holds the leaderboard as metrics: per target per score mean, CI, n, NaN count ...
    m = parent.data.metrics
    for kid, label in zip(kids, ["faithful-summarizer", "poor-summarizer"], strict=True):
        for key in KEYS:
            assert m[f"{label}/{key}"] == pytest.approx(kid.data.metrics[key])
            for stat in ("ci95_low", "ci95_high", "count", "nan_count"):
                assert m[f"{label}/{key}/{stat}"] == pytest.approx(kid.data.metrics[f"{key}/{stat}"])
    # ... and the paired comparison: poor − faithful is clearly negative on the same 6 items.
    for key in KEYS:
        base = f"paired/poor-summarizer_vs_faithful-summarizer/{key}"
        assert m[f"{base}/n"] == 6
        assert m[f"{base}/mean_diff"] < 0 and m[f"{base}/ci95_high"] < 0 and m[f"{base}/p_value"] < 0.05
        expected = kids[1].data.metrics[key] - kids[0].data.metrics[key]
        assert m[f"{base}/mean_diff"] == pytest.approx(expected)
    # 1-5 ratings are ordinal: the paired comparison picks the Wilcoxon signed-rank test for them
    assert "Wilcoxon signed-rank" in parent.data.tags["nemo_judge.paired_test"]
    arts = {f.path for f in cl.list_artifacts(parent.info.run_id, "nemo_judge")}
    assert {"nemo_judge/paired.json", "nemo_judge/paired_table.json", "nemo_judge/comparison.json"} <= arts
    plots = {f.path for f in cl.list_artifacts(parent.info.run_id, "nemo_judge/plots")}
    assert {"nemo_judge/plots/comparison.png", "nemo_judge/plots/paired.png"} <= plots
    paired = _json_artifact(cl, parent.info.run_id, "nemo_judge/paired.json", tmp_path / "p")
    assert paired["baseline"] == "faithful-summarizer"
    assert {r["metric"] for r in paired["rows"]} == set(KEYS)
    assert all(
        ("Wilcoxon" in r["test"] or "sign test" in r["test"]) and r["b"] == "poor-summarizer"
        for r in paired["rows"]
    )
    # comparison.json names each child's run and the config.
    board = _json_artifact(cl, parent.info.run_id, "nemo_judge/comparison.json", tmp_path / "c")
    rows = [dict(zip(board["columns"], r, strict=True)) for r in board["data"]]
    assert {r["run_name"] for r in rows} == {k.info.run_name for k in kids}
    assert {r["config"] for r in rows} == {"doctor_consult_summary_eval"}


def test_partial_tracking_flag_reaches_the_run(
    seed_eval: dict[str, Any], mlflow_uri: str, monkeypatch: Any
) -> None:
    from mlflow_nemo_judge.tracking import mlflow_sink

    seen: list[bool] = []
    real = mlflow_sink.MlflowSink.__init__

    def spy(self: Any, *args: Any, **kw: Any) -> None:
        seen.append(bool(kw.get("allow_partial_tracking")))
        real(self, *args, **kw)

    monkeypatch.setattr(mlflow_sink.MlflowSink, "__init__", spy)
    ev = evaluate(
        seed_eval["config"],
        seed_eval["faithful"],
        experiment="partial",
        tracking_uri=mlflow_uri,
        limit=2,
        progress_bar=False,
        allow_partial_tracking=True,
    )
    assert seen == [True]
    tags = _client(mlflow_uri).get_run(ev.run_ids[0]).data.tags
    assert tags["nemo_judge.allow_partial_tracking"] == "true"


@pytest.mark.timeout(120)
def test_cli_run_and_compare_print_where_to_look(
    seed_eval: dict[str, Any], mlflow_uri: str, tmp_path: Path, capsys: Any
) -> None:
    cfg, tgt = tmp_path / "config.json", tmp_path / "target.json"
    cfg.write_text(json.dumps(seed_eval["config"]))
    tgt.write_text(json.dumps(mock_target(seed_eval["server"], "mock/faithful-summarizer")))
    code = main(
        ["run", str(cfg), "--target", str(tgt), "--limit", "2", "--tracking-uri", mlflow_uri]
        + ["--experiment", "links", "--no-progress", "--output", "json"]
    )
    out, err = capsys.readouterr()
    assert code == 0
    run_id = json.loads(out)["runs"][0]["run_id"]  # stdout stays pure JSON; the link goes to stderr
    exp_id = _client(mlflow_uri).get_run(run_id).info.experiment_id
    assert f"ui --backend-store-uri {mlflow_uri}" in err
    assert f"#/experiments/{exp_id}/runs/{run_id}" in err
    assert main(["compare", "--experiment", "links", "--tracking-uri", mlflow_uri]) == 0
    err = capsys.readouterr().err
    assert f"#/experiments/{exp_id}" in err


# ------------------------------------------------------------------------------------- pure parts


def test_view_hint_on_a_server_is_the_page_never_an_mlflow_ui_command() -> None:
    hint = links.view_hint("https://alice:s3cret-pw@mlflow.example:5000/?token=abcdef123", "7", "r1")
    assert "mlflow ui" not in hint and "s3cret-pw" not in hint and "abcdef123" not in hint
    assert hint.endswith("mlflow.example:5000/#/experiments/7/runs/r1")
    local = links.view_hint("sqlite:///mlflow.db", "7")
    assert "ui --backend-store-uri sqlite:///mlflow.db" in local and "#/experiments/7" in local


def test_names_have_no_dots_and_lead_with_the_model() -> None:
    assert names.column("m.v2", "score.a") == "m_v2/score_a"
    assert names.short_model("meta/llama-3.1-8b-instruct") == "llama-3.1-8b-instruct"
    assert names.short_model("gpt-4.1") == "gpt-4.1"
    assert len(names.run_name("x" * 300, "data", 250)) == 250
    # Labels of parent metrics: short where unique, full where two short names collide.
    assert comparison.labels(["a/m", "b/m", "c/x"]) == ["a_m", "b_m", "x"]
    assert comparison.labels(["m", "m"]) == ["m", "m-2"]


def test_portable_paths_round_trip(tmp_path: Path) -> None:
    base = tmp_path / "proj"
    inside, outside = base / "targets" / "t.yaml", tmp_path / "elsewhere" / "t.yaml"
    assert portable_path(inside, base) == "targets/t.yaml"
    assert resolve_portable("targets/t.yaml", base) == inside.resolve()
    assert resolve_portable(portable_path(outside, base), base) == outside.resolve()
    home = Path.home() / "some-cache"
    assert portable_path(home, base) == "~/some-cache" or str(base).startswith(str(Path.home()))


def test_leaderboard_metrics_skip_unknown_stats_but_keep_a_nan_mean() -> None:
    import pandas as pd

    board = pd.DataFrame(
        [{"target": "a/x", "run_id": "r", "k": float("nan"), "k/ci95_low": float("nan"), "k/count": 0.0}]
    )
    got = comparison.leaderboard_metrics(board, ["k"], {"r": "x"})
    assert set(got) == {"x/k", "x/k/count"} and math.isnan(got["x/k"])


def test_demo_against_a_server_prints_the_run_page_not_an_mlflow_ui_command(
    monkeypatch: Any, capsys: Any
) -> None:
    """`mlflow ui --backend-store-uri http://...` would crash: on a server the demo points at the page."""
    import pandas as pd

    from mlflow_nemo_judge import compare, pipeline
    from mlflow_nemo_judge.demo import run_demo

    real = pipeline.evaluate

    def untracked(config: Any, targets: Any, **kw: Any) -> Any:
        kw["tracking"] = False  # no server here: the models run, the tracking is what we stub
        ev = real(config, targets, **kw)
        return pipeline.Evaluation(ev.results, ["r1", "r2"], "parent1", "3", [False, False])

    monkeypatch.setattr(pipeline, "evaluate", untracked)
    monkeypatch.setattr(compare, "leaderboard", lambda *a, **k: pd.DataFrame())
    assert run_demo(limit=1, tracking_uri="http://user:pw-secret-1@127.0.0.1:5999") == 0
    err = capsys.readouterr().err
    assert "ui --backend-store-uri" not in err and "pw-secret-1" not in err
    assert "View in MLflow: http://127.0.0.1:5999/#/experiments/3/runs/parent1" in err
