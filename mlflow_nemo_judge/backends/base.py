"""What every backend is: prepare once (validate, read the data for lineage), run, attach.

Both backends return the same ``EvalResult``, and both report through the same ``RunEvents``, so the
pipeline and the sinks never branch on the backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlflow_nemo_judge.config import EvalConfig, Target
from mlflow_nemo_judge.data.scan import DatasetInfo
from mlflow_nemo_judge.results import EvalResult, SampleRecord

# (task name, samples done, samples total or None)
ProgressCallback = Callable[[str, int, "int | None"], None]
JobCallback = Callable[[Mapping[str, Any]], None]
RecordCallback = Callable[[SampleRecord], None]


@dataclass
class RunEvents:
    """What a backend reports while it runs: each per-sample record (in item order, as it is written),
    progress, and (nemo) the remote job once it exists, so tracking records the job id before waiting."""

    on_record: RecordCallback | None = None
    on_progress: ProgressCallback | None = None
    on_job: JobCallback | None = None


@dataclass
class Prepared:
    """One target's evaluation, validated and ready: its lineage, and what the backend will execute."""

    config: EvalConfig
    target: Target
    datasets: list[DatasetInfo]
    parallelism: int | None  # the effective value the run uses (None: decided by the remote service)
    payload: Any = field(default=None, repr=False)  # the backend's own plan (local: plan.Plan)


class Backend(Protocol):
    """A way to execute evaluations. ``prepare`` makes no model call and creates nothing remotely."""

    name: str

    def prepare(self, config: EvalConfig, target: Target) -> Prepared:
        """Validate ``config`` × ``target`` (raising ``ConfigError`` naming the path) and describe its data."""
        ...

    async def run(self, prepared: Prepared, events: RunEvents) -> EvalResult:
        """Execute to completion; records stream to ``events.on_record``."""
        ...

    async def attach(self, job_id: str, events: RunEvents) -> EvalResult:
        """Wait for an existing remote job and return its results (local: there is nothing to attach)."""
        ...
