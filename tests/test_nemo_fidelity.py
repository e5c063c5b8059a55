"""Issue 12's "Done when", end to end through the public API and the CLI, on loopback stubs only.

NVIDIA's published configs (rewritten as fixtures: ``tests/fixtures/tool_calling.py``,
``tests/fixtures/live_consults.py``) and a stored-reference submission each validate and run on BOTH
backends, the local engine and the FAKE NeMo service (an independent scorer, ``testing/fake_nemo``), and
the scores must agree, value for value, with the numbers the fixtures are designed to give.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from mlflow_nemo_judge import evaluate
from mlflow_nemo_judge.cli import main
from mlflow_nemo_judge.errors import ConfigWarning
from mlflow_nemo_judge.testing.fake_nemo import FakeNemoService
from mlflow_nemo_judge.testing.mock_llm import MockLLMServer
from tests.conftest import isolate_nemo_env, mock_target
from tests.fixtures.live_consults import (
    FAITHFUL_ROWS,
    LIVE_ROWS,
    POOR_ROWS,
    STRING_CHECK_MEAN,
    live_config,
    rows_target,
)
from tests.fixtures.seed_config import seed_config
from tests.fixtures.tool_calling import EXPECTED, tool_calling_config
from tests.test_references import NS, ROWS, TASK, _store

TOOLS = "travel-tools/tool-calling-accuracy"
LIVE = "consult-check"


@pytest.fixture(autouse=True)
def _loopback_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_nemo_env(monkeypatch, tmp_path)


@pytest.fixture()
def llm() -> Iterator[MockLLMServer]:
    with MockLLMServer() as server:
        yield server


@pytest.fixture()
def fake() -> Iterator[FakeNemoService]:
    with FakeNemoService(queue_delay=0.0) as svc:
        yield svc


def _scores(nemo_doc: dict[str, Any]) -> dict[str, float]:
    """``task/metric/score`` -> value of a NeMo-shaped results document (tasks only)."""
    return {
        f"{task}/{metric}/{name}": score["value"]
        for task, t in nemo_doc["tasks"].items()
        for metric, m in t["metrics"].items()
        for name, score in m["scores"].items()
    }


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code, out, err = _cli([*argv, "--output", "json"], capsys)
    assert code == 0, err
    run: dict[str, Any] = json.loads(out)["runs"][0]
    return run


def _files(tmp_path: Path, config: dict[str, Any], target: dict[str, Any]) -> tuple[str, str]:
    cfg, tgt = tmp_path / "config.json", tmp_path / "target.json"
    cfg.write_text(json.dumps(config))
    tgt.write_text(json.dumps(target))
    return str(cfg), str(tgt)


def _tracked(uri: str, run_id: str) -> tuple[dict[str, float], dict[str, str]]:
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    return run.data.metrics, run.data.tags


def _fake_result(fake: FakeNemoService, job_id: str) -> dict[str, Any]:
    """The results document the fake stored for a job: its own scorer's numbers, not the package's."""
    docs = [d for d in fake.results.values() if d.get("job") == job_id]
    assert len(docs) == 1, list(fake.results.values())
    return docs[0]


# ------------------------------------------------------------------------- 1. tool calling, both ways


@pytest.mark.timeout(180)
def test_published_tool_calling_config_validates_runs_and_tracks_the_same_on_both_backends(
    mlflow_uri: str,
    llm: MockLLMServer,
    fake: FakeNemoService,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tool_calling_config(f"{llm.base_url}/chat/completions")
    target = mock_target(llm, "mock/tool-caller")
    cfg, tgt = _files(tmp_path, config, target)

    code, out, err = _cli(["validate", cfg, "--target", tgt], capsys)
    assert code == 0 and "4 row(s) checked" in out, err
    code, out, err = _cli(
        ["validate", cfg, "--target", tgt, "--backend", "nemo", "--nemo-url", fake.base_url], capsys
    )
    assert code == 0 and "valid for the nemo backend" in out, err
    assert llm.request_count == 0 and not fake.jobs  # validation called no model and made no job

    expected_means = {f"{TOOLS}/{name}": sum(v) / len(v) for name, v in EXPECTED.items()}
    assert expected_means == {
        f"{TOOLS}/function_name_accuracy": 0.75,
        f"{TOOLS}/function_name_and_args_accuracy": 0.5,
    }
    nemo_opts = {"evaluator_url": fake.base_url, "poll_interval": 0.05, "max_poll_interval": 0.2}
    runs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)  # the judge model NeMo's tool-calling ignores
        for backend in ("local", "nemo"):
            runs[backend] = evaluate(
                config,
                target,
                backend=backend,
                backend_options=nemo_opts if backend == "nemo" else None,
                experiment="tool-calling",
                tracking_uri=mlflow_uri,
            )

    tracked = {}
    for backend, ev in runs.items():
        samples = sorted(ev.result.iter_samples(), key=lambda s: s.index)
        for name, want in EXPECTED.items():
            got = [s.metrics["tool-calling-accuracy"].scores[name] for s in samples]
            assert got == want, (backend, name)
        assert all(s.target_error is None for s in samples), backend
        metrics, tags = _tracked(mlflow_uri, ev.run_ids[0])
        assert tags["nemo_judge.backend"] == backend
        for key, mean in expected_means.items():
            assert metrics[key] == pytest.approx(mean), (backend, key)
        assert metrics[f"{TOOLS}/function_name_accuracy/count"] == 4
        tracked[backend] = metrics
    # The response-reading judge ran on both, and agreed.
    rating = "travel-tools/call-review/rating"
    assert not math.isnan(tracked["local"][rating]) and tracked["local"][rating] == tracked["nemo"][rating]

    # The nemo run was computed by the service: one job, its body the published shape, its own numbers.
    (body,) = fake.job_requests
    task = body["config"]["tasks"]["travel-tools"]
    assert (
        task["type"] == "chat-completion"
        and task["params"]["template"]["tools"] == "{{ item.tools | tojson }}"
    )
    assert task["metrics"]["tool-calling-accuracy"]["type"] == "tool-calling"
    job_id = _tracked(mlflow_uri, runs["nemo"].run_ids[0])[1]["nemo_judge.job_id"]
    service = _scores(_fake_result(fake, job_id))
    for key, mean in expected_means.items():
        assert service[key] == pytest.approx(mean)
    tool_calls = [r for r in llm.requests if r.model == "mock/tool-caller"]
    assert len(tool_calls) == 8 and all(r.body.get("tools") for r in tool_calls)  # 4 rows x 2 backends


# ---------------------------------------------------------------------- 2. live evaluation, four ways


@pytest.mark.timeout(180)
def test_published_live_config_scores_the_same_live_as_a_job_and_locally(
    mlflow_uri: str,
    llm: MockLLMServer,
    fake: FakeNemoService,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg, tgt = _files(tmp_path, live_config(f"{llm.base_url}/chat/completions"), rows_target())
    nemo = ["--backend", "nemo", "--nemo-url", fake.base_url]

    code, out, err = _cli(["validate", cfg, "--target", tgt], capsys)
    assert code == 0 and f"{len(LIVE_ROWS)} row(s) checked" in out, err
    code, out, err = _cli(["validate", cfg, "--target", tgt, *nemo], capsys)
    assert code == 0 and "valid for the nemo backend" in out, err
    assert llm.request_count == 0 and not fake.live.requests

    # The dry run: the service evaluates the rows live and the scores are printed.
    code, out, err = _cli(["validate", cfg, "--target", tgt, *nemo, "--live"], capsys)
    assert code == 0, err
    live_lines = {line.strip() for line in out.splitlines() if " = " in line}
    (dry,) = [line for line in live_lines if line.startswith(f"{LIVE}/correctness/correct = ")]
    dry_judge = float(dry.split(" = ")[1].split()[0])
    assert f"{LIVE}/names-diagnosis/string-check = {STRING_CHECK_MEAN} (n={len(LIVE_ROWS)})" in live_lines
    assert dry.endswith(f"(n={len(LIVE_ROWS)})")
    assert len(fake.live.requests) == 1 and not fake.jobs  # live: nothing persisted
    assert fake.live.requests[0]["target"]["rows"] == LIVE_ROWS

    # Three tracked runs of the same evaluation: local, a nemo job, and a nemo live answer.
    track = ["--tracking-uri", mlflow_uri, "--experiment", "live-notebook"]
    local = _run_json(["run", cfg, "--target", tgt, *track, "--no-cache"], capsys)
    job = _run_json(["run", cfg, "--target", tgt, *track, *nemo], capsys)
    assert len(fake.jobs) == 1
    # --force: otherwise the identical finished job run is reused and no live request is made at all.
    live = _run_json(["run", cfg, "--target", tgt, *track, *nemo, "--nemo-live", "--force"], capsys)
    assert len(fake.live.requests) == 2 and len(fake.jobs) == 1  # answered live, no second job

    want = {
        f"{LIVE}/names-diagnosis/string-check": STRING_CHECK_MEAN,
        f"{LIVE}/correctness/correct": dry_judge,
    }
    for name, run in (("local", local), ("job", job), ("live", live)):
        assert not run["reused"], name
        assert _scores(run["results"]) == pytest.approx(want), name
        metrics, tags = _tracked(mlflow_uri, run["run_id"])
        assert {k: metrics[k] for k in want} == pytest.approx(want), name
        assert tags["nemo_judge.backend"] == ("local" if name == "local" else "nemo")
    assert len({local["run_id"], job["run_id"], live["run_id"]}) == 3

    # Per row, where the backend has rows (a live answer carries aggregates only): the judge separates
    # the faithful summaries from the vague or wrong ones, identically on both.
    per_row = {}
    for backend, opts in (("local", None), ("nemo", {"evaluator_url": fake.base_url, "poll_interval": 0.05})):
        ev = evaluate(
            live_config(f"{llm.base_url}/chat/completions"),
            rows_target(),
            backend=backend,
            backend_options=opts,
            tracking=False,
            cache=False,
        )
        per_row[backend] = {
            s.item_id: s.metrics["correctness"].scores["correct"] for s in ev.result.iter_samples()
        }
    assert per_row["local"] == per_row["nemo"]
    assert min(per_row["local"][r] for r in FAITHFUL_ROWS) > max(per_row["local"][r] for r in POOR_ROWS)
    assert sum(per_row["local"].values()) / len(LIVE_ROWS) == pytest.approx(dry_judge)


# --------------------------------------------------------------------- 3. stored references, both ways


@pytest.mark.timeout(180)
def test_stored_config_and_target_score_the_same_submitted_as_references_and_resolved_locally(
    llm: MockLLMServer, fake: FakeNemoService, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _store(fake, llm, tmp_path)
    refs = [f"{NS}/consult-judge", "--target", f"{NS}/summarizer", "--nemo-url", fake.base_url]

    # The same evaluation written inline: the number both reference runs must reproduce.
    inline_cfg = seed_config(judge_url=f"{llm.base_url}/chat/completions", judge_model="mock/judge")
    inline_cfg["tasks"][TASK]["dataset"] = {"files_url": str(tmp_path / "consults.jsonl")}  # _store's rows
    endpoint = {"url": f"{llm.base_url}/chat/completions", "model_id": "mock/faithful-summarizer"}
    cfg, tgt = _files(tmp_path, inline_cfg, {"type": "model", "model": {"api_endpoint": endpoint}})
    inline = _run_json(["run", cfg, "--target", tgt, "--no-tracking", "--no-cache"], capsys)
    expected = _scores(inline["results"])
    assert expected and not any(math.isnan(v) for v in expected.values())
    assert inline["usage"]["samples"] == ROWS

    code, out, err = _cli(["validate", *refs, "--backend", "nemo"], capsys)
    assert code == 0, err
    remote = _run_json(["run", *refs, "--backend", "nemo", "--no-tracking"], capsys)
    (body,) = fake.job_requests
    assert body["config"] == f"{NS}/consult-judge" and body["target"] == f"{NS}/summarizer"
    local = _run_json(["run", *refs, "--no-tracking", "--no-cache"], capsys)
    assert len(fake.job_requests) == 1  # the local run resolved the references and ran here

    for name, run in (("nemo", remote), ("local", local)):
        assert run["usage"]["samples"] == ROWS, name
        assert _scores(run["results"]) == pytest.approx(expected), name


# ------------------------------------------------------------------------------ found while testing


@pytest.mark.timeout(120)
def test_a_nemo_rerun_after_the_local_rows_changed_is_not_reused(
    mlflow_uri: str, llm: MockLLMServer, fake: FakeNemoService, tmp_path: Path
) -> None:
    """A local file the nemo backend uploads is digested by its rows, as the local scan does (it was
    digested by its location, so a rerun after an edit reused the old run): one dataset, one digest."""
    from tests.fixtures.tool_calling import TOOL_ROWS

    data = tmp_path / "rows.jsonl"
    lines = TOOL_ROWS.read_text().splitlines()
    config = tool_calling_config(f"{llm.base_url}/chat/completions", files_url=str(data))
    opts = {"evaluator_url": fake.base_url, "poll_interval": 0.05}
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        for rows in (lines, lines[:2]):
            data.write_text("\n".join(rows) + "\n")
            ev = evaluate(
                config,
                mock_target(llm, "mock/tool-caller"),
                backend="nemo",
                backend_options=opts,
                experiment="edited-rows",
                tracking_uri=mlflow_uri,
            )
            seen.append((ev.reused[0], ev.result.usage.samples))
    assert seen == [(False, 4), (False, 2)]  # the edited file is a new dataset, hence a new run
