"""No MLflow store rejects what the package writes: every value within the column limits MLflow's own
SQLAlchemy models declare (PostgreSQL and MySQL enforce ``varchar(n)``; sqlite does not, which is why
this reads the stored values back and compares them with the models instead of trusting sqlite)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

TARGET_URL = "http://target.test:8000/v1/chat/completions"
JUDGE_URL = "http://judge.test:8000/v1/chat/completions"
LONG = 10_000

# Names near the limits the config validation allows: the metric key <task>/<metric>/<score>/nan_count
# stays within MLflow's 250 characters; everything derived from them must fit its column as well.
TASK = "t" * 80
METRIC = "m" * 80
SCORE = "s" * 60


def _chat(text: str) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5000, "completion_tokens": 2500, "total_tokens": 7500},
    }


def _handler(req: httpx.Request) -> httpx.Response:
    if req.url.host == "judge.test":
        return httpx.Response(200, json=_chat("why " * (LONG // 4) + "\nRATING: 4"))
    return httpx.Response(200, json=_chat("é" * LONG))  # a 10k-character output, not ASCII


def _long_config(data: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    metric = {
        "type": "llm-judge",
        "params": {
            "model": {"api_endpoint": {"url": JUDGE_URL, "model_id": "judge/" + "j" * 200}},
            "template": {
                "messages": [
                    {"role": "system", "content": "Judge. " * 2000},
                    {
                        "role": "user",
                        "content": "{{ item.content }} vs {{ item.reference }}: {{ sample.output_text }}",
                    },
                ]
            },
            "scores": {SCORE: {"type": "int", "parser": {"type": "regex", "pattern": "RATING: (\\d)"}}},
        },
    }
    cfg = {
        "type": "custom",
        "name": "n" * 240,
        "tasks": {
            TASK: {
                "type": "chat-completion",
                "params": {"template": {"messages": [{"role": "user", "content": "{{ item.content }}"}]}},
                "dataset": {"files_url": str(data)},
                "metrics": {METRIC: metric},
            }
        },
    }
    target = {
        "type": "model",
        "name": "target-" + "x" * 240,
        "model": {"api_endpoint": {"url": TARGET_URL, "model_id": "vendor/" + "y" * 240}},
    }
    return cfg, target


def _column_limits() -> dict[tuple[str, str], int]:
    """``(table, column) → n`` for every ``String(n)`` column of MLflow's tracking and registry stores."""
    import mlflow.store.model_registry.dbmodels.models  # noqa: F401  # registers the registry tables
    import mlflow.store.tracking.dbmodels.models  # noqa: F401
    from mlflow.store.db.base_sql_model import Base
    from sqlalchemy import String

    limits = {}
    for table in Base.metadata.sorted_tables:
        for col in table.columns:
            if isinstance(col.type, String) and col.type.length:
                limits[(table.name, col.name)] = int(col.type.length)
    return limits


def _violations(db: Path, limits: dict[tuple[str, str], int]) -> list[str]:
    import sqlite3

    out = []
    with sqlite3.connect(db) as con:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
        for (table, col), n in sorted(limits.items()):
            if table not in tables:
                continue
            (longest,) = con.execute(f'select max(length("{col}")) from "{table}"').fetchone()
            if longest is not None and longest > n:
                out.append(f"{table}.{col}: {longest} > {n}")
    return out


@pytest.mark.timeout(120)
def test_nothing_written_exceeds_mlflows_column_limits(mlflow_uri: str, tmp_path: Path) -> None:
    data = tmp_path / "long.jsonl"
    with open(data, "w", encoding="utf-8") as fh:
        for i in range(3):
            row = {"ID": f"{i}-" + "i" * 300, "content": "c" * LONG, "reference": "r" * LONG}
            fh.write(json.dumps(row) + "\n")
    cfg, target = _long_config(data)

    async def go() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(_handler)) as http:
            from mlflow_nemo_judge.pipeline import evaluate_async

            return await evaluate_async(
                cfg,
                target,
                experiment="limits",
                tracking_uri=mlflow_uri,
                cache=False,
                progress_bar=False,
                trace_samples=3,
                http_client=http,
            )

    ev = asyncio.run(go())
    from mlflow.tracking import MlflowClient

    cl = MlflowClient(tracking_uri=mlflow_uri)
    run = cl.get_run(ev.run_ids[0])
    assert run.info.status == "FINISHED" and run.data.tags["nemo_judge.traces"] == "3"
    traces = cl.search_traces(locations=[ev.experiment_id], run_id=ev.run_ids[0])
    assert len(traces) == 3  # so the previews, tags and assessments below were really written
    limits = _column_limits()
    assert ("trace_info", "request_preview") in limits  # the limit this test was written for
    assert _violations(Path(mlflow_uri.removeprefix("sqlite:///")), limits) == []


def test_the_scan_sees_an_over_long_value(mlflow_uri: str) -> None:
    """The check itself can fail: a 1001-character preview written through MLflow is reported."""
    import sqlite3

    import mlflow
    from mlflow.tracking import MlflowClient

    cl = MlflowClient(tracking_uri=mlflow_uri)
    span = cl.start_trace("x")
    cl.end_trace(span.trace_id, outputs="o" * 2000)
    mlflow.flush_trace_async_logging()

    db = Path(mlflow_uri.removeprefix("sqlite:///"))
    with sqlite3.connect(db) as con:
        con.execute("update trace_info set request_preview = ?", ("p" * 1001,))
    assert "trace_info.request_preview: 1001 > 1000" in _violations(db, _column_limits())
