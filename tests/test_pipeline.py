"""The pipeline and the engine's lifecycle: bounded in-flight window, owned temp folders, the async API,
sinks, group pooling, and the curated public surface."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest

import mlflow_nemo_judge as pkg
from mlflow_nemo_judge.backends.local import LocalBackend
from mlflow_nemo_judge.config import load_config, load_target
from mlflow_nemo_judge.engine import RunOptions, run_local, run_plan_async
from mlflow_nemo_judge.errors import EvaluationError
from mlflow_nemo_judge.pipeline import evaluate, evaluate_async, execute, run_sync
from mlflow_nemo_judge.plan import build_plan
from mlflow_nemo_judge.tracking.sink import MemorySink

JUDGE_URL = "http://judge.test/v1/chat/completions"


def _chat(text: str) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]
    }


def _judged_rows_config(n_rows: int, parallelism: int, tasks: tuple[str, ...] = ("t",)) -> tuple[dict, dict]:
    """A ``data`` task per name judging inline rows: one judge call per row, no target call."""
    metric = {
        "type": "llm-judge",
        "params": {
            "model": {"api_endpoint": {"url": JUDGE_URL, "model_id": "judge"}},
            "template": {"messages": [{"role": "user", "content": "Rate row {{ item.n }}: {{ item.text }}"}]},
            "scores": {"quality": {"type": "int", "parser": {"type": "regex", "pattern": "RATING: (\\d)"}}},
        },
    }
    cfg = {
        "type": "custom",
        "name": "pipeline-test",
        "params": {"parallelism": parallelism},
        "tasks": {name: {"type": "data", "metrics": {"judge": metric}} for name in tasks},
    }
    target = {"type": "rows", "rows": [{"n": i, "text": f"row text {i}"} for i in range(n_rows)]}
    return cfg, target


def _row_number(req: httpx.Request) -> int:
    content = json.loads(req.content)["messages"][-1]["content"]
    return int(re.search(r"Rate row (\d+)", content).group(1))  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- bounded window


def test_one_stalled_sample_holds_back_new_samples_at_the_window(tmp_path: Path) -> None:
    """The in-flight window is released when a record is written, so while sample 0 stalls, no more than
    a window of samples start (before, 2,999 of 3,000 finished records piled up behind one stall)."""
    parallelism, rows = 2, 300
    window = parallelism * 4
    seen: list[int] = []
    during_stall: list[int] = []

    async def handler(req: httpx.Request) -> httpx.Response:
        n = _row_number(req)
        seen.append(n)
        if n == 0:
            # Stall until the engine has nothing left it may start: run the loop until no new request
            # arrives for many iterations (no wall clock involved).
            quiet = 0
            while quiet < 200:
                before = len(seen)
                await asyncio.sleep(0)
                quiet = quiet + 1 if len(seen) == before else 0
            during_stall.append(len(seen))
        return httpx.Response(200, json=_chat(f"RATING: {1 + n % 5}"))

    cfg, target = _judged_rows_config(rows, parallelism)
    plan = build_plan(load_config(cfg), load_target(target))
    order: list[int] = []

    async def go() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            opts = RunOptions(
                cache=False,
                http_client=http,
                progress_bar=False,
                work_dir=tmp_path,
                on_record=lambda r: order.append(r.index),
            )
            return await run_plan_async(plan, opts)

    result = asyncio.run(go())
    assert during_stall and during_stall[0] <= window  # at most a window of samples started
    assert sorted(seen) == list(range(rows))  # and after the stall, every sample ran
    assert order == list(range(rows))  # records streamed in item order
    assert result.tasks["t"]["judge"]["quality"].stats.count == rows


# ------------------------------------------------------------------------------- temp folders


def _temp_entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setenv("TMPDIR", str(root))
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _mock_client(handler: Any) -> Any:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def test_a_finished_run_leaves_no_temp_folder_once_its_result_is_gone(private_tmp: Path) -> None:
    cfg, target = _judged_rows_config(5, 2)

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=_chat("RATING: 4"))

    async def go(close: bool) -> None:
        async with _mock_client(handler) as http:
            result = await run_plan_async(
                build_plan(load_config(cfg), load_target(target)),
                RunOptions(cache=False, http_client=http, progress_bar=False),
            )
        assert len(list(result.iter_samples())) == 5  # the samples are there while the result is held
        assert _temp_entries(private_tmp)
        if close:
            result.close()
        else:
            del result
            gc.collect()

    for close in (True, False):
        asyncio.run(go(close))
        assert _temp_entries(private_tmp) == []


def test_a_failed_run_removes_its_temp_folder(private_tmp: Path) -> None:
    cfg, target = _judged_rows_config(5, 2)

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": "bad key"}})

    async def go() -> None:
        async with _mock_client(handler) as http:
            await run_plan_async(
                build_plan(load_config(cfg), load_target(target)),
                RunOptions(cache=False, http_client=http, progress_bar=False),
            )

    with pytest.raises(EvaluationError, match="401"):
        asyncio.run(go())
    assert _temp_entries(private_tmp) == []


def test_a_cancelled_run_removes_its_temp_folder(private_tmp: Path) -> None:
    cfg, target = _judged_rows_config(50, 2)
    started = asyncio.Event()

    async def handler(req: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")

    async def go() -> None:
        async with _mock_client(handler) as http:
            task = asyncio.ensure_future(
                run_plan_async(
                    build_plan(load_config(cfg), load_target(target)),
                    RunOptions(cache=False, http_client=http, progress_bar=False),
                )
            )
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(go())
    assert _temp_entries(private_tmp) == []


def test_no_secret_reaches_the_spill_file(tmp_path: Path) -> None:
    cfg, target = _judged_rows_config(3, 1)
    secret = "header-secret-value-7781"
    cfg["tasks"]["t"]["metrics"]["judge"]["params"]["model"]["api_endpoint"]["headers"] = {"X-Key": secret}

    def handler(req: httpx.Request) -> httpx.Response:  # a provider that echoes the header in its error
        return httpx.Response(
            400, json={"error": {"message": f"header X-Key={req.headers['x-key']} refused"}}
        )

    async def go() -> Any:
        async with _mock_client(handler) as http:
            return await run_plan_async(
                build_plan(load_config(cfg), load_target(target)),
                RunOptions(cache=False, http_client=http, progress_bar=False, work_dir=tmp_path),
            )

    # Every judge call is refused, so nothing was measured: the run fails (and its line carries no
    # secret either); the caller's work folder keeps the spill file.
    with pytest.raises(EvaluationError, match="measured nothing") as info:
        asyncio.run(go())
    assert secret not in str(info.value)
    text = (tmp_path / "samples.jsonl").read_text()
    assert "refused" in text and secret not in text


# ---------------------------------------------------------------------------------- async API


def test_evaluate_async_and_the_sync_wrapper_work_inside_a_running_loop(
    mlflow_uri: str, judge_cache: Path
) -> None:
    """A notebook cell runs in the kernel's loop: ``evaluate`` must not call asyncio.run() there."""
    from mlflow_nemo_judge.testing.mock_llm import MockLLMServer

    with MockLLMServer() as srv:
        cfg, target = _judged_rows_config(4, 2)
        cfg["tasks"]["t"]["metrics"]["judge"]["params"]["model"]["api_endpoint"] = {
            "url": f"{srv.base_url}/chat/completions",
            "model_id": "mock/judge",
        }
        cfg["tasks"]["t"]["metrics"]["judge"]["params"]["template"]["messages"][0]["content"] = (
            "Rate this summary. Full Consult: {{ item.text }} Summary: {{ item.text }} "
            "Respond with RATING: <1-5>."
        )

        async def in_a_cell() -> tuple[Any, Any]:
            ev_async = await evaluate_async(
                cfg, target, experiment="nb", tracking_uri=mlflow_uri, progress_bar=False
            )
            ev_sync = evaluate(cfg, target, experiment="nb", tracking_uri=mlflow_uri, progress_bar=False)
            return ev_async, ev_sync

        ev_async, ev_sync = asyncio.run(in_a_cell())
    assert ev_async.run_ids and ev_sync.run_ids == ev_async.run_ids and ev_sync.reused == [True]
    assert ev_async.result.tasks["t"]["judge"]["quality"].stats.count == 4


def test_run_sync_runs_a_coroutine_with_or_without_a_loop() -> None:
    async def value() -> int:
        await asyncio.sleep(0)
        return 7

    async def nested() -> int:
        return run_sync(value())

    assert run_sync(value()) == 7
    assert asyncio.run(nested()) == 7


def test_memory_sink_sees_the_whole_lifecycle() -> None:
    cfg, target = _judged_rows_config(6, 2)

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=_chat(f"RATING: {1 + _row_number(req) % 5}"))

    async def go() -> MemorySink:
        async with _mock_client(handler) as http:
            backend = LocalBackend(cache=False, http_client=http, progress_bar=False)
            sink = MemorySink()
            await execute(backend, backend.prepare(load_config(cfg), load_target(target)), sink)
            return sink

    sink = asyncio.run(go())
    assert sink.state == "finished" and sink.result is not None
    # Records stream through in item order; the sink counts them (the spill file keeps them).
    assert sink.count == 6 and sink.last_record is not None and sink.last_record.item["n"] == 5
    assert [r.item["n"] for r in sink.result.iter_samples()] == list(range(6))
    assert sink.last_progress == ("t", 6, 6)
    assert sink.prepared is not None and sink.prepared.datasets[0].num_rows == 6


def test_memory_sink_records_a_failure() -> None:
    cfg, target = _judged_rows_config(2, 1)

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"error": "no"})

    async def go() -> MemorySink:
        async with _mock_client(handler) as http:
            backend = LocalBackend(cache=False, http_client=http, progress_bar=False)
            sink = MemorySink()
            with pytest.raises(EvaluationError):
                await execute(backend, backend.prepare(load_config(cfg), load_target(target)), sink)
            return sink

    sink = asyncio.run(go())
    assert sink.state == "failed" and isinstance(sink.error, EvaluationError) and sink.result is None


# ----------------------------------------------------------------------------------- groups


def test_a_group_pools_the_samples_of_its_tasks(tmp_path: Path) -> None:
    """A group's score is over every sample of its tasks, each weighted once (not a mean of means)."""
    cfg, target = _judged_rows_config(4, 2, tasks=("short", "long"))
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"n": i, "text": f"row text {i}"}) + "\n" for i in range(4)))
    cfg["tasks"]["short"]["dataset"] = {"files_url": str(rows), "limit": 2}
    cfg["tasks"]["long"]["dataset"] = {"files_url": str(rows)}
    cfg["groups"] = {"both": {"tasks": ["short", "long"]}}

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=_chat(f"RATING: {_row_number(req) + 1}"))

    async def go() -> Any:
        async with _mock_client(handler) as http:
            return await run_plan_async(
                build_plan(load_config(cfg), load_target(target)),
                RunOptions(cache=False, http_client=http, progress_bar=False),
            )

    result = asyncio.run(go())
    pooled = [1, 2] + [1, 2, 3, 4]  # short: rows 0-1; long: rows 0-3
    group = result.groups["both"]["judge"]["quality"]
    assert group.stats is not None and group.stats.count == len(pooled)
    assert group.value is not None and math.isclose(group.value, sum(pooled) / len(pooled))
    assert result.tasks["short"]["judge"]["quality"].value == 1.5
    assert result.tasks["long"]["judge"]["quality"].value == 2.5
    doc = result.to_nemo_dict()["groups"]["both"]["metrics"]["judge"]["scores"]["quality"]
    assert doc["value"] == group.value and doc["stats"]["count"] == len(pooled)


# ---------------------------------------------------------------------------- public surface


PUBLIC = {
    "__version__",
    "evaluate",
    "evaluate_async",
    "resume",
    "resume_async",
    "attach",
    "attach_async",
    "Evaluation",
    "run_local",
    "RunOptions",
    "load_config",
    "load_target",
    "EvalConfig",
    "Target",
    "EvalResult",
    "SampleRecord",
    "Score",
    "ScoreStats",
    "leaderboard",
    "paired",
    "gate",
    "NemoJudgeError",
    "ConfigError",
    "DatasetError",
    "EndpointError",
    "EvaluationError",
    "TrackingError",
    "MockLLMServer",
    "FakeNemoService",
}


def test_the_public_surface_is_pinned_and_every_name_resolves() -> None:
    assert set(pkg.__all__) == PUBLIC
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None
    with pytest.raises(AttributeError):
        _ = pkg.not_a_public_name  # type: ignore[attr-defined]


def test_run_local_is_untracked_and_loop_safe() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=_chat("RATING: 3"))

    async def in_a_cell() -> Any:
        return run_local(
            *_judged_rows_config(2, 1), cache=False, progress_bar=False, http_client=_mock_client(handler)
        )

    result = asyncio.run(in_a_cell())
    assert result.tasks["t"]["judge"]["quality"].value == 3.0
