"""The embedded backend: this process renders, calls the endpoints, parses and aggregates."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from mlflow_nemo_judge.config import EvalConfig, Target
from mlflow_nemo_judge.engine import ProgressCallback, RunOptions, run_plan_async
from mlflow_nemo_judge.plan import build_plan
from mlflow_nemo_judge.results import EvalResult


class LocalBackend:
    name = "local"

    def __init__(self, options: RunOptions | None = None, **kwargs: Any) -> None:
        self.options = options or RunOptions(**kwargs)

    def validate(self, config: EvalConfig, target: Target) -> None:
        build_plan(config, target, limit=self.options.limit, parallelism=self.options.parallelism)

    def run(
        self,
        config: EvalConfig,
        target: Target,
        *,
        progress: ProgressCallback | None = None,
        on_job: Any = None,
    ) -> EvalResult:
        plan = build_plan(config, target, limit=self.options.limit, parallelism=self.options.parallelism)
        opts = self.options
        if progress is not None:
            outer = opts.on_progress

            def both(task: str, done: int, total: int | None) -> None:
                progress(task, done, total)
                if outer is not None:
                    outer(task, done, total)

            opts = dataclasses.replace(opts, on_progress=both)
        return asyncio.run(run_plan_async(plan, opts))
