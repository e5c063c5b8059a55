"""The embedded backend: this process renders, calls the endpoints, parses and aggregates."""

from __future__ import annotations

import dataclasses
from typing import Any

from mlflow_nemo_judge.backends.base import Prepared, RunEvents
from mlflow_nemo_judge.config import EvalConfig, Target
from mlflow_nemo_judge.data.scan import scan_plan
from mlflow_nemo_judge.engine import RunOptions, run_plan_async
from mlflow_nemo_judge.errors import EvaluationError
from mlflow_nemo_judge.plan import Plan, build_plan
from mlflow_nemo_judge.results import EvalResult
from mlflow_nemo_judge.tracking.names import DEFAULT_TABLE_MAX_ROWS


class LocalBackend:
    name = "local"

    def __init__(self, options: RunOptions | None = None, **kwargs: Any) -> None:
        self.options = options or RunOptions(**kwargs)

    def prepare(self, config: EvalConfig, target: Target) -> Prepared:
        """The plan, built once, and one pass over its data for counts, digests and the logged rows."""
        o = self.options
        plan = build_plan(
            config, target, limit=o.limit, parallelism=o.parallelism, judge_repeats=o.judge_repeats
        )
        # Rows are kept for an MLflow dataset input only up to the UI table's size; larger datasets are
        # recorded by digest and source.
        datasets = scan_plan(plan, max_rows=DEFAULT_TABLE_MAX_ROWS)
        return Prepared(config, target, datasets, plan.parallelism, payload=plan)

    async def run(self, prepared: Prepared, events: RunEvents) -> EvalResult:
        plan: Plan = prepared.payload
        totals = {d.task: d.num_rows for d in prepared.datasets if d.num_rows is not None}
        opts = self.options
        outer_progress, outer_record = opts.on_progress, opts.on_record

        def progress(task: str, done: int, total: int | None) -> None:
            for cb in (events.on_progress, outer_progress):
                if cb is not None:
                    cb(task, done, total)

        def record(rec: Any) -> None:
            for cb in (events.on_record, outer_record):
                if cb is not None:
                    cb(rec)

        opts = dataclasses.replace(opts, on_progress=progress, on_record=record, task_totals=totals)
        return await run_plan_async(plan, opts)

    async def attach(self, job_id: str, events: RunEvents) -> EvalResult:
        raise EvaluationError(f"the local backend runs no remote jobs; cannot attach to {job_id!r}")
